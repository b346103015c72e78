package hubble_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/isoobs/isoobs/hubble"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// BenchmarkAggregatorObserve measures the cost per flow of the mix the daemon subscribes to
// (DNS request/response pairs over 200 pods and 1000 names, some drops): a busy node's Hubble
// sends a few thousand such flows per second.
func BenchmarkAggregatorObserve(b *testing.B) {
	var flows []*flowpb.Flow
	for i := range 2000 {
		p := crawler
		p.Name = fmt.Sprintf("crawler-%d", i%200)
		flows = append(flows, hubblereplay.DNSExchange{Client: p, Server: coredns, Query: fmt.Sprintf("n%d.example.com.", i%1000), Latency: time.Millisecond}.Flows()...)
		if i%20 == 0 {
			flows = append(flows, hubblereplay.Drop("n1", time.Now(), p, coreapi, "TCP", 80, flowpb.DropReason_POLICY_DENIED))
		}
	}
	a := hubble.NewAggregator(hubble.AggregatorConfig{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		a.Observe(flows[i%len(flows)])
		if i%10000 == 9999 {
			a.DrainNames(func(hubble.PodKey, string, uint64, uint64) {})
		}
	}
}
