// Package needroot is the one gate for tests that need root (eBPF, network namespaces, cgroups,
// the lab): they skip under `go test -short` (make unit) and fail otherwise when not root, so a
// `make test` run as a normal user cannot pass by skipping. It imports only the standard library
// so that any test can use it without pulling in the lab.
package needroot

import (
	"os"
	"testing"
)

// Require skips the test under -short and fails it when the process is not root.
// why says what needs root (e.g. "the lab builds network namespaces"); it may be empty.
func Require(t testing.TB, why string) {
	t.Helper()
	if why != "" {
		why = " (" + why + ")"
	}
	if testing.Short() {
		t.Skip("needs root" + why + ": skipped under -short (make unit)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root" + why + ": run `sudo make test`, or `make unit` for the tests that don't")
	}
}
