package printers

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestOutputSpecs(t *testing.T) {
	for _, tc := range []struct {
		spec OutputSpec
		in   string
		want string
		err  string
	}{
		{TableOutputs, " Wide ", OutputWide, ""},
		{TableOutputs, "", OutputTable, ""},
		{TableOutputs, "table", "", `invalid -o "table": valid formats are wide, json, yaml (or leave -o out for the table)`},
		{ReportOutputs, "YAML", OutputYAML, ""},
		{ReportOutputs, "wide", "", `invalid -o "wide": valid formats are json, yaml (or leave -o out for the report)`},
		{LineOutputs, "json", OutputJSON, ""},
		{LineOutputs, "jsonpath={.version}", "", `invalid -o "jsonpath={.version}": valid formats are json, yaml (or leave -o out for one line)`},
	} {
		got, err := tc.spec.Parse(tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%v.Parse(%q) = %q, %v; want %q, %q", tc.spec.Modes, tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestOutputFlagCompletes(t *testing.T) {
	var out string
	cmd := &cobra.Command{Use: "x", Run: func(*cobra.Command, []string) {}}
	TableOutputs.AddFlag(cmd, &out)
	root := &cobra.Command{Use: "root"}
	root.AddCommand(cmd)
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetArgs([]string{cobra.ShellCompRequestCmd, "x", "-o", ""})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.HasPrefix(got, "wide\njson\nyaml\n:4\n") {
		t.Errorf("completion of -o:\n%s", got)
	}
}

func TestWriteColumnsNoHeaders(t *testing.T) {
	cols := []Column[[2]string]{
		{Header: "A", Value: func(r *[2]string) string { return r[0] }},
		{Header: "LONG-B", Value: func(r *[2]string) string { return r[1] }},
	}
	rows := [][2]string{{"x", "1"}, {"yyyy", "2"}}
	var with, without bytes.Buffer
	if err := WriteColumns(&with, cols, rows, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteColumns(&without, cols, rows, true); err != nil {
		t.Fatal(err)
	}
	if with.String() != "A      LONG-B\nx      1\nyyyy   2\n" || without.String() != "x      1\nyyyy   2\n" {
		t.Errorf("with headers:\n%q\nwithout:\n%q", with.String(), without.String())
	}
}
