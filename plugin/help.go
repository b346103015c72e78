package plugin

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroupAnnotation names the help section of a flag (see groupFlags).
const flagGroupAnnotation = "isoobs_help_group"

// flagGroup is one section of a command's grouped help: a title and its flags, in help order.
type flagGroup struct {
	title string
	flags []string
}

// groupFlags makes cmd's help list its own flags in sections, in the order given; flags in no
// group (e.g. --help) come last under "Other flags". Inherited flags keep cobra's section.
func groupFlags(cmd *cobra.Command, groups ...flagGroup) {
	for _, g := range groups {
		for _, name := range g.flags {
			if err := cmd.Flags().SetAnnotation(name, flagGroupAnnotation, []string{g.title}); err != nil {
				panic("groupFlags: " + err.Error()) // a flag renamed without its group: a bug
			}
		}
	}
	tmpl := cmd.UsageTemplate()
	const flags = "\n\nFlags:\n{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}"
	if !strings.Contains(tmpl, flags) {
		panic("groupFlags: cobra's usage template changed")
	}
	cmd.SetUsageTemplate(strings.Replace(tmpl, flags, "{{groupedFlagUsages .}}", 1))
	flagGroups[cmd] = groups
}

// flagGroups are the sections of the commands with grouped help.
var flagGroups = map[*cobra.Command][]flagGroup{}

func init() {
	cobra.AddTemplateFunc("groupedFlagUsages", groupedFlagUsages)
}

// groupedFlagUsages is the "Flags:" part of the usage: one section per group, its flags in the
// group's order, then the flags of no group.
func groupedFlagUsages(cmd *cobra.Command) string {
	local := cmd.LocalFlags()
	var b strings.Builder
	section := func(title string, fs *pflag.FlagSet) {
		if fs.HasAvailableFlags() {
			b.WriteString("\n\n" + title + ":\n" + strings.TrimRight(fs.FlagUsages(), " \n"))
		}
	}
	for _, g := range flagGroups[cmd] {
		fs := pflag.NewFlagSet(g.title, pflag.ContinueOnError)
		fs.SortFlags = false
		for _, name := range g.flags {
			if f := local.Lookup(name); f != nil {
				fs.AddFlag(f)
			}
		}
		section(g.title, fs)
	}
	other := pflag.NewFlagSet("other", pflag.ContinueOnError)
	local.VisitAll(func(f *pflag.Flag) {
		if len(f.Annotations[flagGroupAnnotation]) == 0 {
			other.AddFlag(f)
		}
	})
	section("Other flags", other)
	return b.String()
}
