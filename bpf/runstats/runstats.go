// Package runstats reads the kernel's per-program run statistics (bpf_stats), which cost
// measurements subtract and compare; nothing in the daemon's hot path uses it.
package runstats

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Stats are programs' cumulative run statistics, counted only while Enable is in effect.
type Stats struct {
	Runtime time.Duration
	Runs    uint64
}

// Sub returns s - o, the statistics between two reads.
func (s Stats) Sub(o Stats) Stats {
	return Stats{Runtime: s.Runtime - o.Runtime, Runs: s.Runs - o.Runs}
}

// NsPerRun is the mean run time of one program run in nanoseconds.
func (s Stats) NsPerRun() float64 {
	if s.Runs == 0 {
		return 0
	}
	return float64(s.Runtime.Nanoseconds()) / float64(s.Runs)
}

// Enable switches on the kernel's per-program run time accounting
// (kernel.bpf_stats_enabled) until the returned closer is closed. It costs
// two clock reads per program run, so cost measurements only.
func Enable() (interface{ Close() error }, error) {
	return ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
}

// Of returns the summed run statistics of progs.
func Of(progs ...*ebpf.Program) (Stats, error) {
	var r Stats
	for _, p := range progs {
		st, err := p.Stats()
		if err != nil {
			return r, fmt.Errorf("read program run stats: %w", err)
		}
		r.Runtime += st.Runtime
		r.Runs += st.RunCount
	}
	return r, nil
}
