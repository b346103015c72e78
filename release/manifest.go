package release

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

// ManifestData is what the krew manifest template (krew/isoobs.yaml.tmpl) sees.
type ManifestData struct {
	Version   string
	Platforms []ManifestPlatform
}

// ManifestPlatform is one spec.platforms entry.
type ManifestPlatform struct {
	OS, Arch string
	URI      string
	SHA256   string
	Bin      string // kubectl-isoobs, kubectl-isoobs.exe on Windows
}

// NewManifestData lists every artifact under <downloadBase>/<version>/<archive>.
func NewManifestData(version, downloadBase string, artifacts []Artifact) ManifestData {
	d := ManifestData{Version: version}
	for _, a := range artifacts {
		d.Platforms = append(d.Platforms, ManifestPlatform{
			OS: a.Platform.OS, Arch: a.Platform.Arch,
			URI:    strings.TrimSuffix(downloadBase, "/") + "/" + version + "/" + ArchiveName(version, a.Platform),
			SHA256: a.SHA256, Bin: a.Platform.Bin(),
		})
	}
	return d
}

// RenderManifest executes the manifest template; a key the template names but data lacks is an
// error, not an empty string.
func RenderManifest(tmpl string, data ManifestData) ([]byte, error) {
	t, err := template.New("krew manifest").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("krew manifest template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("krew manifest template: %w", err)
	}
	return b.Bytes(), nil
}

// Checksums is checksums.txt: one "<sha256>  <archive>" line per artifact, sorted by name, as
// `sha256sum -c checksums.txt` reads it.
func Checksums(artifacts []Artifact) []byte {
	lines := make([]string, len(artifacts))
	for i, a := range artifacts {
		lines[i] = a.SHA256 + "  " + filepath.Base(a.Path) + "\n"
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return []byte(strings.Join(lines, ""))
}
