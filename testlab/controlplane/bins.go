package controlplane

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Versions of the lab components; they must match testlab/scripts/build-bins.sh.
const (
	K8sVersion  = "v1.34.4"
	EtcdVersion = "v3.6.16"
	KwokVersion = "v0.8.0"
)

// Binaries holds absolute paths of the control-plane programs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kwok string
	KwokStages                                          string // directory with kwok's kustomize/stage tree
}

// CacheDir is where build-bins.sh caches binaries: $ISOOBS_CACHE, else $XDG_CACHE_HOME/isoobs, else ~/.cache/isoobs.
func CacheDir() string {
	if d := os.Getenv("ISOOBS_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "isoobs")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "isoobs")
}

func cachedBinaries() Binaries {
	bin := filepath.Join(CacheDir(), "bin")
	k8s := filepath.Join(bin, "k8s-"+K8sVersion)
	kwok := filepath.Join(bin, "kwok-"+KwokVersion)
	return Binaries{
		Etcd:              filepath.Join(bin, "etcd-"+EtcdVersion, "etcd"),
		APIServer:         filepath.Join(k8s, "kube-apiserver"),
		ControllerManager: filepath.Join(k8s, "kube-controller-manager"),
		Scheduler:         filepath.Join(k8s, "kube-scheduler"),
		Kwok:              filepath.Join(kwok, "kwok"),
		KwokStages:        filepath.Join(kwok, "stages"),
	}
}

func (b Binaries) missing() []string {
	var out []string
	for _, p := range []string{b.Etcd, b.APIServer, b.ControllerManager, b.Scheduler, b.Kwok, b.KwokStages} {
		if _, err := os.Stat(p); err != nil {
			out = append(out, p)
		}
	}
	return out
}

// RepoRoot finds the isoobs checkout: $ISOOBS_REPO, else the directory holding go.mod above this
// source file (go test runs from the package dir), else above the working directory.
func RepoRoot() (string, error) {
	if d := os.Getenv("ISOOBS_REPO"); d != "" {
		return d, nil
	}
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				bytes.Contains(data, []byte("module github.com/isoobs/isoobs\n")) {
				return d, nil
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return "", fmt.Errorf("cannot find the isoobs repository (go.mod of github.com/isoobs/isoobs); set ISOOBS_REPO=/path/to/checkout")
}

var ensureMu sync.Mutex

// EnsureBinaries returns the cached binaries, building missing ones with testlab/scripts/build-bins.sh
// (a cold k8s build takes ~4 minutes, once per machine).
func EnsureBinaries() (Binaries, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	b := cachedBinaries()
	if len(b.missing()) == 0 {
		return b, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return b, err
	}
	script := filepath.Join(root, "testlab", "scripts", "build-bins.sh")
	cmd := exec.Command("bash", script, "etcd", "kwok", "k8s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return b, fmt.Errorf("building lab binaries with %s failed: %v\n%s", script, err, tail(out.String(), 40))
	}
	if m := b.missing(); len(m) > 0 {
		return b, fmt.Errorf("%s ran but these are still missing: %s (run it by hand to see why)", script, strings.Join(m, ", "))
	}
	return b, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
