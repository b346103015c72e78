package plugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/isoobs/isoobs/hubble"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// LocalConfig is what --local hands to the in-process daemon engine.
type LocalConfig struct {
	NodeName   string
	CgroupRoot string
	Interval   time.Duration
	// RESTConfig resolves cgroups to pods; nil runs without pod names.
	RESTConfig *rest.Config
	// Hubble is where the engine finds Hubble's flows (default: the node-local socket).
	Hubble         hubble.ClientConfig
	HubbleDisabled bool
}

// LocalEngine starts the node daemon engine in this process and returns its
// gRPC service; stop detaches its probes and frees its maps.
type LocalEngine func(ctx context.Context, cfg LocalConfig) (svc isoobsv1.DaemonServer, stop func(), err error)

// startLocal runs the daemon engine in-process and reaches it over an
// in-memory gRPC connection, so --local takes the same client path as
// --daemon.
func (o *TopDNSOptions) startLocal(ctx context.Context) ([]top.Source, func(), error) {
	cfg := LocalConfig{NodeName: o.NodeName, CgroupRoot: o.CgroupRoot, Interval: o.Interval}
	cfg.Hubble, cfg.HubbleDisabled = o.Hubble.localHubble()
	if cfg.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			cfg.NodeName = h
		}
	}
	restConfig, why := o.usableRESTConfig(ctx)
	if restConfig == nil {
		lost := o.noKubeconfigLocal
		if lost == "" {
			lost = "showing cgroups without pod names; pass --kubeconfig to resolve pods"
		}
		fmt.Fprintf(o.ErrOut, "warning: no usable kubeconfig (%s): %s\n", why, lost)
		o.includeUnresolved = true
	}
	cfg.RESTConfig = restConfig

	svc, stopEngine, err := o.localEngine(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("--local: %w", err)
	}
	lis := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	isoobsv1.RegisterDaemonServer(server, svc)
	go func() { _ = server.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///local",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		server.Stop()
		stopEngine()
		return nil, nil, err
	}
	cleanup := func() {
		_ = conn.Close()
		server.Stop()
		stopEngine()
	}
	return []top.Source{{Name: "local:" + cfg.NodeName, Client: isoobsv1.NewDaemonClient(conn)}}, cleanup, nil
}

// usableRESTConfig returns the kubeconfig's REST config if its API server
// answers within a few seconds, else nil and why not.
func (o *TopDNSOptions) usableRESTConfig(ctx context.Context) (*rest.Config, string) {
	if o.ConfigFlags == nil {
		return nil, "no kubeconfig flags"
	}
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, err.Error()
	}
	probe := rest.CopyConfig(cfg)
	probe.Timeout = 5 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(probe)
	if err != nil {
		return nil, err.Error()
	}
	done := make(chan error, 1)
	go func() { _, err := dc.ServerVersion(); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			return nil, "API server at " + cfg.Host + " did not answer: " + err.Error()
		}
		return cfg, ""
	case <-ctx.Done():
		return nil, ctx.Err().Error()
	}
}

// defaultLocalEngine is the engine --local runs; tests swap in a fake.
var defaultLocalEngine LocalEngine = daemonEngine
