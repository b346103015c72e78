package tui

import (
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/isoobs/isoobs/plugin/top"
)

func frame() top.Frame {
	return top.Frame{
		Time: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), GroupBy: top.GroupByPod, Nodes: []string{"node-a"},
		Rows: []top.Row{
			{Namespace: "tenant-jobs", Pod: "crawler-1", QPS: 900, Queries: 9000, NXDomain: 10, Responses: 9000, LatencyP99Ms: 3},
			{Namespace: "tenant-jobs", Pod: "resumes-1", QPS: 5, Queries: 50, NXDomain: 40, Responses: 50, LatencyP99Ms: 80},
			{Namespace: "kube-system", Pod: "coredns-1", QPS: 1, Queries: 10, Responses: 10, ServFail: 2, LatencyP99Ms: 1},
		},
		Total:    top.Row{QPS: 906, NXDomain: 50, ServFail: 2},
		Warnings: []string{"node-a: ring buffer lost 3 events"},
	}
}

func key(s string) tea.KeyMsg {
	switch s {
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func update(t *testing.T, m Model, msg tea.Msg) (Model, tea.Cmd) {
	t.Helper()
	next, cmd := m.Update(msg)
	mm, ok := next.(Model)
	if !ok {
		t.Fatalf("Update returned %T", next)
	}
	return mm, cmd
}

// podOrder returns the pods in the order the view shows them.
func podOrder(view string) []string {
	var pods []string
	for _, line := range strings.Split(view, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasSuffix(f[1], "-1") {
			pods = append(pods, f[1])
		}
	}
	return pods
}

func TestModelKeysChangeSort(t *testing.T) {
	m := NewModel("isoobs top dns @ test", top.SortQPS, 0, false)
	if v := m.View(); !strings.Contains(v, "waiting for the first frame") {
		t.Errorf("before a frame: %q", v)
	}
	m, _ = update(t, m, tea.WindowSizeMsg{Width: 200, Height: 40})
	m, _ = update(t, m, FrameMsg{Frame: frame()})
	steps := []struct {
		key  string
		sort string
		pods []string
	}{
		{"", top.SortQPS, []string{"crawler-1", "resumes-1", "coredns-1"}},
		{"n", top.SortNXDomain, []string{"resumes-1", "crawler-1", "coredns-1"}},
		{"f", top.SortServFail, []string{"coredns-1", "crawler-1", "resumes-1"}},
		{"l", top.SortLatency, []string{"resumes-1", "crawler-1", "coredns-1"}},
		{"s", top.SortMalformed, []string{"crawler-1", "resumes-1", "coredns-1"}}, // all 0: more queries first
		{"s", top.SortName, []string{"coredns-1", "crawler-1", "resumes-1"}},
		{"s", top.SortQPS, []string{"crawler-1", "resumes-1", "coredns-1"}}, // wraps around
		{"S", top.SortName, []string{"coredns-1", "crawler-1", "resumes-1"}},
		{"x", top.SortName, []string{"coredns-1", "crawler-1", "resumes-1"}}, // unknown keys do nothing
	}
	for _, st := range steps {
		var cmd tea.Cmd
		if st.key != "" {
			m, cmd = update(t, m, key(st.key))
			if cmd != nil {
				t.Errorf("key %q returned a command", st.key)
			}
		}
		v := m.View()
		if m.Sort != st.sort || !strings.Contains(v, "sort: "+st.sort) {
			t.Errorf("after %q: sort %q, view header lacks it:\n%s", st.key, m.Sort, v)
		}
		if got := podOrder(v); strings.Join(got, ",") != strings.Join(st.pods, ",") {
			t.Errorf("after %q (%s): order %v, want %v", st.key, st.sort, got, st.pods)
		}
	}
	v := m.View()
	for _, want := range []string{"isoobs top dns  ", "servfail  @ test", "total 906.0 qps", "ring buffer lost 3 events", "q: quit", "NAMESPACE"} {
		if !strings.Contains(v, want) {
			t.Errorf("view lacks %q:\n%s", want, v)
		}
	}
}

func TestModelQuitKeys(t *testing.T) {
	for _, k := range []string{"q", "ctrl+c", "esc"} {
		m := NewModel("", top.SortQPS, 0, false)
		m, _ = update(t, m, FrameMsg{Frame: frame()})
		m, cmd := update(t, m, key(k))
		if cmd == nil {
			t.Fatalf("%q: no command", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%q must quit", k)
		}
		if !m.Quitting() || m.View() != "" {
			t.Errorf("%q: quitting view must be empty so the terminal is left clean", k)
		}
	}
}

func TestModelErrorQuitsWithError(t *testing.T) {
	m := NewModel("", top.SortQPS, 0, false)
	boom := errors.New("cannot reach the isoobs daemon")
	m, cmd := update(t, m, ErrMsg{Err: boom})
	if cmd == nil || m.Err() != boom {
		t.Fatalf("ErrMsg must quit and keep the error")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Error("ErrMsg must quit")
	}
}

func TestModelFitsRowsToTerminalHeight(t *testing.T) {
	m := NewModel("", top.SortQPS, 0, false)
	m, _ = update(t, m, tea.WindowSizeMsg{Width: 80, Height: 7}) // 7-5-1 warning = 1 row
	m, _ = update(t, m, FrameMsg{Frame: frame()})
	v := m.View()
	if got := podOrder(v); len(got) != 1 || got[0] != "crawler-1" {
		t.Errorf("rows shown = %v", got)
	}
	if !strings.Contains(v, "2 more rows not shown") {
		t.Errorf("view must say rows were cut:\n%s", v)
	}
	for _, line := range strings.Split(v, "\n") {
		if len([]rune(line)) > 80 && !strings.Contains(line, "\x1b") {
			t.Errorf("line wider than the terminal: %q", line)
		}
	}
}
