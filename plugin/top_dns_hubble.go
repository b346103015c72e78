package plugin

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/isoobs/isoobs/hubble"
	"github.com/isoobs/isoobs/hubble/flags"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Sources accepted by --source.
var Sources = []string{"all", "ebpf", "hubble"}

// HubbleOptions are `top dns`'s --source and, with --local, where the in-process daemon finds
// Hubble: the daemon's own --hubble-server and --hubble-tls-* flags (hubble/flags).
type HubbleOptions struct {
	Source string
	flags.Hubble

	source isoobsv1.Source
}

func addHubbleFlags(f *pflag.FlagSet, o *HubbleOptions) {
	if o.Source == "" {
		o.Source = "all"
	}
	f.StringVar(&o.Source, "source", o.Source, "Whose counts: all (the probe's, with Hubble's identity, policy denials and Hubble-only pods), ebpf or hubble")
	o.Hubble.AddFlags(f, "With --local: ")
}

func (o *HubbleOptions) validate(local bool) error {
	switch strings.ToLower(strings.TrimSpace(o.Source)) {
	case "", "all":
		o.source = isoobsv1.Source_SOURCE_ALL
	case "ebpf":
		o.source = isoobsv1.Source_SOURCE_EBPF
	case "hubble":
		o.source = isoobsv1.Source_SOURCE_HUBBLE
	default:
		return fmt.Errorf("invalid --source %q: use %s", o.Source, strings.Join(Sources, ", "))
	}
	if o.Given() && !local {
		return fmt.Errorf("--hubble-server and --hubble-tls-* only apply with --local (a running daemon has its own --hubble-server); add --local or drop them")
	}
	if o.Disabled() && o.source == isoobsv1.Source_SOURCE_HUBBLE {
		return fmt.Errorf("--source hubble with --hubble-server off shows nothing: drop one of them")
	}
	return nil
}

// localHubble is the in-process daemon's Hubble configuration, and whether Hubble is off.
func (o *HubbleOptions) localHubble() (hubble.ClientConfig, bool) {
	return o.ClientConfig()
}
