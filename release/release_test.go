package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/krew"
)

var testDate = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// The parts of a krew manifest the tests check (krew's own types are not a dependency).
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		ShortDescription string `json:"shortDescription"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

type tarEntry struct {
	name, uname, gname string
	mode               int64
	uid, gid           int
	mtime              time.Time
	format             tar.Format
	data               string
}

func readArchive(t *testing.T, b []byte) (gzip.Header, []tarEntry) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			t.Errorf("%s: type %c, want a regular file", h.Name, h.Typeflag)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h.Name, h.Uname, h.Gname, h.Mode, h.Uid, h.Gid, h.ModTime.UTC(), h.Format, string(data)})
	}
	return zr.Header, out
}

func TestWriteArchiveDeterministic(t *testing.T) {
	files := []ArchiveFile{
		{Name: "kubectl-isoobs", Mode: 0o755, Data: []byte("\x7fELF plugin")},
		{Name: "LICENSE", Mode: 0o644, Data: []byte("Apache License\n")},
	}
	var a, b bytes.Buffer
	if err := WriteArchive(&a, testDate.Add(300*time.Millisecond), files); err != nil {
		t.Fatal(err)
	}
	// The same files in another order, at another sub-second: the same bytes.
	if err := WriteArchive(&b, testDate, []ArchiveFile{files[1], files[0]}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("two archives of the same files differ (%d vs %d bytes)", a.Len(), b.Len())
	}
	hdr, entries := readArchive(t, a.Bytes())
	if hdr.Name != "" || hdr.Comment != "" || !hdr.ModTime.IsZero() || hdr.Extra != nil {
		t.Errorf("gzip header carries %+v: want no name, comment, time or extra", hdr)
	}
	// MTIME is bytes 4-7 of the gzip stream: zero.
	if !bytes.Equal(a.Bytes()[4:8], []byte{0, 0, 0, 0}) {
		t.Errorf("gzip MTIME bytes % x, want 0", a.Bytes()[4:8])
	}
	want := []tarEntry{
		{"LICENSE", "", "", 0o644, 0, 0, testDate, tar.FormatUSTAR, "Apache License\n"},
		{"kubectl-isoobs", "", "", 0o755, 0, 0, testDate, tar.FormatUSTAR, "\x7fELF plugin"},
	}
	if len(entries) != len(want) {
		t.Fatalf("entries %+v, want %+v", entries, want)
	}
	for i := range want {
		if entries[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, entries[i], want[i])
		}
	}

	// Anything that changes the content changes the bytes.
	var c bytes.Buffer
	if err := WriteArchive(&c, testDate.Add(time.Second), files); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Error("another mtime gave the same archive")
	}

	for _, bad := range [][]ArchiveFile{
		{{Name: "bin/kubectl-isoobs"}},
		{{Name: ""}},
		{{Name: "LICENSE"}, {Name: "LICENSE"}},
	} {
		if err := WriteArchive(io.Discard, testDate, bad); err == nil {
			t.Errorf("WriteArchive(%+v) accepted", bad)
		}
	}
}

func TestChecksums(t *testing.T) {
	arts := []Artifact{
		{Path: "/d/kubectl-isoobs_v1.2.3_linux_arm64.tar.gz", SHA256: strings.Repeat("b", 64)},
		{Path: "/d/kubectl-isoobs_v1.2.3_darwin_amd64.tar.gz", SHA256: strings.Repeat("a", 64)},
	}
	got := string(Checksums(arts))
	want := strings.Repeat("a", 64) + "  kubectl-isoobs_v1.2.3_darwin_amd64.tar.gz\n" +
		strings.Repeat("b", 64) + "  kubectl-isoobs_v1.2.3_linux_arm64.tar.gz\n"
	if got != want {
		t.Errorf("checksums.txt:\n%s\nwant\n%s", got, want)
	}
}

func TestVersionsAndPlatforms(t *testing.T) {
	for _, v := range []string{"v0.1.0", "v1.22.333", "v1.0.0-rc.1", "v2.0.0-alpha-2"} {
		if err := ValidVersion(v); err != nil {
			t.Errorf("ValidVersion(%q): %v", v, err)
		}
	}
	for _, v := range []string{"", "0.1.0", "v0.1", "v01.0.0", "v0.1.0+meta", "8cc977f-dirty", "v0.1.0-"} {
		if err := ValidVersion(v); err == nil {
			t.Errorf("ValidVersion(%q) accepted", v)
		}
	}
	ps, err := ParsePlatforms("linux/amd64, windows/amd64,linux/amd64")
	if err != nil || len(ps) != 2 || ps[0] != (Platform{"linux", "amd64"}) || ps[1] != (Platform{"windows", "amd64"}) {
		t.Errorf("ParsePlatforms: %v %v", ps, err)
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/amd64/v2", ""} {
		if _, err := ParsePlatforms(bad); err == nil {
			t.Errorf("ParsePlatforms(%q) accepted", bad)
		}
	}
	if got := ArchiveName("v1.2.3", Platform{"windows", "amd64"}); got != "kubectl-isoobs_v1.2.3_windows_amd64.tar.gz" {
		t.Errorf("ArchiveName = %q", got)
	}
	o := Options{Version: "v1.2.3", Commit: strings.Repeat("c", 40), Date: testDate}
	if got, want := o.LDFlags(), "-s -w -X github.com/isoobs/isoobs/buildinfo.Version=v1.2.3 -X github.com/isoobs/isoobs/buildinfo.Commit="+
		strings.Repeat("c", 40)+" -X github.com/isoobs/isoobs/buildinfo.Date=2026-12-03T12:00:00Z"; got != want {
		t.Errorf("LDFlags:\n%s\nwant\n%s", got, want)
	}
	o.ImageDigest, o.ImageRepository = "sha256:"+strings.Repeat("d", 64), "ghcr.io/isoobs/isoobs-daemon"
	if got, want := o.LDFlags(), " -X github.com/isoobs/isoobs/deploy.DaemonImageRepository=ghcr.io/isoobs/isoobs-daemon"+
		" -X github.com/isoobs/isoobs/deploy.DaemonImageTag=v1.2.3 -X github.com/isoobs/isoobs/deploy.DaemonImageDigest=sha256:"+strings.Repeat("d", 64); !strings.HasSuffix(got, want) {
		t.Errorf("LDFlags with an image:\n%s\nwant the suffix\n%s", got, want)
	}
}

// allPlatformsManifest renders the embedded template for every default platform with made-up
// sha256s (one per platform).
func allPlatformsManifest(t *testing.T, version string) ([]byte, []Artifact) {
	t.Helper()
	var arts []Artifact
	for i, p := range DefaultPlatforms {
		arts = append(arts, Artifact{Platform: p, Path: "/dist/" + ArchiveName(version, p), SHA256: strings.Repeat(string(rune('a'+i)), 64)})
	}
	b, err := RenderManifest(krew.ManifestTemplate, NewManifestData(version, DefaultDownloadBase, arts))
	if err != nil {
		t.Fatal(err)
	}
	return b, arts
}

func TestManifestPerPlatform(t *testing.T) {
	b, arts := allPlatformsManifest(t, "v1.2.3")
	var m krewManifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest is not YAML: %v\n%s", err, b)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != "isoobs" ||
		m.Spec.Version != "v1.2.3" || m.Spec.ShortDescription == "" {
		t.Errorf("manifest header: %+v", m)
	}
	if len(m.Spec.Platforms) != len(DefaultPlatforms) {
		t.Fatalf("%d platforms, want %d:\n%s", len(m.Spec.Platforms), len(DefaultPlatforms), b)
	}
	wantBins := map[string]string{"linux": "kubectl-isoobs", "darwin": "kubectl-isoobs", "windows": "kubectl-isoobs.exe"}
	for i, p := range m.Spec.Platforms {
		a := arts[i]
		if len(p.Selector.MatchLabels) != 2 || p.Selector.MatchLabels["os"] != a.Platform.OS || p.Selector.MatchLabels["arch"] != a.Platform.Arch {
			t.Errorf("platform %d selector %v, want os=%s arch=%s", i, p.Selector.MatchLabels, a.Platform.OS, a.Platform.Arch)
		}
		wantURI := "https://github.com/isoobs/isoobs/releases/download/v1.2.3/kubectl-isoobs_v1.2.3_" + a.Platform.OS + "_" + a.Platform.Arch + ".tar.gz"
		if p.URI != wantURI || p.SHA256 != a.SHA256 || p.Bin != wantBins[a.Platform.OS] {
			t.Errorf("platform %s: uri %s sha256 %s bin %s, want %s %s %s", a.Platform, p.URI, p.SHA256, p.Bin, wantURI, a.SHA256, wantBins[a.Platform.OS])
		}
		if len(p.Files) != 2 || p.Files[0].From != p.Bin || p.Files[0].To != "." || p.Files[1].From != "LICENSE" || p.Files[1].To != "." {
			t.Errorf("platform %s files: %+v", a.Platform, p.Files)
		}
	}
	// Rendering is a pure function of its data.
	again, _ := allPlatformsManifest(t, "v1.2.3")
	if !bytes.Equal(b, again) {
		t.Error("two renders of one input differ")
	}
	if _, err := RenderManifest("{{ .Nope }}", ManifestData{}); err == nil {
		t.Error("a template field the data lacks rendered")
	}
}
