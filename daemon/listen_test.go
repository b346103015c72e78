package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/isoobs/isoobs/cgroupv2"
)

func TestGRPCListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{":9967", "0.0.0.0:9967", "10.0.0.5:9967", "tcp://[::]:9967", "node-a.example:9967"} {
		cfg := Config{NodeName: "n", GRPCListen: []string{"unix:///run/x.sock", addr}}
		err := cfg.setDefaults()
		if err == nil || !strings.Contains(err.Error(), "--allow-unauthenticated-grpc") || !strings.Contains(err.Error(), "no authentication") {
			t.Errorf("%s: err = %v, want a refusal naming --allow-unauthenticated-grpc", addr, err)
		}
		cfg.AllowUnauthenticatedNetwork = true
		if err := cfg.setDefaults(); err != nil {
			t.Errorf("%s with AllowUnauthenticatedNetwork: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:9967", "tcp://127.0.0.2:1", "[::1]:9967", "localhost:9967", "unix:///run/isoobs/isoobs.sock"} {
		cfg := Config{NodeName: "n", GRPCListen: []string{addr}}
		if err := cfg.setDefaults(); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// testDaemon is a Daemon over a fake probe, observing the host's cgroup v2 root.
func testDaemon(t *testing.T, mod func(*Config)) *Daemon {
	t.Helper()
	root, err := cgroupv2.Detect()
	if err != nil {
		t.Skipf("no cgroup v2 root: %v", err)
	}
	cfg := Config{NodeName: "n", CgroupRoot: root, HubbleDisabled: true, source: newFakeSource()}
	mod(&cfg)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestUnixSocketMode0600WhateverTheUmask(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	sock := filepath.Join(t.TempDir(), "d.sock")
	d := testDaemon(t, func(c *Config) { c.GRPCListen = []string{"unix://" + sock} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.Stat(sock)
		if err == nil {
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("socket mode %v with umask 0, want 0600", st.Mode().Perm())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket never appeared: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A listener that fails stops every one started before it: Run returns with nothing left
// serving (the first socket refuses connections, the metrics port is free again).
func TestRunStopsWhatItStartedWhenAListenerFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := free.Addr().String()
	free.Close()
	sock := filepath.Join(t.TempDir(), "d.sock")

	for _, tc := range []struct {
		name    string
		grpc    []string
		metrics string
	}{
		{"second gRPC listener", []string{"unix://" + sock, busy.Addr().String()}, ""},
		{"metrics listener", []string{"unix://" + sock}, busy.Addr().String()},
	} {
		d := testDaemon(t, func(c *Config) { c.GRPCListen, c.MetricsListen = tc.grpc, tc.metrics })
		errc := make(chan error, 1)
		go func() { errc <- d.Run(context.Background()) }()
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
				t.Fatalf("%s: Run = %v, want the listen error", tc.name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Run did not return after a listener failed", tc.name)
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			t.Errorf("%s: the gRPC socket started before the failure still accepts connections after Run returned", tc.name)
		}
	}
	// A clean stop frees every listener too.
	d := testDaemon(t, func(c *Config) {
		c.GRPCListen, c.MetricsListen = []string{"unix://" + sock}, metricsAddr
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("clean run: %v", err)
	}
	if l, err := net.Listen("tcp", metricsAddr); err != nil {
		t.Errorf("metrics port still taken after Run returned: %v", err)
	} else {
		l.Close()
	}
}
