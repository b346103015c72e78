package printers

import (
	"bytes"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/plugin/top"
)

func TestHubbleColumns(t *testing.T) {
	f := top.Frame{GroupBy: top.GroupByPod, Rows: []top.Row{
		{Namespace: "tenant-jobs", Pod: "crawler-1", Queries: 300, PolicyDenied: 12, Sources: []string{"ebpf", "hubble"}, Identity: 48213, ProxyLatencyP99Ms: 1.5},
		{Namespace: "tenant-jobs", Pod: "loader-1", Queries: 25, Sources: []string{"hubble"}},
		{Namespace: "tenant-jobs", Pod: "api-1", Queries: 7, Sources: []string{"ebpf"}},
	}}
	var narrow, wide bytes.Buffer
	if err := WriteTable(&narrow, f, false, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteTable(&wide, f, true, false); err != nil {
		t.Fatal(err)
	}
	head := strings.Fields(strings.SplitN(narrow.String(), "\n", 2)[0])
	if strings.Join(head, " ") != "NAMESPACE POD WORKLOAD NODE QPS QUERIES NXDOMAIN SERVFAIL DENIED TIMEOUTS P50 P99 TOP-NAMES" {
		t.Errorf("narrow header %v", head)
	}
	lines := strings.Split(wide.String(), "\n")
	wh := strings.Fields(lines[0])
	if n := len(wh); n < 4 || strings.Join(wh[n-4:], " ") != "SOURCES IDENTITY PROXY-P99 TOP-NAMES" {
		t.Errorf("wide header %v", wh)
	}
	if !strings.Contains(lines[1], "ebpf,hubble") || !strings.Contains(lines[1], "48213") || !strings.Contains(lines[1], "1.50ms") || !strings.Contains(lines[2], " hubble ") {
		t.Errorf("wide rows:\n%s", wide.String())
	}
	// Without Hubble data the table is unchanged.
	f.Rows = f.Rows[2:]
	f.Rows[0].Sources = []string{"ebpf"}
	var plain bytes.Buffer
	_ = WriteTable(&plain, f, false, false)
	if strings.Contains(plain.String(), "DENIED") {
		t.Errorf("eBPF-only table has Hubble columns:\n%s", plain.String())
	}
}
