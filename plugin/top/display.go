package top

// DisplayNames picks what a one-line view shows as a row's top names. When a
// parent domain carries most of the row's queries while no single name under it
// is heavy — a random-subdomain flood — the wildcard leads, because that is the
// answer ("*.crawl.example: 8790 NXDOMAIN"); the random names themselves would
// only show Space-Saving noise. Names whose count is mostly estimation error are
// left out; JSON output keeps everything with its error bound.
func DisplayNames(r *Row) []NameCount {
	var out []NameCount
	if len(r.TopZones) > 0 {
		z := r.TopZones[0]
		// The name summary overflowed (estimates carry error) only when the row
		// asked for more distinct names than it can hold — normal pods never do.
		overflowed := len(r.TopNames) == 0 || r.TopNames[0].Error > 0
		if overflowed && 2*guaranteed(z) > r.Queries {
			out = append(out, z)
		}
	}
	for _, n := range r.TopNames {
		if n.Error*2 >= n.Queries && n.Error > 0 {
			continue
		}
		out = append(out, n)
		if len(out) >= len(r.TopNames) {
			break
		}
	}
	return out
}

// guaranteed is the count a Space-Saving entry is known to have at least.
func guaranteed(n NameCount) uint64 {
	if n.Error >= n.Queries {
		return 0
	}
	return n.Queries - n.Error
}
