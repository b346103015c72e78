package printers

import (
	"strconv"
	"strings"

	"github.com/isoobs/isoobs/plugin/top"
)

// HTTPColumns are the table columns of `top http` under groupBy; paths is how many path
// templates TOP-PATHS names (wide: every one the row keeps).
func HTTPColumns(groupBy string, wide bool, paths int) []Column[top.HTTPRow] {
	var cols []Column[top.HTTPRow]
	col := func(h string, v func(r *top.HTTPRow) string) {
		cols = append(cols, Column[top.HTTPRow]{Header: h, Value: v})
	}
	pods := func(r *top.HTTPRow) string { return strconv.FormatUint(uint64(r.Pods), 10) }
	switch groupBy {
	case top.GroupByNamespace:
		col("NAMESPACE", func(r *top.HTTPRow) string { return httpDash(r.Namespace) })
		col("PODS", pods)
	case top.GroupByNode:
		col("NODE", func(r *top.HTTPRow) string { return httpDash(r.Node) })
		col("PODS", pods)
	case top.GroupByService:
		col("SERVICE", func(r *top.HTTPRow) string { return httpDash(r.Service) })
		col("PODS", pods)
	case top.GroupByWorkload:
		col("NAMESPACE", func(r *top.HTTPRow) string { return httpDash(r.Namespace) })
		col("WORKLOAD", httpWorkload)
		col("PODS", pods)
	default:
		col("NAMESPACE", func(r *top.HTTPRow) string { return httpDash(r.Namespace) })
		col("POD", func(r *top.HTTPRow) string { return httpDash(r.Pod) })
		col("WORKLOAD", httpWorkload)
		col("NODE", func(r *top.HTTPRow) string { return httpDash(r.Node) })
	}
	col("REQ/S", func(r *top.HTTPRow) string { return strconv.FormatFloat(r.RequestsPerSecond, 'f', 1, 64) })
	col("REQUESTS", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Requests, 10) })
	col("4XX", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Status4xx, 10) })
	col("5XX", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Status5xx, 10) })
	col("5XX%", func(r *top.HTTPRow) string { return strconv.FormatFloat(r.ErrorPercent(), 'f', 1, 64) })
	col("P50", func(r *top.HTTPRow) string { return httpMs(r.LatencyP50Ms) })
	col("P95", func(r *top.HTTPRow) string { return httpMs(r.LatencyP95Ms) })
	col("P99", func(r *top.HTTPRow) string { return httpMs(r.LatencyP99Ms) })
	if wide {
		col("RESPONSES", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Responses, 10) })
		col("2XX", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Status2xx, 10) })
		col("3XX", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Status3xx, 10) })
		col("DENIED", func(r *top.HTTPRow) string { return strconv.FormatUint(r.Denied, 10) })
		col("4XX/S", func(r *top.HTTPRow) string { return strconv.FormatFloat(r.Status4xxPerSecond, 'f', 1, 64) })
		col("5XX/S", func(r *top.HTTPRow) string { return strconv.FormatFloat(r.Status5xxPerSecond, 'f', 1, 64) })
		if groupBy != top.GroupByService {
			col("SERVICE", func(r *top.HTTPRow) string { return httpDash(r.Service) })
		}
		col("SEEN-AT", func(r *top.HTTPRow) string { return httpDash(r.Direction) })
		paths = top.HTTPMaxPaths
	}
	if paths > 0 {
		col("TOP-PATHS", func(r *top.HTTPRow) string { return HTTPPaths(r, paths) })
	}
	return cols
}

// HTTPPaths is "METHOD path:requests[/4xxN][/5xxN]" for the first n path templates, then the
// "other" bucket when it counted any.
func HTTPPaths(r *top.HTTPRow, n int) string {
	var parts []string
	one := func(p top.HTTPPath) string {
		s := p.Method + " " + p.Path + ":" + strconv.FormatUint(p.Requests, 10)
		if p.Status4xx > 0 {
			s += "/4xx" + strconv.FormatUint(p.Status4xx, 10)
		}
		if p.Status5xx > 0 {
			s += "/5xx" + strconv.FormatUint(p.Status5xx, 10)
		}
		return s
	}
	for i, p := range r.Paths {
		if i == n {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, one(p))
	}
	if o := r.PathsOther; o.Requests+o.Status4xx+o.Status5xx > 0 && len(r.Paths) <= n {
		parts = append(parts, one(o))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func httpWorkload(r *top.HTTPRow) string {
	if r.Workload == "" {
		return "-"
	}
	if r.WorkloadKind == "" {
		return r.Workload
	}
	return strings.ToLower(r.WorkloadKind) + "/" + r.Workload
}

func httpDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func httpMs(ms float64) string {
	if ms == 0 {
		return "-"
	}
	if ms >= 100 {
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
}
