package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ociArchiveNames returns the io.containerd.image.name of each index.json entry of an OCI tar.
func ociArchiveNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s has no index.json", path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "index.json" {
			continue
		}
		var idx v1.IndexManifest
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range idx.Manifests {
			names = append(names, m.Annotations["io.containerd.image.name"])
		}
		return names
	}
}

func testOptions(out string) Options {
	return Options{
		RepoRoot: "../..",
		Version:  "v0.0.0-test.1",
		Commit:   "0123456789abcdef0123456789abcdef01234567",
		Date:     testDate,
		OutDir:   out,
		Log:      func(string, ...any) {},
	}
}

// TestBuildReproducible builds the daemon image twice from this tree and compares every output
// byte for byte, then checks what the first build holds.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon for two platforms twice")
	}
	ctx := context.Background()
	dir1, dir2 := t.TempDir(), t.TempDir()
	r1, err := Build(ctx, testOptions(dir1))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Build(ctx, testOptions(dir2))
	if err != nil {
		t.Fatal(err)
	}
	if r1.IndexDigest != r2.IndexDigest || !strings.HasPrefix(r1.IndexDigest, "sha256:") || len(r1.IndexDigest) != 71 {
		t.Fatalf("index digests %s and %s", r1.IndexDigest, r2.IndexDigest)
	}
	for _, f := range []string{DigestFile, OCIArchive, DockerArchive("linux/amd64"), DockerArchive("linux/arm64"), "bin/linux-amd64/isoobs-daemon", "bin/linux-arm64/isoobs-daemon"} {
		b1, err1 := os.ReadFile(filepath.Join(dir1, f))
		b2, err2 := os.ReadFile(filepath.Join(dir2, f))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", f, err1, err2)
		}
		if len(b1) == 0 || !bytes.Equal(b1, b2) {
			t.Errorf("%s differs between two builds (%d and %d bytes)", f, len(b1), len(b2))
		}
	}
	if b, _ := os.ReadFile(r1.DigestFile); string(b) != r1.IndexDigest+"\n" {
		t.Errorf("%s holds %q, want %q", DigestFile, b, r1.IndexDigest+"\n")
	}
	if b, _ := os.ReadFile(filepath.Join(dir1, VersionFile)); string(b) != "v0.0.0-test.1\n" {
		t.Errorf("%s holds %q", VersionFile, b)
	}

	o := testOptions(dir1)
	if r1.Reference != DefaultRepository+"@"+r1.IndexDigest || r1.Tag != DefaultRepository+":"+o.Version {
		t.Errorf("reference %s, tag %s", r1.Reference, r1.Tag)
	}
	if names := ociArchiveNames(t, r1.OCIArchive); !slices.Equal(names, []string{r1.Tag, r1.Reference}) {
		t.Errorf("OCI archive names %v, want [%s %s]", names, r1.Tag, r1.Reference)
	}

	// The layout: one index of the two platforms.
	lp, err := layout.FromPath(r1.LayoutDir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 2 || tm.Manifests[0].Digest.String() != r1.IndexDigest || tm.Manifests[1].Digest.String() != r1.IndexDigest {
		t.Fatalf("index.json = %+v, want the index %s twice", tm.Manifests, r1.IndexDigest)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 || len(r1.Images) != 2 {
		t.Fatalf("index %s with %d manifests, %d results", im.MediaType, len(im.Manifests), len(r1.Images))
	}
	wantDirs := []string{"etc/", "run/", "run/isoobs/", "sys/", "sys/fs/", "sys/fs/cgroup/", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "var/", "var/run/", "var/run/cilium/", "var/run/cilium/hubble-socket/", "var/run/secrets/"}
	wantFiles := []string{"etc/group", "etc/nsswitch.conf", "etc/passwd", "usr/local/bin/isoobs-daemon"}
	for i, arch := range []string{"amd64", "arm64"} {
		desc := im.Manifests[i]
		pi := r1.Images[i]
		if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != arch || pi.Platform != "linux/"+arch {
			t.Errorf("manifest %d: platform %+v, result %s, want linux/%s", i, desc.Platform, pi.Platform, arch)
		}
		if desc.Digest.String() != pi.ManifestDigest {
			t.Errorf("linux/%s: manifest %s in the index, %s in the result", arch, desc.Digest, pi.ManifestDigest)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if size, _ := CompressedSize(img); size != pi.CompressedSize || size < 1<<20 {
			t.Errorf("linux/%s: compressed size %d, result %d", arch, size, pi.CompressedSize)
		}

		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != arch || !cf.Created.Time.Equal(testDate) {
			t.Errorf("linux/%s config: %s/%s created %s", arch, cf.OS, cf.Architecture, cf.Created.Time)
		}
		c := cf.Config
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/isoobs-daemon"}) || len(c.Cmd) != 0 || c.WorkingDir != "/" || c.User != "0:0" ||
			!slices.Equal(c.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) {
			t.Errorf("linux/%s config: %+v", arch, c)
		}
		wantLabels := map[string]string{
			"org.opencontainers.image.source":      "https://github.com/isoobs/isoobs",
			"org.opencontainers.image.version":     "v0.0.0-test.1",
			"org.opencontainers.image.revision":    "0123456789abcdef0123456789abcdef01234567",
			"org.opencontainers.image.created":     "2026-12-03T12:00:00Z",
			"org.opencontainers.image.title":       "isoobs-daemon",
			"org.opencontainers.image.description": "isoobs node daemon: per-node eBPF DNS/TCP observer serving the isoobs gRPC API and Prometheus metrics",
			"org.opencontainers.image.licenses":    "Apache-2.0",
		}
		if !maps.Equal(c.Labels, wantLabels) {
			t.Errorf("linux/%s labels:\n got %v\nwant %v", arch, c.Labels, wantLabels)
		}

		var dirs, files []string
		var bin []byte
		for _, e := range layerEntries(t, img) {
			if e.Uid != 0 || e.Gid != 0 || !e.ModTime.Equal(testDate) {
				t.Errorf("linux/%s %s: owner %d:%d, mtime %s", arch, e.Name, e.Uid, e.Gid, e.ModTime)
			}
			switch {
			case e.Type == tar.TypeDir:
				dirs = append(dirs, e.Name)
				if want := map[bool]int64{true: 0o1777, false: 0o755}[e.Name == "tmp/"]; e.Mode != want {
					t.Errorf("linux/%s %s: mode %o, want %o", arch, e.Name, e.Mode, want)
				}
			case e.Type == tar.TypeReg:
				files = append(files, e.Name)
				if want := map[bool]int64{true: 0o755, false: 0o644}[strings.HasPrefix(e.Name, "usr/")]; e.Mode != want {
					t.Errorf("linux/%s %s: mode %o, want %o", arch, e.Name, e.Mode, want)
				}
				if e.Name == "usr/local/bin/isoobs-daemon" {
					bin = []byte(e.Data)
				}
			default:
				t.Errorf("linux/%s %s: type %c", arch, e.Name, e.Type)
			}
		}
		if !slices.Equal(dirs, wantDirs) || !slices.Equal(files, wantFiles) {
			t.Errorf("linux/%s layer:\n dirs %v\nfiles %v", arch, dirs, files)
		}

		// The binary: the one built, for the platform's machine, static, stamped.
		onDisk, err := os.ReadFile(pi.Binary)
		if err != nil || !bytes.Equal(onDisk, bin) {
			t.Errorf("linux/%s: the layer's binary (%d bytes) is not %s (%d bytes, %v)", arch, len(bin), pi.Binary, len(onDisk), err)
		}
		ef, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("linux/%s: %v", arch, err)
		}
		if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]; ef.Machine != want || ef.Class != elf.ELFCLASS64 {
			t.Errorf("linux/%s: ELF machine %s class %s, want %s", arch, ef.Machine, ef.Class, want)
		}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("linux/%s: binary is dynamically linked (%s)", arch, p.Type)
			}
		}
		if ef.Section(".symtab") != nil {
			t.Errorf("linux/%s: binary has a symbol table (not built with -s)", arch)
		}
		for _, s := range []string{o.Version, o.Commit, "2026-12-03T12:00:00Z"} {
			if !bytes.Contains(bin, []byte(s)) {
				t.Errorf("linux/%s: binary lacks the stamped %q", arch, s)
			}
		}

		// The docker-archive: tagged, same config as the index's image.
		tag, _ := name.NewTag(r1.Tag)
		dimg, err := tarball.ImageFromPath(pi.DockerArchive, &tag)
		if err != nil {
			t.Fatalf("linux/%s docker archive: %v", arch, err)
		}
		dcfg, _ := dimg.ConfigName()
		if dcfg.String() != pi.ConfigDigest {
			t.Errorf("linux/%s docker archive config %s, want %s", arch, dcfg, pi.ConfigDigest)
		}
	}
}
