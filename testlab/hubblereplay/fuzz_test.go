package hubblereplay_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/hubble"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// FuzzReadExport: any input is read without panicking, every non-empty line is either an event
// or counted as skipped, and whatever parses folds into the aggregator without panicking.
func FuzzReadExport(f *testing.F) {
	var seed bytes.Buffer
	_ = hubblereplay.MarshalExport(&seed, sampleEvents("n1", time.Unix(1_800_000_000, 0)))
	f.Add(seed.String())
	f.Add(`{"flow":{"verdict":"DROPPED","Type":"L7","l7":{"type":"RESPONSE"}}}`)
	f.Add(`{"flow":{"verdict":99,"source":{},"destination":{"pod_name":"x"},"l7":{"type":"REQUEST","dns":{}}}}`)
	f.Add(`{"lost_events":{"num_events_lost":"18446744073709551615"}}` + "\n{")
	f.Fuzz(func(t *testing.T, in string) {
		evs, st, err := hubblereplay.ReadExport(strings.NewReader(in))
		if err != nil {
			return // a line over the scanner's limit
		}
		if st.Events != len(evs) || st.Events+st.Skipped != st.Lines {
			t.Fatalf("stats %+v for %d events", st, len(evs))
		}
		a := hubble.NewAggregator(hubble.AggregatorConfig{MaxPods: 4, MaxPendingNames: 4})
		for _, ev := range evs {
			if fl := ev.GetFlow(); fl != nil {
				a.Observe(fl)
			}
			a.ObserveLost(ev.GetLostEvents())
		}
		c := a.Counters()
		if c.Flows != uint64(len(evs))-uint64(countNonFlows(evs)) {
			t.Fatalf("flows %d of %d events", c.Flows, len(evs))
		}
	})
}

func countNonFlows(evs []*observerpb.GetFlowsResponse) int {
	n := 0
	for _, ev := range evs {
		if ev.GetFlow() == nil {
			n++
		}
	}
	return n
}
