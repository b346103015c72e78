// Package emptyprobe attaches cgroup_skb programs that do nothing, beside a probe, so that a
// cost measurement can subtract the hook's and the run accounting's own cost per packet.
// Benchmarks only: nothing in the product loads it.
package emptyprobe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/isoobs/isoobs/bpf/runstats"
)

// The generated files are committed like bpf's; `make generate` rebuilds them.
//go:generate go tool bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall" empty empty.c

// Programs are the loaded empty programs, attached or not.
type Programs struct {
	objs  emptyObjects
	links []link.Link
}

// Load loads the empty programs without attaching them (BPF_PROG_TEST_RUN comparisons).
func Load() (*Programs, error) {
	e := &Programs{}
	if err := loadEmptyObjects(&e.objs, nil); err != nil {
		return nil, fmt.Errorf("load empty programs: %w", err)
	}
	return e, nil
}

// Attach loads the empty programs and attaches them to cgroupRoot's egress and ingress.
func Attach(cgroupRoot string) (*Programs, error) {
	e, err := Load()
	if err != nil {
		return nil, err
	}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{e.objs.EmptyEgress, ebpf.AttachCGroupInetEgress}, {e.objs.EmptyIngress, ebpf.AttachCGroupInetIngress}} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupRoot, Attach: a.typ, Program: a.prog})
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("attach empty program to %s: %w", cgroupRoot, err)
		}
		e.links = append(e.links, l)
	}
	return e, nil
}

// Egress is the empty egress program.
func (e *Programs) Egress() *ebpf.Program { return e.objs.EmptyEgress }

// Ingress is the empty ingress program.
func (e *Programs) Ingress() *ebpf.Program { return e.objs.EmptyIngress }

// RunStats returns the summed run statistics of the empty programs.
func (e *Programs) RunStats() (runstats.Stats, error) {
	return runstats.Of(e.objs.EmptyEgress, e.objs.EmptyIngress)
}

// Close detaches and unloads the empty programs.
func (e *Programs) Close() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	return errors.Join(append(errs, e.objs.Close())...)
}
