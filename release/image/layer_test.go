package image

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testDate = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// tarEntry is what the tests check of one layer entry.
type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	Uid, Gid int
	ModTime  time.Time
	Data     string
}

// layerEntries reads img's only layer.
func layerEntries(t *testing.T, img v1.Image) []tarEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []tarEntry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.UTC(), string(data)})
	}
	return out
}

func TestFromFilesLayerAndConfig(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("#!fake binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Platform: v1.Platform{OS: "linux", Architecture: "arm64"},
		Files: []File{
			{Path: "/usr/local/bin/tool", Source: src, Mode: 0o755},
			{Path: "/etc/tool/config", Data: []byte("x=1\n")},
			{Path: "/var/lib/tool", Mode: fs.ModeDir | 0o700},
		},
		Entrypoint: []string{"/usr/local/bin/tool"},
		Cmd:        []string{"--serve"},
		User:       "65534",
		Labels:     map[string]string{"a": "b"},
		Created:    testDate,
		CreatedBy:  "test",
	}
	img, err := FromFiles(spec)
	if err != nil {
		t.Fatal(err)
	}
	got := layerEntries(t, img)
	want := []tarEntry{
		{"etc/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"etc/group", tar.TypeReg, 0o644, 0, 0, testDate, "root:x:0:\nnobody:x:65534:\n"},
		{"etc/nsswitch.conf", tar.TypeReg, 0o644, 0, 0, testDate, "hosts: files dns\n"},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0, testDate, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"},
		{"etc/tool/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"etc/tool/config", tar.TypeReg, 0o644, 0, 0, testDate, "x=1\n"},
		{"tmp/", tar.TypeDir, 0o1777, 0, 0, testDate, ""},
		{"usr/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"usr/local/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"usr/local/bin/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"usr/local/bin/tool", tar.TypeReg, 0o755, 0, 0, testDate, "#!fake binary"},
		{"var/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"var/lib/", tar.TypeDir, 0o755, 0, 0, testDate, ""},
		{"var/lib/tool/", tar.TypeDir, 0o700, 0, 0, testDate, ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n got %+v\nwant %+v", got, want)
	}

	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" || !cf.Created.Time.Equal(testDate) {
		t.Errorf("config os/arch/created = %s/%s/%s", cf.OS, cf.Architecture, cf.Created.Time)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, spec.Entrypoint) || !slices.Equal(c.Cmd, spec.Cmd) || c.User != "65534" || c.WorkingDir != "/" ||
		!slices.Equal(c.Env, []string{"PATH=" + DefaultPath}) || len(c.Labels) != 1 || c.Labels["a"] != "b" {
		t.Errorf("config = %+v", c)
	}
	if len(cf.History) != 1 || cf.History[0].CreatedBy != "test" || !cf.History[0].Created.Time.Equal(testDate) {
		t.Errorf("history = %+v", cf.History)
	}

	// Same inputs, same digest; one byte more, another digest.
	again, err := FromFiles(spec)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of one spec: %s and %s", d1, d2)
	}
	spec.Files[1].Data = []byte("x=2\n")
	other, err := FromFiles(spec)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := other.Digest(); d3 == d1 {
		t.Errorf("changed file, same digest %s", d3)
	}
}

func TestFromFilesRejects(t *testing.T) {
	base := Spec{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Created: testDate}
	for name, files := range map[string][]File{
		"relative path":   {{Path: "bin/x"}},
		"root":            {{Path: "/"}},
		"twice":           {{Path: "/x"}, {Path: "/x"}},
		"file as parent":  {{Path: "/x"}, {Path: "/x/y"}},
		"base file again": {{Path: "/etc/passwd"}},
	} {
		s := base
		s.Files = files
		if _, err := FromFiles(s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	s := base
	s.Created = time.Time{}
	if _, err := FromFiles(s); err == nil {
		t.Error("no date: no error")
	}
}

func TestIndexAndArchives(t *testing.T) {
	var imgs []v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := FromFiles(Spec{Platform: v1.Platform{OS: "linux", Architecture: arch}, Files: []File{{Path: "/pause", Data: []byte(arch), Mode: 0o755}}, Entrypoint: []string{"/pause"}, Created: testDate})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := Index(imgs...)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index %s with %d manifests", im.MediaType, len(im.Manifests))
	}
	for i, arch := range []string{"amd64", "arm64"} {
		m := im.Manifests[i]
		if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != arch || m.MediaType != types.OCIManifestSchema1 {
			t.Errorf("manifest %d: %s platform %+v, want linux/%s", i, m.MediaType, m.Platform, arch)
		}
	}

	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, p := range []string{a, b} {
		if err := WriteOCIArchive(p, idx, "example.test/pause:3.10"); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if len(ab) == 0 || !bytes.Equal(ab, bb) {
		t.Errorf("two OCI archives of one index differ (%d, %d bytes)", len(ab), len(bb))
	}
	d, _ := idx.Digest()
	names := ociArchiveNames(t, a)
	if !slices.Equal(names, []string{"example.test/pause:3.10", "example.test/pause@" + d.String()}) {
		t.Errorf("index.json names %v", names)
	}

	docker := filepath.Join(dir, "pause.docker.tar")
	if err := WriteDockerArchive(docker, "example.test/pause:3.10", imgs[0]); err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerArchive(docker, "not a tag", imgs[0]); err == nil {
		t.Error("bad tag: no error")
	}
}
