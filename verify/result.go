// Package verify checks the eBPF observability stack `kubectl isoobs install`
// puts in place (Cilium, Hubble, Tetragon, the metrics pipeline, the isoobs
// daemons) end to end, and says for each problem what to run next.
//
// Every check reads the cluster through the API server only: object status,
// the cilium-config ConfigMap, metrics fetched through the pod proxy
// (/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics) and Hubble Relay's
// gRPC ServerStatus through a port-forward. Checks run in parallel, each
// under its own timeout, so one unreachable pod never hangs the run.
package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Status is a check's verdict.
type Status string

const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	// StatusSkip: the check does not apply (e.g. DNS Proxy HA on OSS).
	StatusSkip Status = "skip"
)

// severity orders statuses so a report's overall status is its worst.
func (s Status) severity() int {
	switch s {
	case StatusFail:
		return 3
	case StatusWarn:
		return 2
	case StatusOK:
		return 1
	}
	return 0
}

// Symbol is the table's marker for a status.
func (s Status) Symbol() string {
	switch s {
	case StatusOK:
		return "✔"
	case StatusWarn:
		return "!"
	case StatusFail:
		return "✖"
	}
	return "-"
}

func (s Status) color() string {
	switch s {
	case StatusOK:
		return "\x1b[32m"
	case StatusWarn:
		return "\x1b[33m"
	case StatusFail:
		return "\x1b[31m"
	}
	return "\x1b[90m"
}

// Result is one check's outcome. Its JSON form is part of the stable
// `-o json` schema (SchemaVersion): fields are only ever added.
type Result struct {
	// ID is stable across versions, e.g. "hubble/relay" or "metrics/cilium-agent".
	ID string `json:"id"`
	// Component is what --component selects, e.g. "hubble".
	Component string `json:"component"`
	// Name is the human-readable check name.
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail is one line saying what was found.
	Detail string `json:"detail"`
	// Next is the command to run next ("" when ok).
	Next string `json:"next,omitempty"`
	// Items lists particulars: missing metric names, config diff lines,
	// unavailable nodes, pods without a DNS policy.
	Items []string `json:"items,omitempty"`
	// DurationMS is how long the check took.
	DurationMS int64 `json:"durationMs"`
}

// SchemaVersion names the `-o json` document format.
const SchemaVersion = "isoobs.io/verify/v1"

// Report is the outcome of one run.
type Report struct {
	SchemaVersion string    `json:"schemaVersion"`
	Time          time.Time `json:"time"`
	// Status is the worst status of all results (skip counts as ok).
	Status     Status         `json:"status"`
	Counts     map[Status]int `json:"counts"`
	DurationMS int64          `json:"durationMs"`
	Results    []Result       `json:"results"`
}

// NewReport orders results by component order, then ID, and totals them.
func NewReport(results []Result, took time.Duration) *Report {
	r := &Report{
		SchemaVersion: SchemaVersion,
		Time:          time.Now().UTC().Truncate(time.Millisecond),
		Status:        StatusOK,
		Counts:        map[Status]int{StatusOK: 0, StatusWarn: 0, StatusFail: 0, StatusSkip: 0},
		DurationMS:    took.Milliseconds(),
		Results:       append([]Result(nil), results...),
	}
	sort.SliceStable(r.Results, func(i, j int) bool {
		a, b := componentRank(r.Results[i].Component), componentRank(r.Results[j].Component)
		if a != b {
			return a < b
		}
		return r.Results[i].ID < r.Results[j].ID
	})
	for _, res := range r.Results {
		r.Counts[res.Status]++
		if res.Status.severity() > r.Status.severity() {
			r.Status = res.Status
		}
	}
	return r
}

// Healthy is true when nothing failed (and, with strict, nothing warned).
func (r *Report) Healthy(strict bool) bool {
	if r.Status == StatusFail {
		return false
	}
	return !strict || r.Status != StatusWarn
}

// Result returns the result with this ID, or nil.
func (r *Report) Result(id string) *Result {
	for i := range r.Results {
		if r.Results[i].ID == id {
			return &r.Results[i]
		}
	}
	return nil
}

// Failing lists the IDs of results with this status.
func (r *Report) Failing(status Status) []string {
	var ids []string
	for _, res := range r.Results {
		if res.Status == status {
			ids = append(ids, res.ID)
		}
	}
	return ids
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// FormatOptions control the table.
type FormatOptions struct {
	// Color adds ANSI colours (only on a terminal).
	Color bool
	// MaxItems caps the particulars shown under a result (0: 8).
	MaxItems int
}

// Format writes the report as a table grouped by component: a symbol, the
// check name and its detail, then its particulars and the next command.
func (r *Report) Format(w io.Writer, opts FormatOptions) error {
	maxItems := opts.MaxItems
	if maxItems == 0 {
		maxItems = 8
	}
	paint := func(s Status, text string) string {
		if !opts.Color {
			return text
		}
		return s.color() + text + "\x1b[0m"
	}
	width := 0
	for _, res := range r.Results {
		width = max(width, len(res.Name))
	}
	var b strings.Builder
	group := ""
	for _, res := range r.Results {
		if res.Component != group {
			if group != "" {
				b.WriteString("\n")
			}
			group = res.Component
			b.WriteString(strings.ToUpper(group) + "\n")
		}
		fmt.Fprintf(&b, "  %s %-*s  %s\n", paint(res.Status, res.Status.Symbol()), width, res.Name, res.Detail)
		items := res.Items
		more := 0
		if len(items) > maxItems {
			items, more = items[:maxItems], len(items)-maxItems
		}
		for _, it := range items {
			fmt.Fprintf(&b, "      %s\n", it)
		}
		if more > 0 {
			fmt.Fprintf(&b, "      ... and %d more (-o json lists all)\n", more)
		}
		if res.Next != "" && res.Status != StatusOK {
			fmt.Fprintf(&b, "      → %s\n", res.Next)
		}
	}
	c := r.Counts
	fmt.Fprintf(&b, "\n%s %d ok, %d warnings, %d failures, %d skipped in %.1fs\n",
		paint(r.Status, r.Status.Symbol()), c[StatusOK], c[StatusWarn], c[StatusFail], c[StatusSkip],
		float64(r.DurationMS)/1000)
	_, err := io.WriteString(w, b.String())
	return err
}
