package top

import (
	"time"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// NameFilter is the query-name filter a frame was counted under (--name, --zone): applied on
// every daemon, so rows hold only queries for matching names, counted from the stream's start.
type NameFilter struct {
	// Regex is the --name RE2 expression, matched case-insensitively and unanchored against
	// the name without its trailing dot.
	Regex string `json:"regex,omitempty"`
	// Zone keeps the name itself and every name under it.
	Zone string `json:"zone,omitempty"`
}

// scopeOf fills what the request says about the frame's scope: its name filter and look-back.
func scopeOf(f *Frame, req *isoobsv1.TopRequest) {
	if req == nil {
		return
	}
	if req.GetNameRegex() != "" || req.GetZone() != "" {
		f.NameFilter = &NameFilter{Regex: req.GetNameRegex(), Zone: req.GetZone()}
	}
	if d := req.GetSince(); d != nil && d.AsDuration() > 0 {
		f.LookBackSeconds = d.AsDuration().Seconds()
	}
}

// mergeSeen widens a merged row's first/last seen to cover a daemon row's.
func mergeSeen(into *Row, r *isoobsv1.DNSRow) {
	if ts := r.GetFirstSeen(); ts != nil {
		t := ts.AsTime()
		if into.FirstSeen == nil || t.Before(*into.FirstSeen) {
			into.FirstSeen = &t
		}
	}
	if ts := r.GetLastSeen(); ts != nil {
		t := ts.AsTime()
		if into.LastSeen == nil || t.After(*into.LastSeen) {
			into.LastSeen = &t
		}
	}
}

// LookBack is the frame's --since window (0: not a look-back frame).
func (f *Frame) LookBack() time.Duration {
	return time.Duration(f.LookBackSeconds * float64(time.Second))
}
