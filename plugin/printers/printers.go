// Package printers writes top frames as kubectl-style tables, NDJSON or YAML.
package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/plugin/top"
)

// FramePrinter writes one frame at a time to a stream.
type FramePrinter interface {
	PrintFrame(f top.Frame, w io.Writer) error
}

// New returns the printer for an -o value (already checked by ParseOutput).
func New(output string) FramePrinter { return NewWithOptions(output, false) }

// NewWithOptions is New with --no-headers for the tables.
func NewWithOptions(output string, noHeaders bool) FramePrinter {
	switch output {
	case OutputJSON:
		return JSONPrinter{}
	case OutputYAML:
		return &YAMLPrinter{}
	case OutputWide:
		return &TablePrinter{Wide: true, NoHeaders: noHeaders}
	default:
		return &TablePrinter{NoHeaders: noHeaders}
	}
}

// JSONPrinter writes each frame as one JSON object on one line (NDJSON), so
// `| jq` and line-oriented tools can follow a live stream.
type JSONPrinter struct{}

// PrintFrame implements FramePrinter.
func (JSONPrinter) PrintFrame(f top.Frame, w io.Writer) error {
	return json.NewEncoder(w).Encode(f)
}

// YAMLPrinter writes each frame as one YAML document, separated by ---.
type YAMLPrinter struct{ printed bool }

// PrintFrame implements FramePrinter.
func (p *YAMLPrinter) PrintFrame(f top.Frame, w io.Writer) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	if p.printed {
		if _, err := io.WriteString(w, "---\n"); err != nil {
			return err
		}
	}
	p.printed = true
	_, err = w.Write(b)
	return err
}

// TablePrinter writes frames as kubectl-style aligned columns, a blank line
// between frames. Wide adds cgroup, pod UID, response, byte and query-type
// columns.
type TablePrinter struct {
	Wide bool
	// NoHeaders leaves out the header row.
	NoHeaders bool
	printed   bool
}

// PrintFrame implements FramePrinter.
func (p *TablePrinter) PrintFrame(f top.Frame, w io.Writer) error {
	if p.printed {
		if _, err := io.WriteString(w, "\n"); err != nil {
			return err
		}
	}
	p.printed = true
	return WriteTable(w, f, p.Wide, p.NoHeaders)
}

type column = Column[top.Row]

// Columns returns the table columns for a grouping.
func columns(groupBy string, wide bool) []column {
	none := func(s string) string {
		if s == "" {
			return "<none>"
		}
		return s
	}
	namespace := column{"NAMESPACE", func(r *top.Row) string { return none(r.Namespace) }}
	// Pods without a name (e.g. --local without a kubeconfig) are shown by
	// UID, other unresolved rows by cgroup, so they can still be told apart.
	pod := column{"POD", func(r *top.Row) string {
		switch {
		case r.Pod != "":
			return r.Pod
		case r.PodUID != "":
			return "uid:" + r.PodUID
		case r.Cgroup != "":
			return "cgroup:" + r.Cgroup
		}
		return "<none>"
	}}
	workload := column{"WORKLOAD", func(r *top.Row) string {
		if r.Workload == "" {
			return "<none>"
		}
		if r.WorkloadKind == "" {
			return r.Workload
		}
		return strings.ToLower(r.WorkloadKind) + "/" + r.Workload
	}}
	node := column{"NODE", func(r *top.Row) string { return none(r.Node) }}
	pods := column{"PODS", func(r *top.Row) string { return strconv.FormatUint(uint64(r.Pods), 10) }}
	qname := column{"QNAME", func(r *top.Row) string { return none(r.QName) }}

	var cols []column
	switch groupBy {
	case top.GroupByWorkload:
		cols = []column{namespace, workload, pods, node}
	case top.GroupByNamespace:
		cols = []column{namespace, pods, node}
	case top.GroupByQName:
		cols = []column{qname, pods, node}
	case top.GroupByNode:
		cols = []column{node, pods}
	default:
		cols = []column{namespace, pod, workload, node}
	}
	cols = append(cols,
		column{"QPS", func(r *top.Row) string { return strconv.FormatFloat(r.QPS, 'f', 1, 64) }},
		column{"QUERIES", func(r *top.Row) string { return strconv.FormatUint(r.Queries, 10) }},
		column{"NXDOMAIN", func(r *top.Row) string { return strconv.FormatUint(r.NXDomain, 10) }},
		column{"SERVFAIL", func(r *top.Row) string { return strconv.FormatUint(r.ServFail, 10) }},
		column{"TIMEOUTS", func(r *top.Row) string { return strconv.FormatUint(r.Timeouts, 10) }},
	)
	if wide {
		cols = append(cols,
			column{"REFUSED", func(r *top.Row) string { return strconv.FormatUint(r.Refused, 10) }},
			column{"MALFORMED", func(r *top.Row) string { return strconv.FormatUint(r.Malformed, 10) }},
			column{"RESPONSES", func(r *top.Row) string { return strconv.FormatUint(r.Responses, 10) }},
			column{"UNSOLICITED", func(r *top.Row) string { return strconv.FormatUint(r.Unsolicited, 10) }},
			column{"EVICTED", func(r *top.Row) string { return strconv.FormatUint(r.Evicted, 10) }},
		)
	}
	cols = append(cols,
		column{"P50", func(r *top.Row) string { return latency(r.LatencyP50Ms, r.Responses) }},
		column{"P99", func(r *top.Row) string { return latency(r.LatencyP99Ms, r.Responses) }},
	)
	if wide {
		cols = append(cols,
			column{"BYTES-OUT", func(r *top.Row) string { return strconv.FormatUint(r.BytesOut, 10) }},
			column{"BYTES-IN", func(r *top.Row) string { return strconv.FormatUint(r.BytesIn, 10) }},
			column{"QTYPES", func(r *top.Row) string { return qtypes(r.QueriesByType) }},
		)
		if groupBy == top.GroupByPod || groupBy == "" {
			cols = append(cols,
				column{"CGROUP", func(r *top.Row) string { return none(r.Cgroup) }},
				column{"POD-UID", func(r *top.Row) string { return none(r.PodUID) }},
			)
		}
	}
	if groupBy != top.GroupByQName {
		cols = append(cols, column{"TOP-NAMES", func(r *top.Row) string { return names(top.DisplayNames(r)) }})
	}
	return cols
}

