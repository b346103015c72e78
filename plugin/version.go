package plugin

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/buildinfo"
	"github.com/isoobs/isoobs/plugin/printers"
)

// VersionInfo is what `kubectl isoobs version -o json` prints; its keys are
// a stable interface (scripts and the release tests read them).
type VersionInfo struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit,omitempty"`
	BuildDate string `json:"buildDate,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// GetVersionInfo describes this binary: what the release build stamped
// (buildinfo), else what the Go toolchain recorded.
func GetVersionInfo() VersionInfo {
	b := buildinfo.Get()
	return VersionInfo{Version: b.Version, GitCommit: b.Commit, BuildDate: b.Date, Modified: b.Modified,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

// VersionOptions holds `kubectl isoobs version` flags.
type VersionOptions struct {
	genericiooptions.IOStreams
	Output string
}

// NewCmdVersion returns `kubectl isoobs version`.
func NewCmdVersion(streams genericiooptions.IOStreams) *cobra.Command {
	o := &VersionOptions{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the kubectl-isoobs version, commit and build date",
		Long: `Print the version, git commit and build date of this kubectl-isoobs.
The daemons report theirs in ` + "`kubectl isoobs status -o wide`" + `; status and
top warn when the two differ.`,
		Example: `  kubectl isoobs version
  kubectl isoobs version -o json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(_ *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	printers.LineOutputs.AddFlag(cmd, &o.Output)
	return cmd
}

// Validate checks -o.
func (o *VersionOptions) Validate() error {
	var err error
	o.Output, err = printers.LineOutputs.Parse(o.Output)
	return err
}

// Run prints the version in the chosen format.
func (o *VersionOptions) Run() error {
	v := GetVersionInfo()
	if o.Output != printers.OutputTable {
		return printers.WriteObject(o.Out, o.Output, v)
	}
	_, err := fmt.Fprintln(o.Out, v.String())
	return err
}

// String is the one-line form: "kubectl-isoobs v0.1.0 (commit 0123456789ab,
// built 2026-12-03T12:00:00Z, go1.26.8, linux/amd64)".
func (v VersionInfo) String() string {
	commit := v.GitCommit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if commit == "" {
		commit = "unknown"
	}
	if v.Modified {
		commit += "-dirty"
	}
	date := v.BuildDate
	if date == "" {
		date = "unknown"
	}
	return fmt.Sprintf("kubectl-isoobs %s (commit %s, built %s, %s, %s)", v.Version, commit, date, v.GoVersion, v.Platform)
}
