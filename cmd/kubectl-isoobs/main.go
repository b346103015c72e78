// Command kubectl-isoobs is the isoobs kubectl plugin (`kubectl isoobs ...`).
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := plugin.NewRootCmd(streams).Execute(); err != nil {
		os.Exit(1)
	}
}
