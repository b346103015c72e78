package top

import (
	"cmp"
	"slices"
	"strings"
)

// sortLimit returns a copy of rows sorted heaviest first by values(row) — a rate, then a
// total — or by name alone when values is nil, ties broken by name, and cut to limit (0: all),
// with how many rows were cut. The TCP, drops and HTTP frames sort this way.
func sortLimit[R any](rows []R, values func(*R) (rate, total float64), name func(*R) string, limit int) ([]R, int) {
	out := slices.Clone(rows)
	slices.SortStableFunc(out, func(a, b R) int {
		if values != nil {
			ra, ta := values(&a)
			rb, tb := values(&b)
			if c := cmp.Compare(rb, ra); c != 0 {
				return c
			}
			if c := cmp.Compare(tb, ta); c != 0 {
				return c
			}
		}
		return strings.Compare(name(&a), name(&b))
	})
	if limit > 0 && len(out) > limit {
		return out[:limit], len(out) - limit
	}
	return out, 0
}
