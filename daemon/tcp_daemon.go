package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/isoobs/isoobs/bpf"
)

// startTCP loads the TCP probe (unless Config.TCPDisabled) and makes its collector; its
// programs run dns's (loaded with bpf.Options.Chained; nil: none). A probe that does not load
// leaves the DNS side running, attached on its own: Status lists the error and TCP streams
// answer Unavailable with it. The error is the DNS probe's, which then did not attach.
func (d *Daemon) startTCP(lookup podLookup, dns *bpf.DNSProbe) error {
	if d.cfg.TCPDisabled {
		return nil
	}
	src := d.cfg.tcpSource
	if src == nil {
		opts := bpf.TCPOptions{CgroupRoot: d.cfg.CgroupRoot, MaxCgroups: d.cfg.KernelMaxPods, DNS: dns}
		probe, err := bpf.LoadTCP(opts)
		if err != nil && dns != nil {
			// Whatever failed (the chain too, on a kernel that refuses the tail call), the
			// DNS probe attaches on its own, and the TCP probe is tried once without it.
			if aerr := dns.Attach(); aerr != nil {
				return fmt.Errorf("load DNS probe: %w", aerr)
			}
			opts.DNS = nil
			var alone error
			if probe, alone = bpf.LoadTCP(opts); alone == nil {
				d.cfg.Logger.Warn("the TCP probe could not run the DNS probe's programs: both attached on their own (two programs a packet)", "err", err)
			}
			err = alone
		}
		if err != nil {
			d.tcpErr = err
			d.cfg.Logger.Warn("TCP probe not loaded; top tcp is unavailable on this node, top dns is not affected", "err", err)
			return nil
		}
		src = probe
	}
	d.tcp = newTCPCollector(&d.cfg, src, d.resolver, lookup, time.Now())
	d.tcp.hubble = d.HubbleAggregates // nil without Hubble: drops from the probe only
	d.tcp.metrics = newTCPMetrics(d.tcp)
	d.metrics.reg.MustRegister(d.tcp.metrics)
	return nil
}

// runTCP ticks the TCP collector until ctx ends.
func (d *Daemon) runTCP(ctx context.Context) {
	if d.tcp != nil {
		d.tcp.run(ctx.Done())
	}
}

// closeTCP detaches the TCP probe.
func (d *Daemon) closeTCP() error {
	if d.tcp == nil {
		return nil
	}
	return d.tcp.src.Close()
}
