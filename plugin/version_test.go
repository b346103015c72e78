package plugin

import (
	"encoding/json"
	"runtime"
	"testing"

	"github.com/isoobs/isoobs/buildinfo"
)

// stampBuildinfo sets what a release build's -X flags set, for one test.
func stampBuildinfo(t *testing.T, version, commit, date string) {
	t.Helper()
	v, c, d := buildinfo.Version, buildinfo.Commit, buildinfo.Date
	buildinfo.Version, buildinfo.Commit, buildinfo.Date = version, commit, date
	t.Cleanup(func() { buildinfo.Version, buildinfo.Commit, buildinfo.Date = v, c, d })
}

func TestVersionStamped(t *testing.T) {
	stampBuildinfo(t, "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-12-03T12:00:00Z")
	out, _, err := runCmd(t, "version")
	want := "kubectl-isoobs v1.2.3 (commit 0123456789ab, built 2026-12-03T12:00:00Z, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if err != nil || out != want {
		t.Errorf("version = %q, %v\nwant %q", out, err, want)
	}
	out, _, err = runCmd(t, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// The keys are an interface: version, gitCommit, buildDate, goVersion, platform.
	wantJSON := map[string]any{"version": "v1.2.3", "gitCommit": "0123456789abcdef0123456789abcdef01234567",
		"buildDate": "2026-12-03T12:00:00Z", "goVersion": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
	if len(got) != len(wantJSON) {
		t.Errorf("version -o json keys: %v, want %v", got, wantJSON)
	}
	for k, v := range wantJSON {
		if got[k] != v {
			t.Errorf("version -o json: %s = %v, want %v", k, got[k], v)
		}
	}
	out, _, err = runCmd(t, "version", "-o", "yaml")
	if err != nil || out != "buildDate: \"2026-12-03T12:00:00Z\"\ngitCommit: 0123456789abcdef0123456789abcdef01234567\ngoVersion: "+runtime.Version()+"\nplatform: "+runtime.GOOS+"/"+runtime.GOARCH+"\nversion: v1.2.3\n" {
		t.Errorf("version -o yaml = %q, %v", out, err)
	}
	if _, _, err := runCmd(t, "version", "-o", "wide"); err == nil || err.Error() != `invalid -o "wide": valid formats are json, yaml (or leave -o out for one line)` {
		t.Errorf("version -o wide: %v", err)
	}
}
