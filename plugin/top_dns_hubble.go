package plugin

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Sources accepted by --source.
var Sources = []string{"all", "ebpf", "hubble"}

// HubbleOptions are `top dns`'s --source and, with --local, where the in-process daemon finds
// Hubble (the hubble CLI's connection flags under a --hubble- prefix).
type HubbleOptions struct {
	Source string
	Server string
	TLS    hubble.TLSConfig

	source isoobsv1.Source
}

func addHubbleFlags(f *pflag.FlagSet, o *HubbleOptions) {
	if o.Source == "" {
		o.Source = "all"
	}
	f.StringVar(&o.Source, "source", o.Source, "Whose counts: all (the probe's, with Hubble's identity, policy denials and Hubble-only pods), ebpf or hubble")
	f.StringVar(&o.Server, "hubble-server", o.Server, "With --local: Hubble observer API to merge (default "+hubble.DefaultServer+"; host:port for Hubble Relay; off to skip)")
	f.BoolVar(&o.TLS.Enabled, "hubble-tls", o.TLS.Enabled, "With --local: use TLS to reach --hubble-server")
	f.StringSliceVar(&o.TLS.CAFiles, "hubble-tls-ca-cert", o.TLS.CAFiles, "With --local: CA certificate files that verify the Hubble server")
	f.StringVar(&o.TLS.CertFile, "hubble-tls-client-cert", o.TLS.CertFile, "With --local: client certificate for mTLS to Hubble")
	f.StringVar(&o.TLS.KeyFile, "hubble-tls-client-key", o.TLS.KeyFile, "With --local: client key for mTLS to Hubble")
	f.StringVar(&o.TLS.ServerName, "hubble-tls-server-name", o.TLS.ServerName, "With --local: name expected in the Hubble server certificate")
	f.BoolVar(&o.TLS.InsecureSkipVerify, "hubble-tls-insecure", o.TLS.InsecureSkipVerify, "With --local: do not verify the Hubble server certificate")
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
	usesHubbleFlags := o.Server != "" || o.TLS.Enabled || len(o.TLS.CAFiles) > 0 || o.TLS.CertFile != "" || o.TLS.KeyFile != "" || o.TLS.ServerName != "" || o.TLS.InsecureSkipVerify
	if usesHubbleFlags && !local {
		return fmt.Errorf("--hubble-server and --hubble-tls-* only apply with --local (a running daemon has its own --hubble-server); add --local or drop them")
	}
	if o.Server == "off" && o.source == isoobsv1.Source_SOURCE_HUBBLE {
		return fmt.Errorf("--source hubble with --hubble-server off shows nothing: drop one of them")
	}
	return nil
}

// localHubble is the in-process daemon's Hubble configuration.
func (o *HubbleOptions) localHubble() (hubble.ClientConfig, bool) {
	if o.Server == "off" {
		return hubble.ClientConfig{}, true
	}
	return hubble.ClientConfig{Server: o.Server, TLS: o.TLS}, false
}
