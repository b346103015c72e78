package daemon

import "testing"

func TestZoneOf(t *testing.T) {
	for name, want := range map[string]string{
		"x1y2.crawl.jobs-app.example": "*.crawl.jobs-app.example",
		"api.example.com":             "*.example.com",
		"example.com":                 "",
		"localhost":                   "",
		"":                            "",
	} {
		if got := zoneOf(name); got != want {
			t.Errorf("zoneOf(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestNameSummaryZonesExactUnderUniqueFlood(t *testing.T) {
	s := newNameSummary(8)
	for i := range 10000 {
		s.Add(string(rune('a'+i%26))+itoa(uint64(i))+".crawl.example", 1, 1)
	}
	s.Add("api.svc.cluster.local", 5, 0)
	z := s.zones.Top(2)
	if len(z) != 2 || z[0].Name != "*.crawl.example" || z[0].Count != 10000 || z[0].Error != 0 || z[0].NXDomain != 10000 {
		t.Fatalf("top zones %+v, want *.crawl.example = 10000 exactly first", z)
	}
	if z[1].Name != "*.svc.cluster.local" || z[1].Count != 5 {
		t.Errorf("second zone %+v, want *.svc.cluster.local = 5", z[1])
	}
}
