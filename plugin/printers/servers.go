package printers

import (
	"strconv"
	"strings"

	"github.com/isoobs/isoobs/plugin/top"
)

// serverColumns are the table of --group-by server: per server, what its clients sent and
// saw (client side), next to what the server pod itself answered and how long it took
// (server side, the SRV- columns; "-" where the server is not a pod a daemon watches: a
// Service IP, node-local-dns on the host network, an upstream).
func serverColumns(wide bool) []column {
	count := func(v uint64) string { return strconv.FormatUint(v, 10) }
	served := func(r *top.Row, v uint64) string {
		if r.ServedQueries == 0 {
			return "-"
		}
		return count(v)
	}
	cols := []column{
		{"SERVER", func(r *top.Row) string { return r.Server }},
		{"POD", func(r *top.Row) string {
			if r.Pod == "" {
				return "<none>"
			}
			return r.Namespace + "/" + r.Pod
		}},
		{"CLIENTS", func(r *top.Row) string { return strconv.FormatUint(uint64(r.Pods), 10) }},
		{"QPS", func(r *top.Row) string { return strconv.FormatFloat(r.QPS, 'f', 1, 64) }},
		{"QUERIES", func(r *top.Row) string { return count(r.Queries) }},
		{"SHARE", func(r *top.Row) string { return percent(r.Share, r.Queries) }},
		{"NXDOMAIN", func(r *top.Row) string { return count(r.NXDomain) }},
		{"SERVFAIL", func(r *top.Row) string { return count(r.ServFail) }},
		{"UNANSWERED", func(r *top.Row) string { return count(r.Queries - min(r.Queries, r.Responses)) }},
		{"AVG", func(r *top.Row) string { return latency(r.LatencyAvgMs, r.Responses) }},
		{"SERVED", func(r *top.Row) string { return served(r, r.ServedQueries) }},
		{"SRV-SERVFAIL", func(r *top.Row) string { return served(r, r.ServedServFail) }},
		{"SRV-P50", func(r *top.Row) string { return latency(r.ServedLatencyP50Ms, r.ServedResponses) }},
		{"SRV-P99", func(r *top.Row) string { return latency(r.ServedLatencyP99Ms, r.ServedResponses) }},
	}
	if wide {
		cols = append(cols,
			column{"ANSWERED", func(r *top.Row) string { return count(r.Responses) }},
			column{"SRV-NXDOMAIN", func(r *top.Row) string { return served(r, r.ServedNXDomain) }},
			column{"SRV-REFUSED", func(r *top.Row) string { return served(r, r.ServedRefused) }},
			column{"NODE", func(r *top.Row) string {
				if r.Node == "" {
					return "<none>"
				}
				return r.Node
			}},
		)
	}
	return cols
}

func percent(share float64, n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatFloat(share*100, 'f', 1, 64) + "%"
}

// withServersColumn adds SERVERS (where a row's queries went: server, share, mean latency)
// before TOP-NAMES.
func withServersColumn(cols []column) []column {
	servers := column{"SERVERS", func(r *top.Row) string { return serverList(r.Servers) }}
	for i, c := range cols {
		if c.Header == "TOP-NAMES" {
			return append(cols[:i], append([]column{servers}, cols[i:]...)...)
		}
	}
	return append(cols, servers)
}

// serverList prints servers as name-or-address:share/mean-latency, most queried first.
func serverList(servers []top.Server) string {
	if len(servers) == 0 {
		return "<none>"
	}
	parts := make([]string, len(servers))
	for i, s := range servers {
		name := s.Address
		if s.Name != "" {
			name = s.Name
		}
		p := name + ":" + strconv.FormatFloat(s.Share*100, 'f', 0, 64) + "%"
		if s.Timed > 0 {
			p += "/" + latency(s.LatencyAvgMs, s.Timed)
		}
		if s.ServFail > 0 {
			p += "/sf" + strconv.FormatUint(s.ServFail, 10)
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
