package plugin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestTopDNSScopeFlagValidation(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "a(b"}, `invalid --name "a(b"`},
		{[]string{"--name", "(?=api)"}, "look-arounds and backreferences are not RE2"},
		{[]string{"--name", strings.Repeat("a", 513)}, "--name is 513 bytes; the daemons accept at most 512"},
		{[]string{"--zone", "a..b"}, `invalid --zone "a..b"`},
		{[]string{"--since", "-5m"}, "--since -5m0s is negative"},
		{[]string{"--since", "5m", "--duration", "10s"}, "--since and --duration conflict"},
		{[]string{"--since", "5m", "--zone", "example.com"}, "--since cannot be combined with --name/--zone"},
		{[]string{"--since", "5m", "--group-by", "qname"}, "--since cannot group by qname"},
		{[]string{"--zone", "example.com", "--once"}, "use --duration 10s to count matching names"},
	} {
		_, _, err := runCmd(t, append([]string{"top", "dns", "--daemon", ":1"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestTopDNSNameFilterReachesDaemons: --name/--zone go to every daemon in the request and the
// frame says what it was counted under (nameFilter, nameOverflow summed over nodes).
func TestTopDNSNameFilterReachesDaemons(t *testing.T) {
	frame := func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		return fakedaemon.Stamp(&isoobsv1.TopFrame{NameOverflow: 3, Rows: []*isoobsv1.DNSRow{{Namespace: "tenant-jobs", Pod: "crawler-1", PodUid: "u1", Queries: 40, Nxdomain: 40}}}, req, start, now)
	}
	a, b := &fakedaemon.Server{Node: "node-a", Frame: frame}, &fakedaemon.Server{Node: "node-b", Frame: frame}
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", fakedaemon.StartUnix(t, a)+","+fakedaemon.StartUnix(t, b),
		"--duration", "200ms", "-o", "json", "--interval", "100ms", "--name", `^x\d+\.`, "--zone", "crawl.example")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, srv := range []*fakedaemon.Server{a, b} {
		r := srv.Requests()[0]
		if r.GetNameRegex() != `^x\d+\.` || r.GetZone() != "crawl.example" || r.GetSince() != nil {
			t.Errorf("%s got %v", srv.Node, r)
		}
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatal(err)
	}
	if f.NameFilter == nil || f.NameFilter.Regex != `^x\d+\.` || f.NameFilter.Zone != "crawl.example" || f.NameOverflow != 6 || f.LookBackSeconds != 0 {
		t.Errorf("frame scope: filter %+v overflow %d look-back %v", f.NameFilter, f.NameOverflow, f.LookBackSeconds)
	}
	if !strings.Contains(out, `"nameFilter":{"regex":"^x\\d+\\.","zone":"crawl.example"}`) || strings.Contains(out, "firstSeen") {
		t.Errorf("json: %s", out)
	}
	if len(f.Rows) != 1 || f.Rows[0].Queries != 80 {
		t.Errorf("rows %+v", f.Rows)
	}
}

// TestTopDNSSinceMergesFirstLastSeen: --since asks each daemon for its history; one pod seen by
// two nodes' rows (a workload over nodes) is first seen at the earliest and last seen at the
// latest, in JSON and in the table's FIRST-SEEN/LAST-SEEN columns.
func TestTopDNSSinceMergesFirstLastSeen(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 22, 0, 0, 0, time.Local)
	frame := func(first, last time.Time) fakedaemon.FrameFunc {
		return func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
			return fakedaemon.Stamp(&isoobsv1.TopFrame{Rows: []*isoobsv1.DNSRow{{Namespace: "tenant-jobs", Workload: "crawler", WorkloadKind: "Deployment", Pods: 1,
				Queries: 9000, Responses: 9000, Nxdomain: 6000, FirstSeen: timestamppb.New(first), LastSeen: timestamppb.New(last)}}}, req, start, now)
		}
	}
	a := &fakedaemon.Server{Node: "node-a", Frame: frame(t0.Add(100*time.Second), t0.Add(300*time.Second))}
	b := &fakedaemon.Server{Node: "node-b", Frame: frame(t0.Add(50*time.Second), t0.Add(200*time.Second))}
	addrs := fakedaemon.StartUnix(t, a) + "," + fakedaemon.StartUnix(t, b)
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", addrs, "--once", "-o", "json", "--interval", "100ms", "--since", "15m", "--group-by", "workload")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if r := a.Requests()[0]; r.GetSince().AsDuration() != 15*time.Minute || r.GetSinceStreamStart() {
		t.Errorf("request %v", r)
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatal(err)
	}
	if f.LookBackSeconds != 900 || len(f.Rows) != 1 {
		t.Fatalf("frame: look-back %v rows %+v", f.LookBackSeconds, f.Rows)
	}
	r := f.Rows[0]
	if r.Queries != 18000 || r.FirstSeen == nil || !r.FirstSeen.Equal(t0.Add(50*time.Second)) || !r.LastSeen.Equal(t0.Add(300*time.Second)) {
		t.Errorf("merged row: %d queries seen %v..%v, want 18000 from 22:00:50 to 22:05:00", r.Queries, r.FirstSeen, r.LastSeen)
	}
	out, errOut, err = runCmd(t, "top", "dns", "--daemon", addrs, "--once", "--interval", "100ms", "--since", "15m", "--group-by", "workload")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "FIRST-SEEN") || !strings.Contains(lines[1], "22:00:50") || !strings.Contains(lines[1], "22:05:00") {
		t.Errorf("table:\n%s", out)
	}
}

func TestLiveGroupsAndRegroup(t *testing.T) {
	if g := liveGroups(true, false); strings.Join(g, ",") != "pod,workload,namespace,node" {
		t.Errorf("look-back groups %v: qname has no history", g)
	}
	if g := liveGroups(false, true); strings.Join(g, ",") != "pod,workload,namespace,qname,node" {
		t.Errorf("live groupings under a name filter = %v, want no server", g)
	}
	if g := liveGroups(false, false); len(g) != len(top.GroupBys) {
		t.Errorf("groups %v", g)
	}
	req := &isoobsv1.TopRequest{GroupBy: isoobsv1.GroupBy_GROUP_BY_POD, Zone: "example.com"}
	opts := regrouped(top.StreamOptions{Request: req, Merge: top.MergeOptions{GroupBy: top.GroupByPod}}, top.GroupByNamespace)
	if opts.Request.GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_NAMESPACE || opts.Merge.GroupBy != top.GroupByNamespace || opts.Request.GetZone() != "example.com" {
		t.Errorf("regrouped: %v %q", opts.Request, opts.Merge.GroupBy)
	}
	if req.GetGroupBy() != isoobsv1.GroupBy_GROUP_BY_POD {
		t.Error("regrouped changed the request the other streams share")
	}
}
