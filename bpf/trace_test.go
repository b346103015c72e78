package bpf

import (
	"testing"
	"time"
)

// A traced pod's queries and answers reach the trace reader with their name, kind, rcode and
// latency; nothing is sent while it is not traced; 1 in 2^k picks exactly the queries whose
// key hash has bits 40..40+k-1 clear, with their answers.
func TestDNSTrace(t *testing.T) {
	r := newTestRunnerOpts(t, Options{TimeEveryQuery: true})
	rd, err := r.p.OpenTrace()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	events := make(chan TraceEvent, 1024)
	go func() {
		for {
			ev, err := rd.Read()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	next := func() TraceEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no trace event")
		}
		return TraceEvent{}
	}
	none := func(what string) {
		t.Helper()
		select {
		case ev := <-events:
			t.Errorf("%s: unexpected event %+v", what, ev)
		case <-time.After(100 * time.Millisecond):
		}
	}

	r.run(true, clientQuery(1))
	r.run(false, serverAnswer(1, 0x8180))
	none("not traced")

	if err := r.p.SetTraced(map[uint64]uint8{r.id: 0}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.run(true, clientQuery(2))
	r.run(false, serverAnswer(2, 0x8183))
	r.run(false, serverAnswer(999, 0x8183)) // nobody asked
	q, a, u := next(), next(), next()
	if q.Kind != TraceQuery || q.Name != "t.example" || q.QType != 1 || q.DNSID != 2 || q.Server.String() != serverV4.String()+":53" || q.ClientPort != 40000 || q.CgroupID != r.id {
		t.Errorf("query event %+v", q)
	}
	if a.Kind != TraceAnswer || a.RCode != 3 || a.Latency <= 0 || a.Latency > time.Second || a.Name != "t.example" {
		t.Errorf("answer event %+v", a)
	}
	if u.Kind != TraceUnsolicited || u.DNSID != 999 {
		t.Errorf("forged answer event %+v", u)
	}
	if d := q.Time.Sub(start); d < -time.Second || d > 5*time.Second {
		t.Errorf("query event time %v is %v from when it was sent", q.Time, d)
	}

	const shift, n = 2, 200
	if err := r.p.SetTraced(map[uint64]uint8{r.id: shift}); err != nil {
		t.Fatal(err)
	}
	var want int
	for id := uint16(100); id < 100+n; id++ {
		if (inflightFingerprint(clientV4, serverV4, 40000, 53, id)>>40)&(1<<shift-1) == 0 {
			want++
		}
		r.run(true, clientQuery(id))
		r.run(false, serverAnswer(id, 0x8180))
	}
	for i := 0; i < 2*want; i++ {
		ev := next()
		if (inflightFingerprint(clientV4, serverV4, 40000, 53, ev.DNSID)>>40)&(1<<shift-1) != 0 {
			t.Errorf("id %d traced, not in the 1-in-4 subset", ev.DNSID)
		}
	}
	none("after the 1-in-4 subset")
	t.Logf("1 in 4: %d of %d queries traced with their answers", want, n)

	if err := r.p.SetTraced(nil); err != nil {
		t.Fatal(err)
	}
	r.run(true, clientQuery(3))
	none("tracing stopped")
	if st, err := r.p.Stats(); err != nil || st.TraceLost != 0 {
		t.Errorf("lost %d, %v", st.TraceLost, err)
	}
}
