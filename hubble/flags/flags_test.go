package flags

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/isoobs/isoobs/hubble"
)

func TestFlagsParseOnce(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		server   string
		disabled bool
		given    bool
	}{
		{nil, "", false, false},
		{[]string{"--hubble-server", "off"}, "", true, true},
		{[]string{"--hubble-server", " OFF "}, "", true, true},
		{[]string{"--hubble-server", "hubble-relay.kube-system.svc:80", "--hubble-tls", "--hubble-tls-server-name", "ui.hubble-relay.cilium.io"}, "hubble-relay.kube-system.svc:80", false, true},
		{[]string{"--hubble-tls-insecure"}, "", false, true},
	} {
		var h Hubble
		f := pflag.NewFlagSet("t", pflag.ContinueOnError)
		h.AddFlags(f, "With --local: ")
		if err := f.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, disabled := h.ClientConfig()
		if cfg.Server != tc.server || disabled != tc.disabled || h.Disabled() != tc.disabled || h.Given() != tc.given {
			t.Errorf("%v: config %+v disabled %v given %v", tc.args, cfg, disabled, h.Given())
		}
		if len(tc.args) > 2 && (!cfg.TLS.Enabled || cfg.TLS.ServerName != "ui.hubble-relay.cilium.io") {
			t.Errorf("%v: TLS %+v", tc.args, cfg.TLS)
		}
	}
}

func TestFlagsDefaultsAndHelp(t *testing.T) {
	// The daemon presets the default server: pflag shows it; the plugin leaves it empty and the
	// help names the default.
	daemon := Hubble{Server: hubble.DefaultServer}
	f := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
	daemon.AddFlags(f, "")
	if got := f.Lookup("hubble-server").DefValue; got != hubble.DefaultServer {
		t.Errorf("daemon default %q", got)
	}
	var plugin Hubble
	g := pflag.NewFlagSet("plugin", pflag.ContinueOnError)
	plugin.AddFlags(g, "With --local: ")
	if u := g.Lookup("hubble-server").Usage; !strings.HasPrefix(u, "With --local: Hubble observer API") || !strings.Contains(u, "(default "+hubble.DefaultServer+")") {
		t.Errorf("plugin usage %q", u)
	}
	for _, name := range []string{"hubble-tls", "hubble-tls-ca-cert", "hubble-tls-client-cert", "hubble-tls-client-key", "hubble-tls-server-name", "hubble-tls-insecure"} {
		if f.Lookup(name) == nil || g.Lookup(name) == nil {
			t.Errorf("missing --%s", name)
		}
	}
}
