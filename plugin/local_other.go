//go:build !linux

package plugin

import (
	"context"
	"errors"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// daemonEngine: the eBPF probes run on Linux nodes only.
func daemonEngine(context.Context, LocalConfig) (isoobsv1.DaemonServer, func(), error) {
	return nil, nil, errors.New("--local runs eBPF probes and needs a Linux host; use --daemon ADDR to read a daemon on a node")
}
