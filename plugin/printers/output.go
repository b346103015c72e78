package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// Output modes accepted by -o. Every command parses -o with the same rules (OutputSpec.Parse):
// case and spaces do not matter, the default (a table, a report, one line) has no name (as in
// kubectl get), and an unsupported mode is refused with the list of those the command has.
const (
	OutputTable = ""
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Outputs lists the -o values of `top dns`.
var Outputs = []string{OutputWide, OutputJSON, OutputYAML}

// OutputSpec is what a command's -o accepts: Modes besides the default, and Default, what the
// command prints without -o ("the table", "one line").
type OutputSpec struct {
	Modes   []string
	Default string
}

// Output specs of the commands.
var (
	// TableOutputs: a table, wider with -o wide, or the objects as JSON or YAML (top dns, status).
	TableOutputs = OutputSpec{Modes: Outputs, Default: "the table"}
	// ReportOutputs: a report for people, or JSON or YAML (verify).
	ReportOutputs = OutputSpec{Modes: []string{OutputJSON, OutputYAML}, Default: "the report"}
	// LineOutputs: one line, or JSON or YAML (version).
	LineOutputs = OutputSpec{Modes: []string{OutputJSON, OutputYAML}, Default: "one line"}
)

// ParseOutput checks a `top dns` -o value (TableOutputs.Parse).
func ParseOutput(s string) (string, error) { return TableOutputs.Parse(s) }

// Parse normalizes an -o value to one of the Output constants, or says which are valid.
func (s OutputSpec) Parse(v string) (string, error) {
	o := strings.ToLower(strings.TrimSpace(v))
	if o == OutputTable || slices.Contains(s.Modes, o) {
		return o, nil
	}
	return "", fmt.Errorf("invalid -o %q: valid formats are %s (or leave -o out for %s)", v, strings.Join(s.Modes, ", "), s.Default)
}

// usage is the -o flag's help text.
func (s OutputSpec) usage() string {
	modes := slices.Clone(s.Modes)
	for i, m := range modes {
		if m == OutputJSON && slices.Equal(s.Modes, Outputs) {
			modes[i] = "json (one object per frame and line)"
		}
	}
	return "Output format: " + strings.Join(modes, ", ") + " (default: " + s.Default + ")"
}

// AddFlag registers -o/--output on cmd, with shell completion of the modes.
func (s OutputSpec) AddFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", *p, s.usage())
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(s.Modes, cobra.ShellCompDirectiveNoFileComp))
}

// AddNoHeadersFlag registers --no-headers (tables only, as in kubectl get).
func AddNoHeadersFlag(cmd *cobra.Command, p *bool) {
	cmd.Flags().BoolVar(p, "no-headers", *p, "With the table output (default or -o wide): leave out the header row")
}

// WriteObject writes v as indented JSON or as YAML: the -o json|yaml of commands that print
// one object (status, verify, version).
func WriteObject(w io.Writer, output string, v any) error {
	switch output {
	case OutputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("WriteObject: -o %q is not json or yaml", output)
}

// Column is one column of a kubectl-style table: its header and how a row reads in it.
type Column[R any] struct {
	Header string
	Value  func(r *R) string
}

// WriteColumns writes rows as aligned columns (kubectl's tab writer), headers first unless
// noHeaders.
func WriteColumns[R any](w io.Writer, cols []Column[R], rows []R, noHeaders bool) error {
	tw := printers.GetNewTabWriter(w)
	cells := make([]string, len(cols))
	if !noHeaders {
		for i, c := range cols {
			cells[i] = c.Header
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	for i := range rows {
		for j, c := range cols {
			cells[j] = c.Value(&rows[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
