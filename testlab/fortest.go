package testlab

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab/needroot"
)

var signalOnce sync.Once

// HandleSignals makes SIGINT/SIGTERM close every open lab before the process exits (status 130
// or 143), so an interrupted `go test` or isoobs-lab leaves no netns, veth or cgroup behind.
// Child processes die anyway (Pdeathsig); kernel objects would not.
func HandleSignals() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			CloseAll()
			code := 130
			if sig == syscall.SIGTERM {
				code = 143
			}
			os.Exit(code)
		}()
	})
}

// StartForTest starts a lab for a Go test: skips when not root, fails the test on error, closes
// the lab in t.Cleanup (also after a failure) and on SIGINT/SIGTERM. Adopter problems go to t.Logf.
func StartForTest(t testing.TB, opts Options) *Lab {
	t.Helper()
	needroot.Require(t, "the lab: network namespaces, veths, cgroups")
	HandleSignals()
	if opts.Logf == nil {
		var mu sync.Mutex
		done := false
		t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
		opts.Logf = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			if !done { // t.Logf after the test ends panics
				t.Logf(format, args...)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lab, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("closing lab %s: %v", lab.ID, err)
		}
	})
	return lab
}

// WaitFor polls check every 250 ms until it returns nil, and fails the test with its last error
// after timeout.
func WaitFor(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
