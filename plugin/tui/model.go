// Package tui is the live terminal view of `kubectl isoobs top dns`: a
// bubbletea model that shows the latest merged frame and lets the user
// change the sort key without asking the daemons again.
package tui

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
)

// FrameMsg delivers a new merged frame to the model.
type FrameMsg struct{ Frame top.Frame }

// ErrMsg ends the view with an error (the daemon stream failed).
type ErrMsg struct{ Err error }

// sortKeys maps direct keys to sort keys; "s"/"S" cycle through top.SortKeys.
var sortKeys = map[string]string{
	"r": top.SortQPS,
	"c": top.SortQueries,
	"n": top.SortNXDomain,
	"f": top.SortServFail,
	"e": top.SortErrors,
	"l": top.SortLatency,
	"m": top.SortMalformed,
	"a": top.SortName,
}

const helpLine = "s/S: next/prev sort  r:qps c:queries n:nxdomain f:servfail e:errors l:latency m:malformed a:name  q: quit"

var (
	titleStyle = lipgloss.NewStyle().Bold(true)
	warnStyle  = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	helpStyle  = lipgloss.NewStyle().Faint(true)
)

// Model is the live view's state. Frames arrive unsorted and unlimited so a
// sort change re-sorts the frame on screen at once.
type Model struct {
	// Title names the view and its source, e.g. "top dns @ 127.0.0.1:7070".
	Title string
	Sort  string
	Limit int
	Wide  bool

	frame    *top.Frame
	width    int
	height   int
	err      error
	quitting bool
}

// NewModel returns a model that sorts by sortKey and shows at most limit
// rows (0: as many as fit the terminal).
func NewModel(title, sortKey string, limit int, wide bool) Model {
	return Model{Title: title, Sort: sortKey, Limit: limit, Wide: wide}
}

// Err is the error that ended the view, if any.
func (m Model) Err() error { return m.err }

// Quitting reports whether the model asked the program to stop.
func (m Model) Quitting() bool { return m.quitting }

// Init implements tea.Model.
func (m Model) Init() tea.Cmd { return nil }

// Update implements tea.Model.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case FrameMsg:
		f := msg.Frame
		m.frame = &f
	case ErrMsg:
		m.err = msg.Err
		m.quitting = true
		return m, tea.Quit
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		switch k := msg.String(); k {
		case "q", "ctrl+c", "esc":
			m.quitting = true
			return m, tea.Quit
		case "s", "right", "tab":
			m.Sort = top.NextSort(m.Sort, 1)
		case "S", "left", "shift+tab":
			m.Sort = top.NextSort(m.Sort, -1)
		default:
			if s, ok := sortKeys[k]; ok {
				m.Sort = s
			}
		}
	}
	return m, nil
}

// View implements tea.Model.
func (m Model) View() string {
	if m.quitting {
		return ""
	}
	var b strings.Builder
	// line writes one line cut to the terminal width, then styled.
	line := func(style *lipgloss.Style, text string) {
		if m.width > 0 {
			text = truncate(text, m.width)
		}
		if style != nil {
			text = style.Render(text)
		}
		b.WriteString(text + "\n")
	}
	title := m.Title
	if title == "" {
		title = "isoobs top dns"
	}
	if m.frame == nil {
		line(&titleStyle, title+"  waiting for the first frame…")
		line(nil, "")
		line(&helpStyle, helpLine)
		return strings.TrimSuffix(b.String(), "\n")
	}
	f := m.frame
	line(&titleStyle, fmt.Sprintf("%s  %s  sort: %s  group: %s  nodes: %d  total %.1f qps, %d nxdomain, %d servfail",
		title, f.Time.Local().Format("15:04:05"), m.Sort, f.GroupBy, len(f.Nodes), f.Total.QPS, f.Total.NXDomain, f.Total.ServFail))
	for _, w := range f.Warnings {
		line(&warnStyle, "warning: "+w)
	}
	line(nil, "")

	limit := m.Limit
	if m.height > 0 {
		// Title, blank, header, help and the "more rows" note take the rest.
		fit := m.height - 5 - len(f.Warnings)
		if fit < 1 {
			fit = 1
		}
		if limit == 0 || limit > fit {
			limit = fit
		}
	}
	view := f.SortedLimited(m.Sort, limit)
	var table strings.Builder
	_ = printers.WriteTable(&table, view, m.Wide, false)
	for _, l := range strings.Split(strings.TrimRight(table.String(), "\n"), "\n") {
		line(nil, l)
	}
	line(&helpStyle, helpLine)
	return strings.TrimSuffix(b.String(), "\n")
}

func truncate(s string, width int) string {
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width])
}
