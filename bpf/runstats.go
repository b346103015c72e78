package bpf

import "github.com/isoobs/isoobs/bpf/runstats"

// RunStats returns the summed run statistics of the probe's programs (see runstats.Enable).
func (p *DNSProbe) RunStats() (runstats.Stats, error) {
	return runstats.Of(p.objs.DnsEgress, p.objs.DnsIngress)
}
