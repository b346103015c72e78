package main

import (
	"testing"
	"time"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// TestDemo plays `make demo` once, shortened: it fails when the crawler is not ranked first
// within 10 s of its flood or when its queries are not counted exactly, as the demo does.
func TestDemo(t *testing.T) {
	needroot.Require(t, "the demo builds a lab and loads eBPF")
	testlab.HandleSignals()
	if err := run(3*time.Second, 6*time.Second, 3000, false, false); err != nil {
		t.Fatal(err)
	}
}
