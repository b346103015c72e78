//go:build linux

package plugin

import (
	"math/rand/v2"
	"testing"

	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/plugin/top"
)

// The client recomputes p50/p99 from merged histograms; for one node it must
// print exactly what that node's daemon computed.
func TestClientPercentilesMatchDaemon(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		h := make([]uint64, 1+rng.IntN(24))
		for b := range h {
			if rng.IntN(3) == 0 {
				h[b] = uint64(rng.IntN(5000))
			}
		}
		if i%50 == 0 {
			h[0] = uint64(rng.IntN(3)) // sub-microsecond bucket, tiny totals
		}
		for _, q := range []float64{0.5, 0.99, 0.001, 1} {
			if got, want := top.PercentileLog2UsToMs(h, q), daemon.Quantile(h, q); got != want {
				t.Fatalf("hist %v q %v: client %v, daemon %v", h, q, got, want)
			}
		}
	}
}
