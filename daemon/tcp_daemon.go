package daemon

import (
	"context"
	"time"

	"github.com/isoobs/isoobs/bpf"
)

// startTCP loads the TCP probe (unless Config.TCPDisabled) and makes its collector. A probe
// that does not load leaves the DNS side running: Status lists the error and TCP streams
// answer Unavailable with it.
func (d *Daemon) startTCP(lookup podLookup) {
	if d.cfg.TCPDisabled {
		return
	}
	src := d.cfg.tcpSource
	if src == nil {
		probe, err := bpf.LoadTCP(bpf.TCPOptions{CgroupRoot: d.cfg.CgroupRoot, MaxCgroups: d.cfg.KernelMaxPods})
		if err != nil {
			d.tcpErr = err
			d.cfg.Logger.Warn("TCP probe not loaded; top tcp is unavailable on this node, top dns is not affected", "err", err)
			return
		}
		src = probe
	}
	d.tcp = newTCPCollector(&d.cfg, src, d.resolver, lookup, time.Now())
	d.tcp.hubble = d.HubbleAggregates // nil without Hubble: drops from the probe only
	d.tcp.metrics = newTCPMetrics(d.tcp)
	d.metrics.reg.MustRegister(d.tcp.metrics)
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
