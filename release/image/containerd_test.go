package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/isoobs/isoobs/testlab/needroot"
)

// helloSrc is a static program that proves it ran and that its root is read-only.
const helloSrc = `package main

import (
	"fmt"
	"os"
)

func main() {
	err := os.WriteFile("/etc/x", nil, 0o644)
	fmt.Printf("hello from %s; write to /etc: %v\n", os.Args[0], err)
}
`

// TestContainerdImportsByDigest imports an OCI archive written by WriteOCIArchive into a private
// containerd (Debian's, the one the lab's real node runs) and runs it by the digest reference the
// chart pins, with a read-only root: the names in index.json are what lets the kubelet find the
// image without a pull.
func TestContainerdImportsByDigest(t *testing.T) {
	for _, bin := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make deps installs it)", bin)
		}
	}
	needroot.Require(t, "containerd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "isoobs-image-ctrd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	hello := filepath.Join(dir, "hello")
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(helloSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := BuildBinary(ctx, Binary{Dir: dir, Package: ".", Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, LDFlags: "-s -w", Out: hello}); err != nil {
		t.Fatal(err)
	}
	img, err := FromFiles(Spec{
		Platform:   v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Files:      []File{{Path: "/usr/local/bin/hello", Source: hello, Mode: 0o755}},
		Entrypoint: []string{"/usr/local/bin/hello"},
		Created:    testDate,
	})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := Index(img)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	const tag = "example.test/isoobs/hello:v1"
	ref := "example.test/isoobs/hello@" + d.String()
	archive := filepath.Join(dir, "hello.oci.tar")
	if err := WriteOCIArchive(archive, idx, tag); err != nil {
		t.Fatal(err)
	}

	// containerd 1.6 and its shim put fifos, shim sockets and runc state under /run/containerd
	// whatever the config says: remove the (empty) directories this test made there.
	var made []string
	for _, d := range []string{"/run/containerd", "/run/containerd/fifo", "/run/containerd/s", "/run/containerd/runc", "/run/containerd/runc/k8s.io"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			made = append(made, d)
		}
	}
	t.Cleanup(func() {
		for _, d := range slices.Backward(made) {
			os.Remove(d) // only if empty
		}
	})

	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.runtime.v2.task"]
  state = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"), filepath.Join(dir, "state", "tasks"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	ctrd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	ctrd.Stdout, ctrd.Stderr = &logs, &logs
	if err := ctrd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctrd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- ctrd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			ctrd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", logs.String())
		}
	})
	ctr := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := ctr("version"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if out, err := ctr("images", "import", archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		t.Fatal(err, out)
	}
	names := strings.Fields(out)
	slices.Sort(names)
	if want := []string{tag, ref}; !slices.Equal(names, want) {
		t.Errorf("images after import %q, want %q", names, want)
	}
	out, err = ctr("run", "--rm", "--read-only", ref, "isoobs-image-test")
	if err != nil {
		t.Fatalf("ctr run %s: %v\n%s", ref, err, out)
	}
	if want := "hello from /usr/local/bin/hello; write to /etc: open /etc/x: read-only file system\n"; out != want {
		t.Errorf("the container said %q, want %q", out, want)
	}
}
