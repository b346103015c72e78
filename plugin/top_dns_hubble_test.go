package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestTopDNSHubbleFlagValidation(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--daemon", ":1", "--source", "tetragon"}, `invalid --source "tetragon": use all, ebpf, hubble`},
		{[]string{"--daemon", ":1", "--hubble-server", "relay:80"}, "--hubble-server and --hubble-tls-* only apply with --local"},
		{[]string{"--daemon", ":1", "--hubble-tls"}, "only apply with --local"},
		{[]string{"--local", "--hubble-server", "off", "--source", "hubble"}, "shows nothing"},
	} {
		_, _, err := runCmd(t, append([]string{"top", "dns"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}

// --source reaches the daemon's request; --hubble-* reach the in-process engine.
func TestTopDNSLocalHubbleOptions(t *testing.T) {
	srv := &fakedaemon.Server{Frame: crawlerFrame}
	var gotCfg LocalConfig
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	flags := genericclioptions.NewConfigFlags(false)
	missing := t.TempDir() + "/no-kubeconfig"
	flags.KubeConfig = &missing
	o := NewTopDNSOptions(flags, streams)
	o.localEngine = func(_ context.Context, cfg LocalConfig) (isoobsv1.DaemonServer, func(), error) {
		gotCfg = cfg
		srv.Node = cfg.NodeName
		return srv, func() {}, nil
	}
	o.Local, o.Once, o.Output, o.Interval = true, true, "json", 100*time.Millisecond
	o.Hubble = HubbleOptions{Source: "hubble"}
	o.Hubble.Server = "hubble-relay.kube-system.svc:80"
	o.Hubble.TLS.Enabled, o.Hubble.TLS.ServerName = true, "ui.hubble-relay.cilium.io"
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if gotCfg.Hubble.Server != "hubble-relay.kube-system.svc:80" || !gotCfg.Hubble.TLS.Enabled || gotCfg.Hubble.TLS.ServerName != "ui.hubble-relay.cilium.io" || gotCfg.HubbleDisabled {
		t.Errorf("engine hubble config %+v disabled %v", gotCfg.Hubble, gotCfg.HubbleDisabled)
	}
	if got := srv.Requests()[0].GetSource(); got != isoobsv1.Source_SOURCE_HUBBLE {
		t.Errorf("request source %v", got)
	}
}
