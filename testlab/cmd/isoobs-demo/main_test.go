package main

import (
	"os"
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestMain lets the test binary serve as the demo's in-pod helper (the TCP act starts
// os.Executable again with ISOOBS_DEMO_TCP set).
func TestMain(m *testing.M) {
	runDemoHelper()
	os.Exit(m.Run())
}

// TestDemo plays `make demo` once, shortened: it fails when the crawler is not ranked first
// within 10 s of its flood or when its queries are not counted exactly, and when top tcp does not
// count the crawler's connections and resets exactly or name the resetting pod as its top peer.
func TestDemo(t *testing.T) {
	needroot.Require(t, "the demo builds a lab and loads eBPF")
	testlab.HandleSignals()
	if err := run(3*time.Second, 6*time.Second, 3000, false, false); err != nil {
		t.Fatal(err)
	}
}
