// Package image builds container images from local static binaries with go-containerregistry:
// no Docker daemon, no base image, nothing fetched. Build makes the isoobs daemon's
// multi-platform image (what `make image` runs); FromFiles, Index and the Write functions make
// any other image the same way (the lab's pause and workload images).
//
// Build writes under Options.OutDir (dist/image for `make image`):
//
//	index-digest                          the image index digest, "sha256:<hex>\n" (the chart pins it)
//	version                               Options.Version, "<version>\n" (the tag of that digest)
//	oci/                                  OCI image layout holding the image index
//	isoobs-daemon.oci.tar                 the same layout as one tar, for `ctr -n k8s.io images import`
//	isoobs-daemon-linux-amd64.docker.tar  docker-archive of one platform, tagged REPOSITORY:VERSION
//	isoobs-daemon-linux-arm64.docker.tar
//	bin/linux-amd64/isoobs-daemon         the static binaries inside the images
//	bin/linux-arm64/isoobs-daemon
//
// index.json of the layout (and of the tar) lists the index twice: as REPOSITORY:VERSION and as
// REPOSITORY@sha256:<index digest>, so a plain `ctr images import` creates both names and the
// kubelet finds the chart's digest reference without pulling.
//
// Every byte is a function of the sources, the Go toolchain and Options: entries are sorted,
// owned by 0:0 and dated Options.Date, so two builds of one commit give the same digests.
//
// Use from Go (the lab's real node):
//
//	res, err := image.Build(ctx, image.Options{RepoRoot: root, Version: "v0.1.0", Commit: sha,
//		Date: commitTime, Platforms: []string{"linux/amd64"}, OutDir: dir})
//	// ctr -n k8s.io images import res.OCIArchive: creates res.Tag and res.Reference
//
//	img, err := image.FromFiles(image.Spec{Platform: v1.Platform{OS: "linux", Architecture: "amd64"},
//		Files: []image.File{{Path: "/pause", Source: bin, Mode: 0o755}}, Entrypoint: []string{"/pause"}, Created: t})
//	err = image.WriteDockerArchive("pause.tar", "localhost/pause:3.10", img) // or Index + WriteOCIArchive
package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/isoobs/isoobs/buildinfo"
)

// DefaultRepository is where released daemon images go (the chart's image.repository).
const DefaultRepository = "ghcr.io/isoobs/isoobs-daemon"

// DefaultPlatforms are the platforms Build makes when Options.Platforms is empty.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

// File names Build writes under Options.OutDir.
const (
	DigestFile  = "index-digest"
	VersionFile = "version"
	LayoutDir   = "oci"
	OCIArchive  = "isoobs-daemon.oci.tar"
)

// DockerArchive is the docker-archive file name of one platform ("linux/arm64").
func DockerArchive(platform string) string {
	return "isoobs-daemon-" + strings.ReplaceAll(platform, "/", "-") + ".docker.tar"
}

// DaemonPath is the daemon binary's path in the image (the entrypoint).
const DaemonPath = "/usr/local/bin/isoobs-daemon"

// DaemonDirs are the empty directories of the daemon image: mount points of the chart's volumes
// (so nothing needs creating in a read-only root).
var DaemonDirs = []File{
	{Path: "/run/isoobs", Mode: 0o755 | os.ModeDir},    // the daemon's unix socket (hostPath)
	{Path: "/sys/fs/cgroup", Mode: 0o755 | os.ModeDir}, // cgroup tree (hostPath, read-only)
	// The directory of Hubble's socket only, never Cilium's run dir (docs/security.md).
	{Path: "/var/run/cilium/hubble-socket", Mode: 0o755 | os.ModeDir},
	{Path: "/var/run/secrets", Mode: 0o755 | os.ModeDir}, // the ServiceAccount token (projected)
	// /tmp (an emptyDir) is one of BaseFiles.
}

// Options of Build.
type Options struct {
	// RepoRoot is the module's root directory (holding cmd/isoobs-daemon).
	RepoRoot string
	// Version (a tag such as v0.1.0, or git describe), Commit (full hash) and Date (the commit's
	// time) are stamped into the binary (package buildinfo) and the OCI labels; Date also dates
	// every file and the config. Version must be a valid image tag.
	Version string
	Commit  string
	Date    time.Time
	// Repository names the images; DefaultRepository when empty.
	Repository string
	// Platforms as os/arch; DefaultPlatforms when empty.
	Platforms []string
	// OutDir receives the files listed in the package documentation; existing ones are replaced.
	OutDir string
	// Go is the go command; "go" when empty.
	Go string
	// Log, when set, gets a line per step.
	Log func(format string, args ...any)
}

// Result says what Build wrote.
type Result struct {
	IndexDigest string // sha256:<hex> of the image index
	Reference   string // Repository@IndexDigest, what the chart pins
	Tag         string // Repository:Version
	DigestFile  string // path of index-digest
	LayoutDir   string // path of the OCI layout directory
	OCIArchive  string // path of the OCI layout tar
	Images      []PlatformImage
}

