// Package flags is the one definition of the Hubble connection flags: the hubble CLI's
// connection options (--server, --tls, --tls-ca-cert-files, ...) under a --hubble- prefix.
// The daemon (cmd/isoobs-daemon) and `kubectl isoobs top dns --local` register the same set,
// and --hubble-server off is parsed here, once.
package flags

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/isoobs/isoobs/hubble"
)

// Off is the --hubble-server value that runs without Hubble.
const Off = "off"

// Hubble holds the Hubble connection flags.
type Hubble struct {
	// Server is unix:///path, host:port, or Off; empty means hubble.DefaultServer.
	Server string
	TLS    hubble.TLSConfig
}

// AddFlags registers --hubble-server and --hubble-tls-* on f, with h's values as defaults.
// usagePrefix starts each help text (e.g. "With --local: "; "" for the daemon).
func (h *Hubble) AddFlags(f *pflag.FlagSet, usagePrefix string) {
	server := "Hubble observer API to merge flows from: unix:///path, host:port (Hubble Relay, e.g. hubble-relay.kube-system.svc:80) or " + Off
	if h.Server == "" {
		server += " (default " + hubble.DefaultServer + ")"
	}
	f.StringVar(&h.Server, "hubble-server", h.Server, usagePrefix+server)
	f.BoolVar(&h.TLS.Enabled, "hubble-tls", h.TLS.Enabled, usagePrefix+"use TLS to reach --hubble-server")
	f.StringSliceVar(&h.TLS.CAFiles, "hubble-tls-ca-cert", h.TLS.CAFiles, usagePrefix+"CA certificate files that verify the Hubble server (default: system roots)")
	f.StringVar(&h.TLS.CertFile, "hubble-tls-client-cert", h.TLS.CertFile, usagePrefix+"client certificate for mTLS to Hubble")
	f.StringVar(&h.TLS.KeyFile, "hubble-tls-client-key", h.TLS.KeyFile, usagePrefix+"client key for mTLS to Hubble")
	f.StringVar(&h.TLS.ServerName, "hubble-tls-server-name", h.TLS.ServerName, usagePrefix+"name expected in the Hubble server certificate (e.g. *.default.hubble-grpc.cilium.io)")
	f.BoolVar(&h.TLS.InsecureSkipVerify, "hubble-tls-insecure", h.TLS.InsecureSkipVerify, usagePrefix+"do not verify the Hubble server certificate")
}

// Disabled reports whether --hubble-server is off (case and surrounding spaces ignored).
func (h Hubble) Disabled() bool {
	return strings.EqualFold(strings.TrimSpace(h.Server), Off)
}

// Given reports whether any of the flags holds a value (a server, off included, or TLS).
func (h Hubble) Given() bool {
	t := h.TLS
	return h.Server != "" || t.Enabled || len(t.CAFiles) > 0 || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// ClientConfig is the Hubble client's configuration, and whether Hubble is off (then the
// configuration is empty). An empty Server stays empty: the client defaults it.
func (h Hubble) ClientConfig() (cfg hubble.ClientConfig, disabled bool) {
	if h.Disabled() {
		return hubble.ClientConfig{}, true
	}
	return hubble.ClientConfig{Server: strings.TrimSpace(h.Server), TLS: h.TLS}, false
}
