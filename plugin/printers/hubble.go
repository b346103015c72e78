package printers

import (
	"slices"
	"strconv"
	"strings"

	"github.com/isoobs/isoobs/plugin/top"
)

// hasHubble reports whether any row carries Hubble's data; the Hubble columns appear only
// then, so eBPF-only tables stay as narrow as before.
func hasHubble(f top.Frame) bool {
	for i := range f.Rows {
		if slices.Contains(f.Rows[i].Sources, "hubble") || f.Rows[i].PolicyDenied > 0 {
			return true
		}
	}
	return false
}

// withHubbleColumns adds DENIED (DNS denied by policy) after SERVFAIL and, wide, the sources,
// the Cilium identity and the DNS proxy's p99 latency before TOP-NAMES.
func withHubbleColumns(cols []column, wide bool) []column {
	denied := column{"DENIED", func(r *top.Row) string { return strconv.FormatUint(r.PolicyDenied, 10) }}
	out := make([]column, 0, len(cols)+4)
	for _, c := range cols {
		if c.Header == "TOP-NAMES" && wide {
			out = append(out, hubbleWideColumns()...)
		}
		out = append(out, c)
		if c.Header == "SERVFAIL" {
			out = append(out, denied)
		}
	}
	if wide && out[len(out)-1].Header != "TOP-NAMES" {
		out = append(out, hubbleWideColumns()...)
	}
	return out
}

func hubbleWideColumns() []column {
	return []column{
		{"SOURCES", func(r *top.Row) string {
			if len(r.Sources) == 0 {
				return "<none>"
			}
			return strings.Join(r.Sources, ",")
		}},
		{"IDENTITY", func(r *top.Row) string {
			if r.Identity == 0 {
				return "<none>"
			}
			return strconv.FormatUint(uint64(r.Identity), 10)
		}},
		{"PROXY-P99", func(r *top.Row) string {
			if r.ProxyLatencyP99Ms == 0 {
				return "-"
			}
			return latency(r.ProxyLatencyP99Ms, 1)
		}},
	}
}