// PlatformImage is one platform's image in the index.
type PlatformImage struct {
	Platform       string // os/arch
	ManifestDigest string // sha256:<hex>
	ConfigDigest   string
	// CompressedSize is what a pull transfers: manifest, config and the gzipped layer.
	CompressedSize int64
	DockerArchive  string // path of the docker-archive tar
	Binary         string // path of the static binary in the image
}

func (o *Options) defaults() error {
	if o.Repository == "" {
		o.Repository = DefaultRepository
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.RepoRoot == "" || o.OutDir == "" {
		return fmt.Errorf("image: RepoRoot and OutDir are required")
	}
	if o.Date.IsZero() {
		return fmt.Errorf("image: Date is required (the commit's time), so builds are reproducible")
	}
	if _, err := name.NewTag(o.Repository+":"+o.Version, name.StrictValidation); err != nil {
		return fmt.Errorf("image: %q:%q is not an image tag: %w", o.Repository, o.Version, err)
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	return nil
}

// Labels returns the OCI annotations the daemon image's config carries.
func (o Options) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":      "https://github.com/isoobs/isoobs",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Commit,
		"org.opencontainers.image.created":     o.Date.UTC().Format(time.RFC3339),
		"org.opencontainers.image.title":       "isoobs-daemon",
		"org.opencontainers.image.description": "isoobs node daemon: per-node eBPF DNS/TCP observer serving the isoobs gRPC API and Prometheus metrics",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// Build compiles the daemon for every platform and writes its image index (see the package doc).
func Build(ctx context.Context, o Options) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	out, err := filepath.Abs(o.OutDir)
	if err != nil {
		return Result{}, err
	}
	ldflags := "-s -w " + buildinfo.LDFlags(o.Version, o.Commit, o.Date.UTC().Format(time.RFC3339))
	var (
		imgs []v1.Image
		res  Result
	)
	for _, p := range o.Platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return Result{}, fmt.Errorf("image: platform %q: %w", p, err)
		}
		bin := filepath.Join(out, "bin", plat.OS+"-"+plat.Architecture, "isoobs-daemon")
		o.Log("go build %s for %s", "./cmd/isoobs-daemon", p)
		if err := BuildBinary(ctx, Binary{Dir: o.RepoRoot, Package: "./cmd/isoobs-daemon", Platform: *plat, LDFlags: ldflags, Out: bin, Go: o.Go}); err != nil {
			return Result{}, err
		}
		img, err := FromFiles(Spec{
			Platform:   *plat,
			Files:      append([]File{{Path: DaemonPath, Source: bin, Mode: 0o755}}, DaemonDirs...),
			Entrypoint: []string{DaemonPath},
			User:       "0:0",
			Labels:     o.Labels(),
			Created:    o.Date,
			CreatedBy:  "isoobs-image " + o.Version,
		})
		if err != nil {
			return Result{}, fmt.Errorf("image: %s: %w", p, err)
		}
		imgs = append(imgs, img)
		res.Images = append(res.Images, PlatformImage{Platform: p, Binary: bin, DockerArchive: filepath.Join(out, DockerArchive(p))})
	}
	idx, err := Index(imgs...)
	if err != nil {
		return Result{}, err
	}
	d, err := idx.Digest()
	if err != nil {
		return Result{}, err
	}
	res.IndexDigest = d.String()
	res.Reference = o.Repository + "@" + d.String()
	res.Tag = o.Repository + ":" + o.Version
	res.DigestFile = filepath.Join(out, DigestFile)
	res.LayoutDir = filepath.Join(out, LayoutDir)
	res.OCIArchive = filepath.Join(out, OCIArchive)

	o.Log("writing %s", res.LayoutDir)
	if err := os.RemoveAll(res.LayoutDir); err != nil {
		return Result{}, err
	}
	if err := WriteOCILayout(res.LayoutDir, idx, res.Tag); err != nil {
		return Result{}, err
	}
	o.Log("writing %s", res.OCIArchive)
	if err := TarDir(res.LayoutDir, res.OCIArchive); err != nil {
		return Result{}, err
	}
	for i, img := range imgs {
		pi := &res.Images[i]
		o.Log("writing %s", pi.DockerArchive)
		if err := WriteDockerArchive(pi.DockerArchive, res.Tag, img); err != nil {
			return Result{}, err
		}
		md, err := img.Digest()
		if err != nil {
			return Result{}, err
		}
		cd, err := img.ConfigName()
		if err != nil {
			return Result{}, err
		}
		pi.ManifestDigest, pi.ConfigDigest = md.String(), cd.String()
		if pi.CompressedSize, err = CompressedSize(img); err != nil {
			return Result{}, err
		}
	}
	if err := writeFileAtomic(filepath.Join(out, VersionFile), []byte(o.Version+"\n")); err != nil {
		return Result{}, err
	}
	// Written last: a reader of index-digest finds every other file complete.
	if err := writeFileAtomic(res.DigestFile, []byte(res.IndexDigest+"\n")); err != nil {
		return Result{}, err
	}
	return res, nil
}

// CompressedSize is what pulling img transfers: manifest, config and compressed layers.
func CompressedSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
