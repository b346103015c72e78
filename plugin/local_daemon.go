//go:build linux

package plugin

import (
	"context"

	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// daemonEngine runs the real node daemon (eBPF probe, pod resolver,
// collector) in this process for --local. daemon.New's errors name the
// missing capability, BTF or cgroup root.
func daemonEngine(_ context.Context, cfg LocalConfig) (isoobsv1.DaemonServer, func(), error) {
	d, err := daemon.New(daemon.Config{
		NodeName:   cfg.NodeName,
		CgroupRoot: cfg.CgroupRoot,
		Interval:   cfg.Interval,
		RESTConfig: cfg.RESTConfig,
		Hubble:     cfg.Hubble,
		// A missing Hubble socket is not an error: Status says why it is not connected.
		HubbleDisabled: cfg.HubbleDisabled,
	})
	if err != nil {
		return nil, nil, err
	}
	// The engine outlives the request context only until stop is called.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx) // after cancel, its error only says it was cancelled
	}()
	stop := func() {
		cancel()
		<-done
		_ = d.Close()
	}
	return d.GRPCServer(), stop, nil
}
