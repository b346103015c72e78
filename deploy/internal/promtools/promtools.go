// Package promtools finds the Prometheus tools the dashboard and alert tests run: promtool
// (install/scripts/build-promtool.sh) and promql-lint (hack/build-promql-lint.sh, Prometheus's own
// PromQL parser), both built into the isoobs tool cache by `make deps` and, if missing, by the
// test itself through the same scripts. Test infrastructure only.
package promtools

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot is the directory of the isoobs go.mod above the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(data, []byte("module github.com/isoobs/isoobs\n")) {
			return d
		}
		if d == filepath.Dir(d) {
			t.Fatalf("no github.com/isoobs/isoobs go.mod above %s", wd)
		}
	}
}

// skipShort skips under -short: make unit runs no built tools.
func skipShort(t testing.TB, tool string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s, built into the isoobs tool cache: skipped under -short (make unit)", tool)
	}
}

func cacheDir() string {
	if c := os.Getenv("ISOOBS_CACHE"); c != "" {
		return c
	}
	if c := os.Getenv("XDG_CACHE_HOME"); c != "" {
		return filepath.Join(c, "isoobs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "isoobs")
}

// Promtool returns the cached promtool v0.307.0 ($ISOOBS_PROMTOOL overrides), building it with
// install/scripts/build-promtool.sh when missing.
func Promtool(t testing.TB) string {
	t.Helper()
	skipShort(t, "promtool")
	if p := os.Getenv("ISOOBS_PROMTOOL"); p != "" {
		return p
	}
	p := filepath.Join(cacheDir(), "bin", "promtool-v0.307.0", "promtool")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cmd := exec.Command("sh", filepath.Join(RepoRoot(t), "install", "scripts", "build-promtool.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building promtool (install/scripts/build-promtool.sh): %v\n%s", err, out)
	}
	return p
}

// PromQLLint returns hack/promql-lint built by hack/build-promql-lint.sh (quiet and instant when
// cached).
func PromQLLint(t testing.TB) string {
	t.Helper()
	skipShort(t, "promql-lint")
	cmd := exec.Command("sh", filepath.Join(RepoRoot(t), "hack", "build-promql-lint.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/build-promql-lint.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Matcher is one label matcher of a selector.
type Matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

// Selector is one vector selector of an expression.
type Selector struct {
	Metric   string    `json:"metric"`
	Matchers []Matcher `json:"matchers"`
}

// Parsed is what Prometheus's parser made of one expression.
type Parsed struct {
	Expr      string     `json:"expr"`
	Error     string     `json:"error"`
	Metrics   []string   `json:"metrics"`
	Selectors []Selector `json:"selectors"`
	Grouping  []string   `json:"grouping"`
}

// Parse parses every expression with Prometheus's parser (promql-lint), in order.
func Parse(t testing.TB, exprs []string) []Parsed {
	t.Helper()
	in, err := json.Marshal(exprs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(PromQLLint(t))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promql-lint: %v\n%s", err, stderr.String())
	}
	var res []Parsed
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("promql-lint output: %v", err)
	}
	if len(res) != len(exprs) {
		t.Fatalf("promql-lint answered %d of %d expressions", len(res), len(exprs))
	}
	return res
}

// String shows a selector as PromQL.
func (s Selector) String() string {
	var ms []string
	for _, m := range s.Matchers {
		ms = append(ms, fmt.Sprintf("%s%s%q", m.Name, m.Type, m.Value))
	}
	return s.Metric + "{" + strings.Join(ms, ",") + "}"
}
