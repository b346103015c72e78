package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Binary is one static Go build for an image.
type Binary struct {
	// Dir is where `go build` runs (inside the module of Package).
	Dir string
	// Package to build, e.g. ./cmd/isoobs-daemon.
	Package  string
	Platform v1.Platform
	// LDFlags, e.g. "-s -w -X ...".
	LDFlags string
	// Out is the binary's path; its directory is created.
	Out string
	// Go is the go command; "go" when empty.
	Go string
}

// BuildBinary runs `go build -trimpath -buildvcs=false` with CGO_ENABLED=0 for b.Platform (the
// daemon for its images, the plugin for release archives). No VCS
// stamp: it would change with untracked files in the checkout (the commit comes by LDFlags).
// GOARM64/GOAMD64 stay the toolchain's defaults (v8.0, v1): the binary runs on any CPU of its arch.
func BuildBinary(ctx context.Context, b Binary) error {
	if b.Go == "" {
		b.Go = "go"
	}
	if err := os.MkdirAll(filepath.Dir(b.Out), 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, b.Go, "build", "-trimpath", "-buildvcs=false", "-ldflags", b.LDFlags, "-o", b.Out, b.Package)
	cmd.Dir = b.Dir
	cmd.Env = append(withoutEnv(os.Environ(), "GOOS", "GOARCH", "GOARM", "GOARM64", "GOAMD64", "GO386", "CGO_ENABLED"),
		"CGO_ENABLED=0", "GOOS="+b.Platform.OS, "GOARCH="+b.Platform.Architecture)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %w\n%s", b.Package, b.Platform.OS, b.Platform.Architecture, err, out.String())
	}
	return nil
}

func withoutEnv(env []string, keys ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
