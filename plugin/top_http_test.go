package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
)

func TestPrintHTTPFrame(t *testing.T) {
	f := top.HTTPFrame{GroupBy: top.GroupByPod, Side: "server", Rows: []top.HTTPRow{{
		Namespace: "tenant-jobs", Pod: "coreapi-1", Workload: "coreapi", WorkloadKind: "Deployment", Node: "node-a",
		Requests: 1000, Responses: 1000, Status4xx: 74, Status5xx: 37, RequestsPerSecond: 250, LatencyP50Ms: 18.66, LatencyP95Ms: 35.3, LatencyP99Ms: 123.4,
		Paths:      []top.HTTPPath{{Method: "GET", Path: "/applicants/{id}", Requests: 500, Status5xx: 37}, {Method: "POST", Path: "/applicants", Requests: 400, Status4xx: 74}, {Method: "GET", Path: "/jobs", Requests: 90}},
		PathsOther: top.HTTPPath{Method: "*", Path: "other", Requests: 10},
	}}}
	var out bytes.Buffer
	docs := 0
	if err := printHTTPFrame(&out, f, printers.OutputTable, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"NAMESPACE", "POD", "REQ/S", "4XX", "5XX", "5XX%", "P50", "P95", "P99", "TOP-PATHS"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header lacks %s: %s", want, lines[0])
		}
	}
	for _, want := range []string{"coreapi-1", "deployment/coreapi", "250.0", "1000", "74", "37", "3.7", "18.66ms", "35.30ms", "123ms",
		"GET /applicants/{id}:500/5xx37,POST /applicants:400/4xx74,..."} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %s: %s", want, lines[1])
		}
	}
	out.Reset()
	if err := printHTTPFrame(&out, f, printers.OutputWide, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "GET /jobs:90,* other:10") || !strings.Contains(out.String(), "SEEN-AT") {
		t.Errorf("wide:\n%s", out.String())
	}
	out.Reset()
	if err := printHTTPFrame(&out, f, printers.OutputJSON, false, 2, &docs); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	row := decoded["rows"].([]any)[0].(map[string]any)
	if row["status5xx"] != 37.0 || row["pod"] != "coreapi-1" || row["latencyP95Ms"] != 35.3 || len(row["paths"].([]any)) != 3 || decoded["side"] != "server" {
		t.Errorf("json: %v", decoded)
	}
	out.Reset()
	if err := printHTTPFrame(&out, top.HTTPFrame{GroupBy: top.GroupByService}, printers.OutputTable, false, 3, &docs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SERVICE") || !strings.Contains(out.String(), "only pods a CiliumNetworkPolicy with http rules selects") {
		t.Errorf("empty by service:\n%s", out.String())
	}
}

func TestL7Warnings(t *testing.T) {
	w := l7Warnings([]top.L7Namespace{
		{Namespace: "tenant-blind", Pods: 3},
		{Namespace: "tenant-jobs", Pods: 4, VisiblePods: 3, Policies: []string{"tenant-jobs/coreapi-l7"}, UnseenGroups: []string{"crawler"}},
		{Namespace: "empty"},
		{Namespace: "shop", Pods: 2, VisiblePods: 2},
	})
	if len(w) != 2 || !strings.HasPrefix(w[0], "namespace tenant-jobs: 3 of 4 pods are under an L7 HTTP policy (tenant-jobs/coreapi-l7)") ||
		!strings.HasPrefix(w[1], "namespace tenant-blind has no L7 HTTP visibility") {
		t.Errorf("%q", w)
	}
}

func TestTopHTTPValidates(t *testing.T) {
	for _, args := range [][]string{{"--sort", "qps"}, {"--group-by", "qname"}, {"--daemon", "x:1", "--local"}, {"--paths", "-1"}, {"--hubble-server", "unix:///x"}, {"--local", "--hubble-server", "off"}} {
		var out, errOut bytes.Buffer
		cmd := NewCmdTopHTTP(nil, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("top http %v: accepted", args)
		}
	}
}
