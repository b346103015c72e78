package install

import "github.com/pmezard/go-difflib/difflib"

func unifiedDiff(fromName, toName, from, to string) string {
	out, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(from), B: difflib.SplitLines(to),
		FromFile: fromName, ToFile: toName, Context: 2,
	})
	if err != nil {
		return err.Error()
	}
	if out == "" {
		return "(no differences)\n"
	}
	return out
}
