package plugin

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"
)

// Version is the release version, set at build time with
// -ldflags "-X github.com/isoobs/isoobs/plugin.Version=v0.1.0".
var Version = ""

// VersionInfo is what `kubectl isoobs version -o json` prints.
type VersionInfo struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// GetVersionInfo describes this binary: Version if set, else the module
// version and VCS revision Go stamped into the build.
func GetVersionInfo() VersionInfo {
	v := VersionInfo{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.GitCommit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	return v
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
		Short: "Print the kubectl-isoobs version",
		Example: `  kubectl isoobs version
  kubectl isoobs version -o json`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(_ *cobra.Command, _ []string) error {
			return o.Run()
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: json or yaml (default: one line)")
	return cmd
}

// Run prints the version in the chosen format.
func (o *VersionOptions) Run() error {
	v := GetVersionInfo()
	switch o.Output {
	case "":
		commit := v.GitCommit
		if len(commit) > 12 {
			commit = commit[:12]
		}
		if v.Modified {
			commit += "-dirty"
		}
		if commit == "" {
			commit = "unknown"
		}
		_, err := fmt.Fprintf(o.Out, "kubectl-isoobs %s (commit %s, %s, %s)\n", v.Version, commit, v.GoVersion, v.Platform)
		return err
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.Out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(b)
		return err
	default:
		return fmt.Errorf("invalid -o %q for version: use json, yaml, or leave -o out", o.Output)
	}
}
