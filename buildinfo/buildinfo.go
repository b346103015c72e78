// Package buildinfo holds what a release build stamps into both binaries (the plugin and the
// daemon), so `kubectl isoobs version`, the daemon's status and the image labels agree.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Set with -ldflags "-X github.com/isoobs/isoobs/buildinfo.Version=v0.1.0 ..." (see LDFlags).
var (
	// Version is the release version (a git tag such as v0.1.0); empty in a plain `go build`.
	Version = ""
	// Commit is the full git commit the binary was built from.
	Commit = ""
	// Date is the build date in RFC 3339, UTC. Release builds use the commit's time, so two
	// builds of one commit are byte-identical.
	Date = ""
)

const pkg = "github.com/isoobs/isoobs/buildinfo"

// LDFlags returns the -X flags that stamp version, commit and date into a binary.
func LDFlags(version, commit, date string) string {
	var b strings.Builder
	for _, kv := range [][2]string{{"Version", version}, {"Commit", commit}, {"Date", date}} {
		if kv[1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-X " + pkg + "." + kv[0] + "=" + kv[1])
	}
	return b.String()
}

// Info is the stamped version, falling back to what the Go toolchain recorded (module version,
// VCS revision and time) for binaries built without LDFlags.
type Info struct {
	Version  string `json:"version"`
	Commit   string `json:"gitCommit,omitempty"`
	Date     string `json:"buildDate,omitempty"`
	Modified bool   `json:"modified,omitempty"`
}

// Get returns this binary's Info. Version is "(devel)" when nothing says otherwise.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, Date: Date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.Date == "" {
					i.Date = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	return i
}
