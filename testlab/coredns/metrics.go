package coredns

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics are CoreDNS's own counters (coredns_dns_requests_total, coredns_dns_responses_total),
// summed over its server blocks.
type Metrics struct {
	Requests         uint64
	RequestsByProto  map[string]uint64 // "udp", "tcp"
	RequestsByFamily map[string]uint64 // "1" IPv4, "2" IPv6
	RequestsByType   map[string]uint64 // "A", "AAAA", ...
	RequestsByZone   map[string]uint64 // server block zone: "cluster.local.", "servfail.test.", "."
	Responses        uint64
	ResponsesByRcode map[string]uint64 // "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ...
}

func newMetrics() Metrics {
	return Metrics{
		RequestsByProto: map[string]uint64{}, RequestsByFamily: map[string]uint64{},
		RequestsByType: map[string]uint64{}, RequestsByZone: map[string]uint64{},
		ResponsesByRcode: map[string]uint64{},
	}
}

// Sub returns m - prev, the counts between two scrapes.
func (m Metrics) Sub(prev Metrics) Metrics {
	d := newMetrics()
	d.Requests = m.Requests - prev.Requests
	d.Responses = m.Responses - prev.Responses
	sub := func(dst, a, b map[string]uint64) {
		for k, v := range a {
			if x := v - b[k]; x != 0 {
				dst[k] = x
			}
		}
	}
	sub(d.RequestsByProto, m.RequestsByProto, prev.RequestsByProto)
	sub(d.RequestsByFamily, m.RequestsByFamily, prev.RequestsByFamily)
	sub(d.RequestsByType, m.RequestsByType, prev.RequestsByType)
	sub(d.RequestsByZone, m.RequestsByZone, prev.RequestsByZone)
	sub(d.ResponsesByRcode, m.ResponsesByRcode, prev.ResponsesByRcode)
	return d
}

// Metrics scrapes the server's /metrics.
func (s *Server) Metrics(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL, nil)
	if err != nil {
		return Metrics{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Metrics{}, fmt.Errorf("coredns: scraping %s: %w", s.MetricsURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("coredns: scraping %s: %s", s.MetricsURL, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads CoreDNS's DNS counters from Prometheus text exposition.
func ParseMetrics(r io.Reader) (Metrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return Metrics{}, fmt.Errorf("coredns: parsing metrics: %w", err)
	}
	m := newMetrics()
	label := func(mt *dto.Metric, name string) string {
		for _, l := range mt.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	if f := fams["coredns_dns_requests_total"]; f != nil {
		for _, mt := range f.GetMetric() {
			v := uint64(mt.GetCounter().GetValue())
			m.Requests += v
			m.RequestsByProto[label(mt, "proto")] += v
			m.RequestsByFamily[label(mt, "family")] += v
			m.RequestsByType[label(mt, "type")] += v
			m.RequestsByZone[label(mt, "zone")] += v
		}
	}
	if f := fams["coredns_dns_responses_total"]; f != nil {
		for _, mt := range f.GetMetric() {
			v := uint64(mt.GetCounter().GetValue())
			m.Responses += v
			m.ResponsesByRcode[label(mt, "rcode")] += v
		}
	}
	return m, nil
}

// MetricsSince scrapes until CoreDNS has counted at least minResponses responses since prev and
// returns the difference. CoreDNS counts a query after writing its answer, so a client can
// hold the answer a moment before the counters include it; waiting for the client's own
// answered count closes that gap. It gives up after 5s (or ctx) with the last difference.
func (s *Server) MetricsSince(ctx context.Context, prev Metrics, minResponses uint64) (Metrics, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := s.Metrics(ctx)
		if err != nil {
			return Metrics{}, err
		}
		d := m.Sub(prev)
		if d.Responses >= minResponses {
			return d, nil
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("coredns: counted %d responses since the last scrape, want at least %d", d.Responses, minResponses)
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
