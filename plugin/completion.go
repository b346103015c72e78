package plugin

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// KubectlCompleteScript is the executable kubectl (1.26 and later) runs to complete
// `kubectl isoobs ...`: it must be named kubectl_complete-isoobs and be on PATH. It asks this
// binary's cobra completion (__complete).
const KubectlCompleteScript = `#!/usr/bin/env sh
# kubectl (>= 1.26) completes "kubectl isoobs ..." through this file on PATH.
exec kubectl-isoobs __complete "$@"
`

const completionExample = `  # Completion of "kubectl isoobs ..." inside kubectl's own completion (kubectl 1.26+;
  # krew puts only kubectl-isoobs on PATH, so this file is made once by hand)
  kubectl isoobs completion kubectl > ~/.krew/bin/kubectl_complete-isoobs
  chmod +x ~/.krew/bin/kubectl_complete-isoobs

  # Completion of the kubectl-isoobs binary itself, for bash in this shell
  source <(kubectl isoobs completion bash)`

// NewCmdCompletion returns `kubectl isoobs completion kubectl|bash|zsh|fish|powershell`.
func NewCmdCompletion(streams genericiooptions.IOStreams) *cobra.Command {
	shells := []string{"kubectl", "bash", "zsh", "fish", "powershell"}
	return &cobra.Command{
		Use:   "completion kubectl|bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a shell completion script.

kubectl (1.26 and later) completes the arguments and flags of "kubectl isoobs ..."
(subcommands, --sort, --group-by, -o, --source, verify --component, ...) by running
an executable named kubectl_complete-isoobs from PATH: "completion kubectl" prints
it. Put it beside kubectl-isoobs (for krew: ~/.krew/bin) and make it executable.

bash, zsh, fish and powershell print cobra's script for the kubectl-isoobs
binary, for calling it directly as kubectl-isoobs.`,
		Example:               completionExample,
		ValidArgs:             shells,
		Args:                  cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		DisableFlagsInUseLine: true,
		SilenceUsage:          true,
		RunE: func(c *cobra.Command, args []string) error {
			return writeCompletion(c.Root(), args[0], streams.Out)
		},
	}
}

func writeCompletion(root *cobra.Command, shell string, w io.Writer) error {
	if shell == "kubectl" {
		_, err := io.WriteString(w, KubectlCompleteScript)
		return err
	}
	// The scripts are for the binary's own name (kubectl-isoobs), not the command's (isoobs).
	root.Use = "kubectl-isoobs"
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(w)
	}
	return fmt.Errorf("unknown shell %q: use kubectl, bash, zsh, fish or powershell", shell)
}
