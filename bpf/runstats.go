package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// RunStats are the kernel's cumulative run statistics of programs (bpf_stats:
// counted only while EnableRunStats is in effect).
type RunStats struct {
	Runtime time.Duration
	Runs    uint64
}

// Sub returns s - o, the statistics between two reads.
func (s RunStats) Sub(o RunStats) RunStats {
	return RunStats{Runtime: s.Runtime - o.Runtime, Runs: s.Runs - o.Runs}
}

// NsPerRun is the mean run time of one program run in nanoseconds.
func (s RunStats) NsPerRun() float64 {
	if s.Runs == 0 {
		return 0
	}
	return float64(s.Runtime.Nanoseconds()) / float64(s.Runs)
}

// EnableRunStats switches on the kernel's per-program run time accounting
// (kernel.bpf_stats_enabled) until the returned closer is closed. It costs
// two clock reads per program run, so cost measurements only.
func EnableRunStats() (interface{ Close() error }, error) {
	return ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
}

func runStats(progs ...*ebpf.Program) (RunStats, error) {
	var r RunStats
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

// RunStats returns the summed run statistics of the probe's programs.
func (p *DNSProbe) RunStats() (RunStats, error) {
	return runStats(p.objs.DnsEgress, p.objs.DnsIngress)
}

// EmptyPrograms are cgroup_skb programs that do nothing, attached beside a
// probe so that a cost measurement can subtract the hook's and the
// accounting's own cost per packet.
type EmptyPrograms struct {
	objs  baselineObjects
	links []link.Link
}

// AttachEmptyPrograms attaches empty egress and ingress programs to
// cgroupRoot.
func AttachEmptyPrograms(cgroupRoot string) (*EmptyPrograms, error) {
	e := &EmptyPrograms{}
	if err := loadBaselineObjects(&e.objs, nil); err != nil {
		return nil, explainLoadError("load empty programs", err)
	}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{e.objs.EmptyEgress, ebpf.AttachCGroupInetEgress}, {e.objs.EmptyIngress, ebpf.AttachCGroupInetIngress}} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupRoot, Attach: a.typ, Program: a.prog})
		if err != nil {
			e.Close()
			return nil, explainLoadError("attach empty program to "+cgroupRoot, err)
		}
		e.links = append(e.links, l)
	}
	return e, nil
}

// RunStats returns the summed run statistics of the empty programs.
func (e *EmptyPrograms) RunStats() (RunStats, error) {
	return runStats(e.objs.EmptyEgress, e.objs.EmptyIngress)
}

// Close detaches and unloads the empty programs.
func (e *EmptyPrograms) Close() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	return errors.Join(append(errs, e.objs.Close())...)
}
