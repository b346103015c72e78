package printers

import (
	"time"

	"github.com/isoobs/isoobs/plugin/top"
)

// withLookBackColumns fits a --since frame: FIRST-SEEN and LAST-SEEN (when each row's queries
// started and ended within the window) before TOP-NAMES, and latency shown as "-" (the
// history keeps no latency).
func withLookBackColumns(f top.Frame, cols []column) []column {
	if f.LookBackSeconds == 0 {
		return cols
	}
	seen := []column{
		{"FIRST-SEEN", func(r *top.Row) string { return SeenClock(r.FirstSeen) }},
		{"LAST-SEEN", func(r *top.Row) string { return SeenClock(r.LastSeen) }},
	}
	out := make([]column, 0, len(cols)+2)
	placed := false
	for _, c := range cols {
		switch c.Header {
		case "P50", "P99":
			c.Value = func(*top.Row) string { return "-" }
		case "TOP-NAMES":
			out, placed = append(out, seen...), true
		}
		out = append(out, c)
	}
	if !placed {
		out = append(out, seen...)
	}
	return out
}

// SeenClock is a FIRST-SEEN/LAST-SEEN cell: the local time of day, "-" when unknown.
func SeenClock(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("15:04:05")
}
