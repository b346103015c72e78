// Package release builds what a kubectl-isoobs release publishes (`make release`):
//
//	kubectl-isoobs_<version>_<os>_<arch>.tar.gz  the plugin (kubectl-isoobs[.exe]) and LICENSE
//	checksums.txt                                 sha256sum lines for every archive
//	isoobs.yaml                                   the krew manifest (krew/isoobs.yaml.tmpl)
//
// Every byte is a function of the sources, the Go toolchain and Options: the binaries are built
// with -trimpath and without VCS stamping (version, commit and date come from Options), and the
// archives have sorted entries owned by 0:0, dated Options.Date, in a gzip stream without name
// or time, so two builds of one commit give the same checksums.
package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/isoobs/isoobs/buildinfo"
	"github.com/isoobs/isoobs/release/image"
)

// File names and locations of a release.
const (
	BinaryName    = "kubectl-isoobs"
	ChecksumsFile = "checksums.txt"
	// ManifestFile must be <plugin name>.yaml: krew's validate-krew-manifest checks it.
	ManifestFile = "isoobs.yaml"
	// DefaultDownloadBase is where the archives are published, one directory per version.
	DefaultDownloadBase = "https://github.com/isoobs/isoobs/releases/download"
	// Package is the plugin's main package.
	Package = "./cmd/kubectl-isoobs"
)

// Platform is one GOOS/GOARCH pair the plugin is released for.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Bin is the plugin's file name on p (krew needs the .exe on Windows).
func (p Platform) Bin() string {
	if p.OS == "windows" {
		return BinaryName + ".exe"
	}
	return BinaryName
}

// DefaultPlatforms are what `make release` builds. windows/amd64 is included because the cluster
// path (port-forward, gRPC) is portable; --local says it needs Linux (plugin/local_other.go).
var DefaultPlatforms = []Platform{
	{"linux", "amd64"}, {"linux", "arm64"},
	{"darwin", "amd64"}, {"darwin", "arm64"},
	{"windows", "amd64"},
}

