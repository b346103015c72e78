package bpf

import "github.com/isoobs/isoobs/bpf/runstats"

// RunStats returns the summed run statistics of the probe's programs (see runstats.Enable).
// The kernel counts a program's runs only where it was attached: a chained probe's
// (Options.Chained) are in the TCP probe's.
func (p *DNSProbe) RunStats() (runstats.Stats, error) {
	return runstats.Of(p.objs.DnsEgress, p.objs.DnsIngress)
}
