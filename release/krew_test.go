package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/krew"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

// The real tools, built from the module proxy by testlab/scripts/build-bins.sh (make deps).
const (
	krewVersion    = "v0.4.3"
	kubectlVersion = "v1.34.4"
	testVersion    = "v1.2.3"
	testCommit     = "0123456789abcdef0123456789abcdef01234567"
)

func cachedTool(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(controlplane.CacheDir(), "bin", dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built: run `make deps` (or testlab/scripts/build-bins.sh krew node): %v", name, err)
	}
	return p
}

// run runs a tool with exactly env (no inherited proxy, kubeconfig or krew settings).
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{}, env...) // never nil: nil would inherit this process's environment
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func validateManifest(t *testing.T, path string, env []string, args ...string) (string, error) {
	t.Helper()
	return run(t, env, cachedTool(t, "krew-"+krewVersion, "validate-krew-manifest"), append([]string{"-manifest", path}, args...)...)
}

func writeManifest(t *testing.T, dir string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, ManifestFile)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKrewValidatesManifest: krew's validate-krew-manifest accepts the template rendered for every
// release platform (structure, selectors, no overlap; archives are installed in
// TestReleaseKrewInstall) and rejects what krew would reject.
func TestKrewValidatesManifest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds krew: not under -short (make unit)")
	}
	b, arts := allPlatformsManifest(t, testVersion)
	out, err := validateManifest(t, writeManifest(t, t.TempDir(), b), nil, "-skip-install")
	if err != nil {
		t.Fatalf("validate-krew-manifest: %v\n%s", err, out)
	}
	for _, want := range []string{"structural validation OK", "all spec.platform[] items are used", "no overlapping spec.platform[].selector"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate-krew-manifest output lacks %q:\n%s", want, out)
		}
	}

	bad := map[string]ManifestData{
		"`sha256` value":                 NewManifestData(testVersion, DefaultDownloadBase, []Artifact{{Platform: Platform{"linux", "amd64"}, SHA256: "0"}}),
		"overlapping platform selectors": NewManifestData(testVersion, DefaultDownloadBase, []Artifact{arts[0], arts[0]}),
		"failed to parse plugin version": NewManifestData("1.2.3", DefaultDownloadBase, arts[:1]),
		"doesn't match any supported platforms": NewManifestData(testVersion, DefaultDownloadBase,
			[]Artifact{{Platform: Platform{"plan9", "amd64"}, SHA256: arts[0].SHA256}}),
	}
	for want, data := range bad {
		b, err := RenderManifest(krew.ManifestTemplate, data)
		if err != nil {
			t.Fatal(err)
		}
		out, err := validateManifest(t, writeManifest(t, t.TempDir(), b), nil, "-skip-install")
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("validate-krew-manifest on a manifest with %q: %v\n%s", want, err, out)
		}
	}
}

