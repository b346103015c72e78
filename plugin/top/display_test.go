package top

import (
	"reflect"
	"testing"
)

func TestDisplayNames(t *testing.T) {
	flood := Row{Queries: 8790,
		TopNames: []NameCount{{Name: "a1.crawl.example", Queries: 138, Error: 137}, {Name: "b2.crawl.example", Queries: 138, Error: 137}},
		TopZones: []NameCount{{Name: "*.crawl.example", Queries: 8790, NXDomain: 8790}}}
	if got, want := DisplayNames(&flood), []NameCount{{Name: "*.crawl.example", Queries: 8790, NXDomain: 8790}}; !reflect.DeepEqual(got, want) {
		t.Errorf("flood: %+v, want only the wildcard %+v", got, want)
	}
	normal := Row{Queries: 25,
		TopNames: []NameCount{{Name: "recruiter.tenant-jobs.svc.cluster.local", Queries: 5}, {Name: "coreapi.tenant-jobs.svc.cluster.local", Queries: 4}},
		TopZones: []NameCount{{Name: "*.tenant-jobs.svc.cluster.local", Queries: 25}}}
	if got := DisplayNames(&normal); !reflect.DeepEqual(got, normal.TopNames) {
		t.Errorf("normal traffic: %+v, want the exact names %+v", got, normal.TopNames)
	}
}
