package printers

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/top"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sampleFrame() top.Frame {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	crawler := top.Row{
		Node: "node-a", Namespace: "tenant-jobs", Pod: "crawler-7d9f-x2k", PodUID: "5f0c1e9a-1111-2222-3333-444455556666",
		Workload: "crawler", WorkloadKind: "Deployment", Cgroup: "/kubepods.slice/kubepods-pod5f0c1e9a.slice", CgroupID: 4242, Pods: 1,
		Queries: 12000, QPS: 1200.5, Responses: 11990, ResponsesPerSecond: 1199, NoError: 1000, NXDomain: 10900, ServFail: 80, Refused: 10,
		Malformed: 3, Timeouts: 10, TimeoutsRate: 1, Evicted: 2, LatencyP50Ms: 1.2345, LatencyP99Ms: 48.75,
		TopNames:      []top.NameCount{{Name: "jobs-1.example.com", Queries: 6000, NXDomain: 5990}, {Name: "jobs-2.example.com", Queries: 4000, NXDomain: 3990, Error: 12}},
		QueriesByType: map[string]uint64{"A": 7000, "AAAA": 5000}, BytesOut: 480000, BytesIn: 960000,
		Labels: map[string]string{"app": "crawler"},
	}
	coreapi := top.Row{
		Node: "node-b", Namespace: "tenant-jobs", Pod: "coreapi-5c6b-9zq", PodUID: "77aa", Workload: "coreapi", WorkloadKind: "Deployment",
		Cgroup: "/kubepods.slice/kubepods-pod77aa.slice", CgroupID: 77, Pods: 1,
		Queries: 40, QPS: 4, Responses: 40, ResponsesPerSecond: 4, NoError: 40, LatencyP50Ms: 0.5, LatencyP99Ms: 1500,
		Unsolicited: 500, // someone forging answers at it
		TopNames:    []top.NameCount{{Name: "kafka.tenant-jobs.svc.cluster.local", Queries: 40}}, QueriesByType: map[string]uint64{"A": 40},
	}
	nameless := top.Row{Node: "node-a", PodUID: "9d1c", Cgroup: "/kubepods/besteffort/pod9d1c", Pods: 1, Queries: 3, QPS: 0.3, TopNames: []top.NameCount{}, QueriesByType: map[string]uint64{}}
	unresolved := top.Row{Node: "node-a", Cgroup: "/system.slice/cron.service", CgroupID: 9, Queries: 2, QPS: 0, TopNames: []top.NameCount{}, QueriesByType: map[string]uint64{}}
	return top.Frame{
		Time: t0.Add(10 * time.Second), Since: t0, IntervalSeconds: 1, Nodes: []string{"node-a", "node-b"},
		GroupBy: top.GroupByPod, Sort: top.SortQPS,
		Rows:      []top.Row{crawler, coreapi, nameless, unresolved},
		Total:     top.Row{Node: "node-a,node-b", Pods: 2, Queries: 12042, QPS: 1204.5, Responses: 12030, NoError: 1040, NXDomain: 10900, ServFail: 80, Refused: 10, Malformed: 3, TopNames: []top.NameCount{}, QueriesByType: map[string]uint64{}},
		TopNames:  []top.NameCount{{Name: "jobs-1.example.com", Queries: 6000, NXDomain: 5990}},
		Truncated: 0, Warnings: []string{},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./plugin/printers -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestNDJSONGolden(t *testing.T) {
	f := sampleFrame()
	second := f
	second.Time = f.Time.Add(time.Second)
	second.Rows = f.Rows[:1]
	second.Truncated = 2
	second.Warnings = []string{"node-b: daemon closed the stream"}
	var buf bytes.Buffer
	p := New(OutputJSON)
	for _, fr := range []top.Frame{f, second} {
		if err := p.PrintFrame(fr, &buf); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "frames.ndjson", buf.Bytes())

	// One JSON object per line, each row with the documented keys.
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d", len(lines))
	}
	required := []string{"node", "namespace", "pod", "podUID", "workload", "cgroup", "queries", "qps", "responses", "noerror",
		"nxdomain", "servfail", "refused", "malformed", "latencyP50Ms", "latencyP99Ms", "topNames"}
	for i, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not one JSON object: %v", i, err)
		}
		rows, ok := obj["rows"].([]any)
		if !ok || len(rows) == 0 {
			t.Fatalf("line %d: no rows array", i)
		}
		for _, r := range rows {
			row := r.(map[string]any)
			for _, k := range required {
				if _, ok := row[k]; !ok {
					t.Errorf("line %d: row lacks %q", i, k)
				}
			}
			for _, n := range row["topNames"].([]any) {
				nc := n.(map[string]any)
				for _, k := range []string{"name", "queries", "nxdomain"} {
					if _, ok := nc[k]; !ok {
						t.Errorf("line %d: topNames entry lacks %q", i, k)
					}
				}
			}
		}
	}
}