// TestReleaseKrewInstall builds a release for this host's platform twice (same bytes), installs it
// with the real krew into a temporary KREW_ROOT, and runs `kubectl isoobs version` through the
// real kubectl's plugin discovery.
func TestReleaseKrewInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds krew and kubectl: not under -short (make unit)")
	}
	krewBin := cachedTool(t, "krew-"+krewVersion, "krew")
	kubectl := cachedTool(t, "k8s-node-"+kubectlVersion, "kubectl")
	platform := Platform{runtime.GOOS, runtime.GOARCH}
	tmp := t.TempDir()
	opts := func(out string) Options {
		return Options{RepoRoot: "..", Version: testVersion, Commit: testCommit, Date: testDate, Platforms: []Platform{platform},
			OutDir: out, ManifestTemplate: krew.ManifestTemplate,
			ImageDigest: "sha256:" + strings.Repeat("e", 64), ImageRepository: "ghcr.io/isoobs/isoobs-daemon"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// An archive from an earlier release in the output directory must not be published again.
	if err := os.MkdirAll(filepath.Join(tmp, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "a", "kubectl-isoobs_v0.0.9_linux_amd64.tar.gz"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := Build(ctx, opts(filepath.Join(tmp, "a")))
	if err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, filepath.Join(tmp, "a")); strings.Join(names, " ") != "checksums.txt isoobs.yaml "+ArchiveName(testVersion, platform) {
		t.Errorf("output directory holds %v", names)
	}
	t.Logf("release build for %s: %.1fs, archive %d bytes, binary %d bytes", platform, time.Since(start).Seconds(), res.Artifacts[0].Size, res.Artifacts[0].BinarySize)
	archive := res.Artifacts[0].Path
	if filepath.Base(archive) != "kubectl-isoobs_v1.2.3_"+platform.OS+"_"+platform.Arch+".tar.gz" {
		t.Errorf("archive %s", archive)
	}

	// Reproducible: a second build of the same input writes the same bytes.
	res2, err := Build(ctx, opts(filepath.Join(tmp, "b")))
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{archive, res2.Artifacts[0].Path}, {res.Checksums, res2.Checksums}, {res.Manifest, res2.Manifest}} {
		a, b := readFile(t, pair[0]), readFile(t, pair[1])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of one input", filepath.Base(pair[0]))
		}
	}

	// checksums.txt matches the archive on disk; the archive holds the plugin and LICENSE.
	data := readFile(t, archive)
	sum := sha256.Sum256(data)
	if got, want := string(readFile(t, res.Checksums)), hex.EncodeToString(sum[:])+"  "+filepath.Base(archive)+"\n"; got != want {
		t.Errorf("checksums.txt = %q, want %q", got, want)
	}
	_, entries := readArchive(t, data)
	if len(entries) != 2 || entries[0].name != "LICENSE" || entries[0].data != string(readFile(t, "../LICENSE")) ||
		entries[1].name != platform.Bin() || entries[1].mode != 0o755 || int64(len(entries[1].data)) != res.Artifacts[0].BinarySize {
		t.Errorf("archive entries: %d, first %q", len(entries), entries[0].name)
	}

	// The daemon image's digest is stamped in (deploy.DaemonImageDigest: install pins it).
	if !strings.Contains(entries[1].data, "sha256:"+strings.Repeat("e", 64)) {
		t.Error("the plugin binary does not carry the image digest")
	}

	// The release manifest (GitHub URIs) passes krew's validation.
	if out, err := validateManifest(t, res.Manifest, nil, "-skip-install"); err != nil {
		t.Fatalf("validate-krew-manifest %s: %v\n%s", res.Manifest, err, out)
	}

	// validate-krew-manifest's own install check (`kubectl krew install --manifest`, i.e. kubectl
	// finds krew as a plugin, downloads the archive, checks its sha256, looks for LICENSE) against
	// the same archive served locally: the machine has no route to GitHub.
	srv := httptest.NewServer(http.StripPrefix("/"+testVersion+"/", http.FileServer(http.Dir(filepath.Dir(archive)))))
	defer srv.Close()
	served, err := RenderManifest(krew.ManifestTemplate, NewManifestData(testVersion, srv.URL, res.Artifacts))
	if err != nil {
		t.Fatal(err)
	}
	pathDir := filepath.Join(tmp, "path")
	if err := os.MkdirAll(pathDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"kubectl": kubectl, "kubectl-krew": krewBin} {
		if err := os.Symlink(target, filepath.Join(pathDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := validateManifest(t, writeManifest(t, filepath.Join(tmp, "served"), served), []string{"PATH=" + pathDir})
	if err != nil || !strings.Contains(out, "all 1 spec.platforms installed fine") {
		t.Fatalf("validate-krew-manifest with install: %v\n%s", err, out)
	}

	// krew installs the release manifest with the local archive into a fresh KREW_ROOT.
	krewRoot := filepath.Join(tmp, "krew")
	home := filepath.Join(tmp, "home")
	env := []string{"HOME=" + home, "KREW_ROOT=" + krewRoot, "KREW_NO_UPGRADE_CHECK=1",
		"KUBECONFIG=" + filepath.Join(home, "no-kubeconfig"), "PATH=" + filepath.Join(krewRoot, "bin")}
	out, err = run(t, env, krewBin, "install", "--manifest="+res.Manifest, "--archive="+archive)
	if err != nil || !strings.Contains(out, "Installed plugin: isoobs") {
		t.Fatalf("krew install: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(krewRoot, "store", "isoobs", testVersion, "LICENSE")); err != nil {
		t.Errorf("LICENSE not installed: %v", err)
	}
	// The receipt is how `krew upgrade` later knows the installed version.
	if r := string(readFile(t, filepath.Join(krewRoot, "receipts", "isoobs.yaml"))); !strings.Contains(r, "version: "+testVersion) {
		t.Errorf("krew receipt:\n%s", r)
	}

	// The real kubectl finds it on PATH and runs it.
	out, err = run(t, env, kubectl, "version", "--client", "-o", "json")
	var kv struct {
		ClientVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"clientVersion"`
	}
	if err != nil || json.Unmarshal([]byte(out), &kv) != nil || kv.ClientVersion.GitVersion != kubectlVersion {
		t.Fatalf("kubectl version --client: %v\n%s", err, out)
	}
	out, err = run(t, env, kubectl, "plugin", "list")
	if want := filepath.Join(krewRoot, "bin", platform.Bin()); err != nil || !strings.Contains(out, want) {
		t.Errorf("kubectl plugin list: %v, want %s in\n%s", err, want, out)
	}
	out, err = run(t, env, kubectl, "isoobs", "version")
	want := "kubectl-isoobs v1.2.3 (commit 0123456789ab, built 2026-12-03T12:00:00Z, " + runtime.Version() + ", " + platform.String() + ")\n"
	if err != nil || out != want {
		t.Errorf("kubectl isoobs version = %q, %v\nwant %q", out, err, want)
	}
	out, err = run(t, env, kubectl, "isoobs", "version", "-o", "json")
	var v map[string]any
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v["version"] != testVersion || v["gitCommit"] != testCommit ||
		v["buildDate"] != "2026-12-03T12:00:00Z" || v["modified"] != nil {
		t.Errorf("kubectl isoobs version -o json: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}
