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

func TestPrintTCPFrame(t *testing.T) {
	f := top.TCPFrame{GroupBy: top.GroupByPod, Rows: []top.TCPRow{{
		Namespace: "tenant-jobs", Pod: "crawler-1", Workload: "crawler", WorkloadKind: "Deployment", Node: "node-a",
		ConnectRefused: 40, ConnectFailuresPerSecond: 13.3, ResetsReceived: 2, RetransSegs: 5, SegsOut: 95,
		BytesOutPerSecond: 2048, RTTP50Ms: 0.25, RTTP99Ms: 1.5,
	}}}
	var out bytes.Buffer
	docs := 0
	if err := printTCPFrame(&out, f, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"NAMESPACE", "POD", "FAIL/S", "REFUSED", "RST-IN", "RETRANS%", "RTT-P99"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header lacks %s: %s", want, lines[0])
		}
	}
	for _, want := range []string{"tenant-jobs", "crawler-1", "deployment/crawler", "13.3", "40", "5.00", "2.0KiB", "1.50ms"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %s: %s", want, lines[1])
		}
	}
	out.Reset()
	if err := printTCPFrame(&out, f, printers.OutputJSON, false, &docs); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	row := decoded["rows"].([]any)[0].(map[string]any)
	if row["connectRefused"] != 40.0 || row["pod"] != "crawler-1" || row["rttP99Ms"] != 1.5 {
		t.Errorf("json row: %v", row)
	}
}

func TestTopTCPValidates(t *testing.T) {
	for _, args := range [][]string{{"--sort", "qps"}, {"--group-by", "qname"}, {"--daemon", "x:1", "--local"}} {
		var out, errOut bytes.Buffer
		cmd := NewCmdTopTCP(nil, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("top tcp %v: accepted", args)
		}
	}
}

func TestPrintDropFrame(t *testing.T) {
	f := top.DropFrame{GroupBy: top.GroupByPod, Rows: []top.DropRow{{Namespace: "shop", Pod: "api-1", Node: "node-a", Packets: 12, PacketsPerSecond: 4,
		Reasons: []top.DropReason{{Reason: "NETFILTER_DROP", Packets: 10}, {Reason: "NO_SOCKET", Packets: 2}}}},
		NoSocket: top.DropRow{Packets: 7, Reasons: []top.DropReason{{Reason: "NO_SOCKET", Packets: 7}}}}
	var out bytes.Buffer
	docs := 0
	if err := printDropFrame(&out, f, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DROPS/S", "REASONS", "api-1", "NETFILTER_DROP:10,NO_SOCKET:2", "(no socket, no pod's: 7 packets: NO_SOCKET:7)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
