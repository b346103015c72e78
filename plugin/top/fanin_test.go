package top

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// nodeFrame is a frame from node with one pod row of queries.
func nodeFrame(node string, queries uint64) *isoobsv1.TopFrame {
	return &isoobsv1.TopFrame{Node: node, Rows: []*isoobsv1.DNSRow{{
		Namespace: "ns", Pod: "pod-" + node, PodUid: "uid-" + node, Workload: "w-" + node, Queries: queries, Responses: queries,
	}}}
}

func queriesOf(f Frame) uint64 {
	var n uint64
	for _, r := range f.Rows {
		n += r.Queries
	}
	return n
}

// The fan-in's rules, event by event: a merge is due when every live source
// is fresh; a clean close keeps the last frame; a failure drops the source,
// names it missing and is the first error.
func TestFanInRules(t *testing.T) {
	sources := []Source{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	f := newFanIn(sources, StreamOptions{Missing: []MissingNode{{Node: "d", Reason: "no daemon"}}})

	if f.add(0, nodeFrame("a", 10)) || f.add(1, nodeFrame("b", 20)) {
		t.Fatal("merge due before every source sent a frame")
	}
	if !f.add(2, nodeFrame("c", 30)) {
		t.Fatal("merge not due after every source sent a frame")
	}
	m, ok := f.merge()
	if !ok || queriesOf(m) != 60 {
		t.Fatalf("merge = %d queries (ok %v), want 60", queriesOf(m), ok)
	}
	if len(m.MissingNodes) != 1 || m.MissingNodes[0].Node != "d" || !strings.Contains(strings.Join(m.Warnings, "\n"), "node d left out: no daemon") {
		t.Fatalf("missing %v, warnings %q: want node d listed", m.MissingNodes, m.Warnings)
	}
	if f.anyFresh() {
		t.Fatal("sources still fresh after a merge")
	}

	// a closes cleanly: its last frame stays in; the merge waits for b and c.
	if f.end(0, io.EOF) {
		t.Fatal("merge due after a clean close with nothing fresh")
	}
	f.add(1, nodeFrame("b", 25))
	// c fails: it is dropped, so b alone being fresh makes a merge due.
	if !f.end(2, status.Error(codes.Unavailable, "connection refused")) {
		t.Fatal("merge not due after the only lagging source failed")
	}
	m, _ = f.merge()
	if got := queriesOf(m); got != 35 {
		t.Fatalf("merge after c failed = %d queries, want 35 (a's last 10 + b's 25)", got)
	}
	if len(m.MissingNodes) != 2 || m.MissingNodes[1].Node != "c" {
		t.Fatalf("missing nodes %v, want d and c", m.MissingNodes)
	}
	if status.Code(f.firstErr) != codes.Unavailable || !strings.Contains(f.firstErr.Error(), "cannot reach the isoobs daemon at c") {
		t.Fatalf("first error %v: want c's Unavailable, explained", f.firstErr)
	}
	if f.done() {
		t.Fatal("done with b still streaming")
	}
	if f.end(1, errors.New("reset")) || !f.done() {
		t.Fatalf("after b failed with nothing fresh: want no merge due and done")
	}
	if _, ok := f.merge(); !ok {
		t.Fatal("a's cleanly closed frame should still merge")
	}
}

// A daemon that sends raw control bytes in a name (an older or a forged one) does not reach the
// terminal with them: names are escaped when frames are merged.
func TestMergeEscapesNames(t *testing.T) {
	f := nodeFrame("a", 1)
	f.Rows[0].TopNames = []*isoobsv1.NameCount{{Name: "x\x1b[2J\nforged row.example", Queries: 1}}
	m := Merge([]*isoobsv1.TopFrame{f}, MergeOptions{GroupBy: GroupByPod, TopNames: 3})
	if len(m.Rows) != 1 || len(m.Rows[0].TopNames) != 1 || m.Rows[0].TopNames[0].Name != `x\027[2J\010forged\032row.example` {
		t.Fatalf("rows %+v", m.Rows)
	}
}

// A node whose stream stays open but sends nothing for three intervals is stale: its last
// numbers leave the merge (they are not current) and the frame names it; a new frame brings it back.
func TestFanInMarksStalledNodesStale(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := newFanIn([]Source{{Name: "a"}, {Name: "b"}}, StreamOptions{})
	f.staleAfter, f.now = 3*time.Second, func() time.Time { return now }
	f.add(0, nodeFrame("a", 10))
	f.add(1, nodeFrame("b", 20))
	if m, _ := f.merge(); queriesOf(m) != 30 || len(m.StaleNodes) != 0 {
		t.Fatalf("first merge: %d queries, stale %v", queriesOf(m), m.StaleNodes)
	}
	for s := 1; s <= 4; s++ { // b stalls; a goes on
		now = now.Add(time.Second)
		f.add(0, nodeFrame("a", uint64(10+s)))
		m, _ := f.merge()
		wantStale := s > 3
		if got := len(m.StaleNodes) == 1 && m.StaleNodes[0].Node == "b"; got != wantStale {
			t.Fatalf("after %d s: stale %v, want b stale %v", s, m.StaleNodes, wantStale)
		}
		if want := uint64(10 + s + 20); wantStale {
			if queriesOf(m) != uint64(10+s) || !strings.Contains(strings.Join(m.Warnings, "\n"), "b: no frame for 4s (stream stalled)") {
				t.Fatalf("after %d s: %d queries, warnings %q: want b's rows out and a warning", s, queriesOf(m), m.Warnings)
			}
		} else if queriesOf(m) != want {
			t.Fatalf("after %d s: %d queries, want %d", s, queriesOf(m), want)
		}
	}
	f.add(1, nodeFrame("b", 40))
	if m, _ := f.merge(); len(m.StaleNodes) != 0 || queriesOf(m) != 54 {
		t.Fatalf("b back: stale %v, %d queries", m.StaleNodes, queriesOf(m))
	}
}