// ParsePlatforms parses "linux/amd64,darwin/arm64".
func ParsePlatforms(s string) ([]Platform, error) {
	var out []Platform
	seen := map[Platform]bool{}
	for _, f := range strings.Split(s, ",") {
		goos, arch, ok := strings.Cut(strings.TrimSpace(f), "/")
		if !ok || goos == "" || arch == "" || strings.Contains(arch, "/") {
			return nil, fmt.Errorf("platform %q: want os/arch, e.g. linux/amd64", f)
		}
		p := Platform{goos, arch}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// ArchiveName is the archive of one platform: kubectl-isoobs_v0.1.0_linux_amd64.tar.gz.
func ArchiveName(version string, p Platform) string {
	return fmt.Sprintf("%s_%s_%s_%s.tar.gz", BinaryName, version, p.OS, p.Arch)
}

// semverTag is what krew accepts as spec.version and the image builder as a tag: vMAJOR.MINOR.PATCH
// with an optional pre-release, no build metadata ("+" is not allowed in image tags).
var semverTag = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// ValidVersion says whether v can name a release.
func ValidVersion(v string) error {
	if !semverTag.MatchString(v) {
		return fmt.Errorf("version %q is not a release version: use vMAJOR.MINOR.PATCH[-PRERELEASE], e.g. VERSION=v0.1.0", v)
	}
	return nil
}

var hexCommit = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// Options of Build.
type Options struct {
	// RepoRoot is the module's root (holding cmd/kubectl-isoobs and LICENSE).
	RepoRoot string
	// Version (vX.Y.Z), Commit (full hash) and Date (the commit's time) are stamped into the
	// plugin (package buildinfo); Date also dates the archive entries.
	Version string
	Commit  string
	Date    time.Time
	// Platforms to build; DefaultPlatforms when empty. The manifest lists exactly these.
	Platforms []Platform
	// OutDir receives the archives, checksums.txt and isoobs.yaml; existing ones are replaced and
	// archives not part of this release removed.
	OutDir string
	// ImageDigest (sha256:<hex>, what `make image` wrote to dist/image/index-digest) is stamped as
	// deploy.DaemonImageDigest, with deploy.DaemonImageRepository = ImageRepository and
	// deploy.DaemonImageTag = Version, so `kubectl isoobs install` pins this release's daemon
	// image (as `make build` does). Empty: the chart's default image reference.
	ImageDigest     string
	ImageRepository string
	// DownloadBase is the URI prefix of the archives; DefaultDownloadBase when empty.
	// The URIs are <DownloadBase>/<Version>/<archive>.
	DownloadBase string
	// ManifestTemplate is the krew manifest template (krew.ManifestTemplate).
	ManifestTemplate string
	// Go is the go command; "go" when empty.
	Go string
	// Log, when set, gets a line per step.
	Log func(format string, args ...any)
}

// Artifact is one platform's archive.
type Artifact struct {
	Platform   Platform
	Path       string // the archive's path under OutDir
	SHA256     string // hex
	Size       int64  // archive bytes
	BinarySize int64  // the plugin binary's bytes
}

// Result says what Build wrote.
type Result struct {
	Artifacts []Artifact
	Checksums string // path of checksums.txt
	Manifest  string // path of isoobs.yaml
}

var imageDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (o *Options) defaults() error {
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.DownloadBase == "" {
		o.DownloadBase = DefaultDownloadBase
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.RepoRoot == "" || o.OutDir == "" || o.ManifestTemplate == "" {
		return fmt.Errorf("release: RepoRoot, OutDir and ManifestTemplate are required")
	}
	if err := ValidVersion(o.Version); err != nil {
		return err
	}
	if !hexCommit.MatchString(o.Commit) {
		return fmt.Errorf("release: commit %q is not a full git hash", o.Commit)
	}
	if o.Date.IsZero() {
		return fmt.Errorf("release: Date is required (the commit's time), so builds are reproducible")
	}
	if o.ImageDigest != "" && !imageDigest.MatchString(o.ImageDigest) {
		return fmt.Errorf("release: image digest %q is not sha256:<64 hex>", o.ImageDigest)
	}
	if o.ImageDigest != "" && o.ImageRepository == "" {
		return fmt.Errorf("release: an image digest needs its repository (ImageRepository)")
	}
	return nil
}

// LDFlags are the linker flags of a release build: stripped, stamped with version, commit and
// date, and with the daemon image when ImageDigest is set.
func (o Options) LDFlags() string {
	flags := "-s -w " + buildinfo.LDFlags(o.Version, o.Commit, o.Date.UTC().Format(time.RFC3339))
	if o.ImageDigest != "" {
		// `kubectl isoobs install` pins the daemon image this release was built with (see
		// deploy/image.go; the tag is informative once a digest is set).
		flags += " -X github.com/isoobs/isoobs/deploy.DaemonImageRepository=" + o.ImageRepository +
			" -X github.com/isoobs/isoobs/deploy.DaemonImageTag=" + o.Version +
			" -X github.com/isoobs/isoobs/deploy.DaemonImageDigest=" + o.ImageDigest
	}
	return flags
}

// Build compiles the plugin for every platform and writes the archives, checksums.txt and the
// krew manifest into OutDir.
func Build(ctx context.Context, o Options) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	license, err := os.ReadFile(filepath.Join(o.RepoRoot, "LICENSE"))
	if err != nil {
		return Result{}, fmt.Errorf("release: the archives carry LICENSE: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Result{}, err
	}
	tmp, err := os.MkdirTemp(o.OutDir, ".build-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)

	var res Result
	for _, p := range o.Platforms {
		bin := filepath.Join(tmp, p.OS+"-"+p.Arch, p.Bin())
		start := time.Now()
		if err := BuildBinary(ctx, o, p, bin); err != nil {
			return Result{}, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return Result{}, err
		}
		var archive bytes.Buffer
		err = WriteArchive(&archive, o.Date, []ArchiveFile{
			{Name: p.Bin(), Mode: 0o755, Data: data},
			{Name: "LICENSE", Mode: 0o644, Data: license},
		})
		if err != nil {
			return Result{}, err
		}
		a := Artifact{Platform: p, Path: filepath.Join(o.OutDir, ArchiveName(o.Version, p)),
			SHA256: sha256Hex(archive.Bytes()), Size: int64(archive.Len()), BinarySize: int64(len(data))}
		if err := writeFileAtomic(a.Path, archive.Bytes()); err != nil {
			return Result{}, err
		}
		o.Log("%s: %s (%.1f MiB, binary %.1f MiB) in %.1fs", p, filepath.Base(a.Path),
			float64(a.Size)/(1<<20), float64(a.BinarySize)/(1<<20), time.Since(start).Seconds())
		res.Artifacts = append(res.Artifacts, a)
	}

	// Archives of another version or platform left from an earlier run would be published with
	// this one (docs/releasing.md uploads the whole directory) without being in checksums.txt.
	old, err := filepath.Glob(filepath.Join(o.OutDir, BinaryName+"_*.tar.gz"))
	if err != nil {
		return Result{}, err
	}
	for _, path := range old {
		if !slices.ContainsFunc(res.Artifacts, func(a Artifact) bool { return a.Path == path }) {
			o.Log("removing %s (not part of this release)", filepath.Base(path))
			if err := os.Remove(path); err != nil {
				return Result{}, err
			}
		}
	}

	res.Checksums = filepath.Join(o.OutDir, ChecksumsFile)
	if err := writeFileAtomic(res.Checksums, Checksums(res.Artifacts)); err != nil {
		return Result{}, err
	}
	manifest, err := RenderManifest(o.ManifestTemplate, NewManifestData(o.Version, o.DownloadBase, res.Artifacts))
	if err != nil {
		return Result{}, err
	}
	res.Manifest = filepath.Join(o.OutDir, ManifestFile)
	if err := writeFileAtomic(res.Manifest, manifest); err != nil {
		return Result{}, err
	}
	return res, nil
}

// BuildBinary builds the plugin for p into out: static (CGO_ENABLED=0), -trimpath, no VCS
// stamp (-buildvcs=false: the stamp would record the work tree's state, not Options), default
// GOAMD64/GOARM64 so it runs on any CPU of the arch.
func BuildBinary(ctx context.Context, o Options, p Platform, out string) error {
	out, err := filepath.Abs(out) // go build runs in RepoRoot
	if err != nil {
		return err
	}
	return image.BuildBinary(ctx, image.Binary{Dir: o.RepoRoot, Package: Package, Platform: v1.Platform{OS: p.OS, Architecture: p.Arch},
		LDFlags: o.LDFlags(), Out: out, Go: o.Go})
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// writeFileAtomic replaces path, so a failed release never leaves a half-written archive.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
