package bench

import "testing"

// reportExact reports the exact flag (1 or 0) and fails the benchmark when the counts were not
// exact: a cost figure measured beside counts that miss packets is not the product's cost.
func reportExact(b *testing.B, exact bool, detail string) {
	b.Helper()
	v := 0.0
	if exact {
		v = 1
	}
	b.ReportMetric(v, "exact")
	if !exact {
		b.Errorf("counts not exact (%s): this run's figures do not hold", detail)
	}
}
