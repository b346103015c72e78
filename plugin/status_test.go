package plugin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestDaemonStatusRows(t *testing.T) {
	since := time.Now().Add(-90 * time.Second)
	resp := &isoobsv1.StatusResponse{
		Node: "node-a", Version: "v0.1.0", Kernel: "6.18.0", CgroupRoot: "/sys/fs/cgroup", CountingSince: timestamppb.New(since),
		Probes: []*isoobsv1.ProbeStatus{
			{Name: "dns_egress", Hook: "cgroup_skb/egress", Attached: true},
			{Name: "dns_ingress", Hook: "cgroup_skb/ingress", Attached: false, Error: "EPERM"},
		},
		Maps:      []*isoobsv1.MapStatus{{Name: "pod_stats", Entries: 10, MaxEntries: 1000}, {Name: "names", Entries: 750, MaxEntries: 1000}},
		Counters:  map[string]uint64{"probe_name_table_full": 3, "read_errors": 2, "ticks": 90},
		PodsKnown: 12, KubernetesConnected: true,
		Hubble: &isoobsv1.HubbleStatus{Enabled: true, Connected: true, FlowsPerSecond: 42, LostEvents: 7,
			SkippedFlows: map[string]uint64{"no_source_pod": 2, "no_l7_record": 1}},
	}
	st := daemonStatus("node-a", resp)
	if st.ProbesAttached != 1 || len(st.Probes) != 2 || st.Lost != 5 || st.Maps[1].Percent != 75 || !st.CountingSince.Equal(since.Truncate(0)) ||
		st.Hubble == nil || st.Hubble.LostEvents != 7 || st.Hubble.SkippedFlows != 3 {
		t.Errorf("status: %+v", st)
	}
	report := StatusReport{Daemons: []DaemonStatus{st, {Node: "node-b", Error: "port-forward to isoobs-system/isoobs-x: connection refused"}}}

	var table bytes.Buffer
	if err := report.Print(&table, "", false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", table.String())
	}
	for _, want := range []string{"node-a", "1/2", "90s ago", "75% names", " 5 ", "12", "connected", "42 flows/s", "probes detached"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "node-b") || !strings.Contains(lines[2], "missing: port-forward") {
		t.Errorf("missing row: %q", lines[2])
	}

	var js bytes.Buffer
	if err := report.Print(&js, "json", false); err != nil {
		t.Fatal(err)
	}
	var back StatusReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Daemons) != 2 || back.Daemons[0].Lost != 5 || back.Daemons[1].Error == "" {
		t.Errorf("json round trip: %+v", back)
	}
	var yml bytes.Buffer
	if err := report.Print(&yml, "yaml", false); err != nil || !strings.Contains(yml.String(), "probesAttached: 1") {
		t.Errorf("yaml: %v\n%s", err, yml.String())
	}

	// --no-headers: the same rows, no header row; -o wide adds VERSION, KERNEL, CGROUP-ROOT.
	var bare, wide bytes.Buffer
	if err := report.Print(&bare, "", true); err != nil {
		t.Fatal(err)
	}
	bl := strings.Split(strings.TrimSpace(bare.String()), "\n")
	if len(bl) != 2 || strings.Join(strings.Fields(bl[0]), " ") != strings.Join(strings.Fields(lines[1]), " ") {
		t.Errorf("--no-headers:\n%s\nwant the rows of:\n%s", bare.String(), table.String())
	}
	if err := report.Print(&wide, "wide", false); err != nil {
		t.Fatal(err)
	}
	last3 := func(l string) string { f := strings.Fields(l); return strings.Join(f[len(f)-3:], " ") }
	wl := strings.Split(strings.TrimSpace(wide.String()), "\n")
	if last3(wl[0]) != "VERSION KERNEL CGROUP-ROOT" || last3(wl[1]) != "v0.1.0 6.18.0 /sys/fs/cgroup" || last3(wl[2]) != "- - -" {
		t.Errorf("wide:\n%s", wide.String())
	}
}

func TestStatusFlagValidation(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "table"}, `invalid -o "table"`},
		{[]string{"--daemon-port", "70000"}, "--daemon-port 70000 is not a port"},
		{[]string{"--connect-timeout", "0s"}, "--connect-timeout 0s must be positive"},
		{[]string{"--server", "https://127.0.0.1:1"}, "cannot reach the Kubernetes API server"},
	} {
		_, _, err := runCmd(t, append([]string{"status"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("status %v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}