// WriteTable writes one frame as an aligned table. A frame without rows
// prints a one-line notice instead, as kubectl does for empty lists.
func WriteTable(w io.Writer, f top.Frame, wide, noHeaders bool) error {
	if len(f.Rows) == 0 {
		msg := "No DNS queries seen"
		if !f.Since.IsZero() {
			msg += " since " + f.Since.Local().Format("15:04:05")
		}
		_, err := fmt.Fprintln(w, msg+".")
		return err
	}
	if f.GroupBy == top.GroupByServer {
		return writeColumnsNoting(w, serverColumns(wide), f, noHeaders)
	}
	cols := columns(f.GroupBy, wide)
	if (wide || f.ServerFilter != "") && f.GroupBy != top.GroupByQName { // name rows are not counted per server
		cols = withServersColumn(cols)
	}
	if servesDNS(f) {
		cols = withServedColumn(cols)
	}
	if !wide && slices.ContainsFunc(f.Rows, func(r top.Row) bool { return r.Unsolicited > 0 }) {
		cols = withUnsolicitedColumn(cols)
	}
	if hasHubble(f) {
		cols = withHubbleColumns(cols, wide)
	}
	cols = withLookBackColumns(f, cols)
	return writeColumnsNoting(w, cols, f, noHeaders)
}

// writeColumnsNoting writes the rows, then how many --limit left out.
func writeColumnsNoting(w io.Writer, cols []column, f top.Frame, noHeaders bool) error {
	if err := WriteColumns(w, cols, f.Rows, noHeaders); err != nil {
		return err
	}
	if f.Truncated > 0 {
		if _, err := fmt.Fprintf(w, "(%d more rows not shown; raise --limit or use --limit 0)\n", f.Truncated); err != nil {
			return err
		}
	}
	return nil
}

func latency(ms float64, responses uint64) string {
	if responses == 0 {
		return "-"
	}
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + "s"
	}
}

func names(ns []top.NameCount) string {
	if len(ns) == 0 {
		return "<none>"
	}
	parts := make([]string, len(ns))
	for i, n := range ns {
		s := n.Name + ":" + strconv.FormatUint(n.Queries, 10)
		if n.NXDomain > 0 {
			s += "/nx" + strconv.FormatUint(n.NXDomain, 10)
		}
		parts[i] = s
	}
	return strings.Join(parts, ",")
}

func qtypes(m map[string]uint64) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Most-asked type first, then alphabetical.
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ":" + strconv.FormatUint(m[k], 10)
	}
	return strings.Join(parts, ",")
}

// servesDNS says whether a row is a DNS server (CoreDNS): its load is what the
// incident is about, yet it sends no queries of its own.
func servesDNS(f top.Frame) bool {
	for i := range f.Rows {
		if f.Rows[i].ServedQueries > 0 {
			return true
		}
	}
	return false
}

// withServedColumn adds SERVED (queries the row answered as a DNS server) after SERVFAIL.
// withUnsolicitedColumn shows answers nobody asked for next to the timeouts when a row has
// any: someone may be forging answers at that pod (wide output always shows them).
func withUnsolicitedColumn(cols []column) []column {
	unsolicited := column{"UNSOLICITED", func(r *top.Row) string { return strconv.FormatUint(r.Unsolicited, 10) }}
	for i, c := range cols {
		if c.Header == "TIMEOUTS" {
			return append(cols[:i+1], append([]column{unsolicited}, cols[i+1:]...)...)
		}
	}
	return append(cols, unsolicited)
}

func withServedColumn(cols []column) []column {
	served := column{"SERVED", func(r *top.Row) string { return strconv.FormatUint(r.ServedQueries, 10) }}
	for i, c := range cols {
		if c.Header == "SERVFAIL" {
			return append(cols[:i+1], append([]column{served}, cols[i+1:]...)...)
		}
	}
	return append(cols, served)
}