func TestYAMLDocumentsRoundTrip(t *testing.T) {
	f := sampleFrame()
	var buf bytes.Buffer
	p := New(OutputYAML)
	for range 2 {
		if err := p.PrintFrame(f, &buf); err != nil {
			t.Fatal(err)
		}
	}
	docs := strings.Split(buf.String(), "---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 YAML documents, got %d", len(docs))
	}
	var back top.Frame
	if err := yaml.Unmarshal([]byte(docs[1]), &back); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(f)
	got, _ := json.Marshal(back)
	if !bytes.Equal(want, got) {
		t.Errorf("YAML round trip changed the frame:\n%s\n%s", got, want)
	}
	if !strings.Contains(docs[0], "latencyP99Ms: 48.75") || !strings.Contains(docs[0], "podUID: 5f0c1e9a-1111-2222-3333-444455556666") {
		t.Errorf("YAML lacks camelCase keys:\n%s", docs[0])
	}
}

func TestTableGolden(t *testing.T) {
	f := sampleFrame()
	workloads := f
	workloads.GroupBy = top.GroupByWorkload
	workloads.Rows = []top.Row{f.Rows[0], f.Rows[1]}
	workloads.Rows[0].Pod, workloads.Rows[0].Pods, workloads.Rows[0].Node = "", 3, "node-a,node-b"
	workloads.Truncated = 4
	qnames := f
	qnames.GroupBy = top.GroupByQName
	qnames.Rows = []top.Row{{QName: "jobs-1.example.com", Node: "node-a", Pods: 1, Queries: 6000, QPS: 600, Responses: 6000, NXDomain: 5990, LatencyP50Ms: 12, LatencyP99Ms: 20}}

	var buf bytes.Buffer
	for _, c := range []struct {
		title string
		frame top.Frame
		wide  bool
	}{{"pods", f, false}, {"pods wide", f, true}, {"workloads", workloads, false}, {"qnames wide", qnames, true}} {
		buf.WriteString("== " + c.title + "\n")
		if err := WriteTable(&buf, c.frame, c.wide, false); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "tables.txt", buf.Bytes())
}

func TestTablePrinterSeparatesFramesAndHandlesEmpty(t *testing.T) {
	f := sampleFrame()
	empty := f
	empty.Rows = nil
	var buf bytes.Buffer
	p := New(OutputTable)
	for _, fr := range []top.Frame{f, empty} {
		if err := p.PrintFrame(fr, &buf); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.String()
	if strings.Count(out, "NAMESPACE") != 1 || !strings.Contains(out, "\n\nNo DNS queries seen since ") {
		t.Errorf("frames must be separated by a blank line, an empty frame says so:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	// Columns line up: every value starts under its header.
	header := lines[0]
	qpsCol := strings.Index(header, "QPS")
	for _, l := range lines[1:5] {
		if !strings.HasPrefix(l[qpsCol-1:], " ") || l[qpsCol] == ' ' {
			t.Errorf("QPS column misaligned in %q", l)
		}
	}
}

func TestParseOutput(t *testing.T) {
	for in, want := range map[string]string{"": OutputTable, "wide": OutputWide, "JSON": OutputJSON, "yaml": OutputYAML} {
		if got, err := ParseOutput(in); err != nil || got != want {
			t.Errorf("ParseOutput(%q) = %q, %v", in, got, err)
		}
	}
	_, err := ParseOutput("jsonpath={.rows}")
	if err == nil || !strings.Contains(err.Error(), "wide, json, yaml") {
		t.Errorf("bad -o must list the formats: %v", err)
	}
}

func TestQTypesOrder(t *testing.T) {
	got := qtypes(map[string]uint64{"TXT": 1, "A": 5, "AAAA": 5, "SRV": 2})
	if got != "A:5,AAAA:5,SRV:2,TXT:1" {
		t.Errorf("qtypes = %q", got)
	}
	keys := []string{}
	for _, c := range columns(top.GroupByPod, true) {
		keys = append(keys, c.Header)
	}
	if !reflect.DeepEqual(keys[:4], []string{"NAMESPACE", "POD", "WORKLOAD", "NODE"}) {
		t.Errorf("wide pod columns: %v", keys)
	}
}

func TestTableShowsServedQueriesOfDNSServers(t *testing.T) {
	f := top.Frame{GroupBy: top.GroupByPod, Rows: []top.Row{
		{Namespace: "tenant-jobs", Pod: "crawler-1", Queries: 9000, QPS: 3000},
		{Namespace: "kube-system", Pod: "coredns-1", ServedQueries: 9015},
	}}
	var b strings.Builder
	if err := WriteTable(&b, f, false, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "SERVFAIL   SERVED") || !strings.Contains(lines[2], "9015") {
		t.Errorf("want a SERVED column after SERVFAIL with CoreDNS's 9015:\n%s", b.String())
	}
	b.Reset()
	f.Rows = f.Rows[:1]
	if err := WriteTable(&b, f, false, false); err != nil || strings.Contains(b.String(), "SERVED") {
		t.Errorf("no DNS server in the frame: no SERVED column (err %v):\n%s", err, b.String())
	}
}
