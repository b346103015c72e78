// Package tui is the live terminal view of `kubectl isoobs top dns`: a
// bubbletea model that shows the latest merged frame and lets the user
// change the sort key and filter rows without asking the daemons again, and
// switch the grouping (which asks them again, through Regroup), and drill down into one pod's
// individual DNS messages (Enter on a row, through Drill; Esc back).
package tui

import (
	"fmt"
	"strings"
	"text/tabwriter"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// FrameMsg delivers a new merged frame to the model.
type FrameMsg struct{ Frame top.Frame }

// ErrMsg ends the view with an error (the daemon stream failed).
type ErrMsg struct{ Err error }

// TraceMsg delivers traced messages of the pod drilled into.
type TraceMsg struct{ Events []*isoobsv1.DNSEvent }

// TraceErrMsg says why the drill-down's trace ended or could not start.
type TraceErrMsg struct{ Err error }

// maxTraceLines is how many traced messages the drill-down keeps (the latest).
const maxTraceLines = 500

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

const helpLine = "s/S: next/prev sort  r:qps c:queries n:nxdomain f:servfail e:errors l:latency m:malformed a:name  g/G: group  /: filter  ↑/↓ enter: trace pod  esc: back  q: quit"

const traceHelpLine = "esc: back to the table  q: quit"

var (
	titleStyle = lipgloss.NewStyle().Bold(true)
	warnStyle  = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	helpStyle  = lipgloss.NewStyle().Faint(true)
	// selectedStyle marks the row Enter drills into.
	selectedStyle = lipgloss.NewStyle().Reverse(true)
)

// Model is the live view's state. Frames arrive unsorted and unlimited so a
// sort change re-sorts the frame on screen at once.
type Model struct {
	// Title names the view and its source, e.g. "top dns @ 127.0.0.1:7070".
	Title string
	Sort  string
	Limit int
	Wide  bool
	// Group is the grouping the daemons are asked for; g/G switch it through Regroup, which
	// restarts their streams (frames of another grouping are then ignored until the new ones
	// come). Groups are the groupings offered (default top.GroupBys).
	Group   string
	Groups  []string
	Regroup func(groupBy string)
	// Drill starts tracing a pod ("" and "" stop it); Enter on a pod row calls it, Esc back.
	Drill func(namespace, pod string)

	// cursor is the selected row among those shown (pod grouping).
	cursor int
	// tracing is "namespace/pod" while drilled down; trace its latest messages.
	tracing  string
	trace    []*isoobsv1.DNSEvent
	traceErr error

	frame *top.Frame
	// Row filter (/): rows whose names contain filter (any case) are shown; editing while
	// the user types it.
	filter  string
	editing bool
	input   string
	// back are the groupings Esc returns to, latest last.
	back     []string
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
		if m.Group != "" && f.GroupBy != "" && f.GroupBy != m.Group {
			break // a frame of the grouping before a switch
		}
		m.frame = &f
	case ErrMsg:
		m.err = msg.Err
		m.quitting = true
		return m, tea.Quit
	case TraceMsg:
		if m.tracing != "" {
			m.trace = append(m.trace, msg.Events...)
			if n := len(m.trace); n > maxTraceLines {
				m.trace = append(m.trace[:0:0], m.trace[n-maxTraceLines:]...)
			}
		}
	case TraceErrMsg:
		if m.tracing != "" {
			m.traceErr = msg.Err
		}
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		if m.editing {
			return m.editKey(msg)
		}
		if msg.Type == tea.KeyRunes && len(msg.Runes) > 1 && !msg.Paste {
			// Keys typed faster than read arrive together: each is a key of its own.
			var cmds []tea.Cmd
			var next tea.Model = m
			for _, r := range msg.Runes {
				var cmd tea.Cmd
				next, cmd = next.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
				cmds = append(cmds, cmd)
			}
			return next, tea.Batch(cmds...)
		}
		if m.tracing != "" {
			return m.traceKey(msg)
		}
		switch k := msg.String(); k {
		case "up", "k":
			if m.cursor > 0 {
				m.cursor--
			}
		case "down", "j":
			m.cursor++ // clamped to the rows shown when drawn
		case "enter":
			return m.drill()
		case "esc":
			switch {
			case m.filter != "":
				m.filter = ""
			case len(m.back) > 0:
				g := m.back[len(m.back)-1]
				m.back = m.back[:len(m.back)-1]
				return m.setGroup(g)
			default:
				m.quitting = true
				return m, tea.Quit
			}
		case "q", "ctrl+c":
			m.quitting = true
			return m, tea.Quit
		case "/":
			m.editing, m.input = true, m.filter
		case "g", "G":
			if m.Regroup == nil || m.Group == "" {
				break
			}
			step := 1
			if k == "G" {
				step = -1
			}
			m.back = append(m.back, m.Group)
			return m.setGroup(nextGroup(m.groups(), m.Group, step))
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

// traceKey handles a key in the drill-down: Esc goes back to the table.
func (m Model) traceKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.String() {
	case "esc":
		m.tracing, m.trace, m.traceErr = "", nil, nil
		drill := m.Drill
		return m, func() tea.Msg { drill("", ""); return nil }
	case "q", "ctrl+c":
		m.quitting = true
		return m, tea.Quit
	}
	return m, nil
}

// drill starts tracing the selected row's pod (rows of the pod grouping only).
func (m Model) drill() (tea.Model, tea.Cmd) {
	if m.Drill == nil || m.frame == nil || m.frame.GroupBy != top.GroupByPod {
		return m, nil
	}
	rows := m.shown(m.rowLimit()).Rows
	if len(rows) == 0 {
		return m, nil
	}
	r := rows[min(m.cursor, len(rows)-1)]
	if r.Namespace == "" || r.Pod == "" {
		return m, nil // a cgroup without a pod: nothing to ask a daemon for
	}
	m.tracing, m.trace, m.traceErr = r.Namespace+"/"+r.Pod, nil, nil
	drill := m.Drill
	return m, func() tea.Msg { drill(r.Namespace, r.Pod); return nil }
}

// editKey handles a key while the filter is typed: Enter applies it, Esc leaves it as it was.
func (m Model) editKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.Type {
	case tea.KeyEnter:
		m.filter, m.editing = strings.TrimSpace(m.input), false
	case tea.KeyEsc:
		m.editing = false
	case tea.KeyCtrlC:
		m.quitting = true
		return m, tea.Quit
	case tea.KeyBackspace:
		if r := []rune(m.input); len(r) > 0 {
			m.input = string(r[:len(r)-1])
		}
	case tea.KeyRunes, tea.KeySpace:
		m.input += string(msg.Runes)
	}
	return m, nil
}

// setGroup asks for another grouping; the frame on screen goes until one of it arrives.
func (m Model) setGroup(g string) (tea.Model, tea.Cmd) {
	if g == m.Group {
		return m, nil
	}
	m.Group, m.frame = g, nil
	regroup := m.Regroup
	return m, func() tea.Msg { regroup(g); return nil }
}

func (m Model) groups() []string {
	if len(m.Groups) > 0 {
		return m.Groups
	}
	return top.GroupBys
}

func nextGroup(groups []string, cur string, step int) string {
	for i, g := range groups {
		if g == cur {
			n := len(groups)
			return groups[((i+step)%n+n)%n]
		}
	}
	return groups[0]
}

// Filter is the row filter in force ("" for none).
func (m Model) Filter() string { return m.filter }

// keep says whether a row passes the filter: its name under the grouping, namespace, pod,
// workload, node or one of its top names or zones contains it, in any case.
func keep(r *top.Row, groupBy, filter string) bool {
	f := strings.ToLower(filter)
	for _, s := range []string{r.DisplayName(groupBy), r.Namespace, r.Pod, r.Workload, r.Node, r.QName} {
		if strings.Contains(strings.ToLower(s), f) {
			return true
		}
	}
	for _, ns := range [][]top.NameCount{r.TopNames, r.TopZones} {
		for _, n := range ns {
			if strings.Contains(strings.ToLower(n.Name), f) {
				return true
			}
		}
	}
	return false
}

// status is the header's second line: which nodes answered, which are missing or stale, and
// over what window the numbers are.
func status(f *top.Frame) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes: %d answering, %d missing, %d stale", len(f.Nodes), len(f.MissingNodes), len(f.StaleNodes))
	var out []string
	for _, n := range f.MissingNodes {
		out = append(out, n.Node+" missing")
	}
	for _, n := range f.StaleNodes {
		out = append(out, n.Node+" stale")
	}
	if len(out) > 0 {
		if len(out) > 3 {
			out = append(out[:3], "…")
		}
		b.WriteString(" (" + strings.Join(out, ", ") + ")")
	}
	b.WriteString("  window: ")
	switch {
	case f.LookBackSeconds > 0:
		fmt.Fprintf(&b, "look-back %s, %s–%s", f.LookBack(), f.Since.Local().Format("15:04:05"), f.Time.Local().Format("15:04:05"))
	default:
		fmt.Fprintf(&b, "rates over %.1fs, counts since %s", f.IntervalSeconds, f.Since.Local().Format("15:04:05"))
	}
	if nf := f.NameFilter; nf != nil {
		var parts []string
		if nf.Zone != "" {
			parts = append(parts, "zone "+nf.Zone)
		}
		if nf.Regex != "" {
			parts = append(parts, "name ~ "+nf.Regex)
		}
		b.WriteString("  names: " + strings.Join(parts, ", "))
	}
	return b.String()
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
	filterNote := ""
	switch {
	case m.editing:
		filterNote = "  filter: " + m.input + "_  (enter: apply, esc: cancel)"
	case m.filter != "":
		filterNote = "  filter: " + m.filter
	}
	if m.frame == nil {
		wait := "waiting for the first frame…"
		if m.Group != "" && len(m.back) > 0 {
			wait = "waiting for frames grouped by " + m.Group + "…"
		}
		line(&titleStyle, title+"  "+wait+filterNote)
		line(nil, "")
		line(&helpStyle, helpLine)
		return strings.TrimSuffix(b.String(), "\n")
	}
	if m.tracing != "" {
		return m.traceView(title)
	}
	f := m.frame
	// What the keys change comes first; the sources (which may not fit) last.
	name, sources, _ := strings.Cut(title, " @ ")
	if sources != "" {
		sources = "  @ " + sources
	}
	line(&titleStyle, fmt.Sprintf("%s  %s  sort: %s  group: %s%s  total %.1f qps, %d nxdomain, %d servfail%s",
		name, f.Time.Local().Format("15:04:05"), m.Sort, f.GroupBy, filterNote, f.Total.QPS, f.Total.NXDomain, f.Total.ServFail, sources))
	line(nil, status(f))
	for _, w := range f.Warnings {
		line(&warnStyle, "warning: "+w)
	}
	line(nil, "")

	view := m.shown(m.rowLimit())
	if m.filter != "" && len(view.Rows) == 0 && len(f.Rows) > 0 {
		line(nil, fmt.Sprintf("No rows match the filter %q (%d rows hidden; esc clears it).", m.filter, len(f.Rows)))
		line(&helpStyle, helpLine)
		return strings.TrimSuffix(b.String(), "\n")
	}
	var table strings.Builder
	_ = printers.WriteTable(&table, view, m.Wide, false)
	selected := -1
	if m.Drill != nil && f.GroupBy == top.GroupByPod && len(view.Rows) > 0 {
		selected = 1 + min(m.cursor, len(view.Rows)-1) // after the header line
	}
	for i, l := range strings.Split(strings.TrimRight(table.String(), "\n"), "\n") {
		if i == selected {
			line(&selectedStyle, l)
			continue
		}
		line(nil, l)
	}
	line(&helpStyle, helpLine)
	return strings.TrimSuffix(b.String(), "\n")
}

// rowLimit is how many rows fit: --limit, and the terminal's height less the title, status,
// blank, header, help and "more rows" lines.
func (m Model) rowLimit() int {
	limit := m.Limit
	if m.height > 0 && m.frame != nil {
		fit := max(m.height-6-len(m.frame.Warnings), 1)
		if limit == 0 || limit > fit {
			limit = fit
		}
	}
	return limit
}

// shown is the frame as drawn: filtered, sorted, limited.
func (m Model) shown(limit int) top.Frame {
	f := *m.frame
	if m.filter != "" {
		f.Rows = nil
		for i := range m.frame.Rows {
			if keep(&m.frame.Rows[i], m.frame.GroupBy, m.filter) {
				f.Rows = append(f.Rows, m.frame.Rows[i])
			}
		}
	}
	return f.SortedLimited(m.Sort, limit)
}

// traceView is the drill-down: the latest traced messages of one pod, newest last.
func (m Model) traceView(title string) string {
	var b strings.Builder
	name, _, _ := strings.Cut(title, " @ ")
	head := fmt.Sprintf("%s  trace %s  %d messages", name, m.tracing, len(m.trace))
	lines := []string{titleStyle.Render(truncate(head, max(m.width, len(head))))}
	if m.traceErr != nil {
		lines = append(lines, warnStyle.Render("warning: "+m.traceErr.Error()))
	}
	fit := len(m.trace)
	if m.height > 0 {
		fit = min(fit, max(m.height-len(lines)-3, 1))
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(printers.TraceHeader, "\t"))
	for _, ev := range m.trace[len(m.trace)-fit:] {
		fmt.Fprintln(tw, strings.Join(printers.TraceRow(ev), "\t"))
	}
	_ = tw.Flush()
	lines = append(lines, "")
	for _, l := range strings.Split(strings.TrimRight(table.String(), "\n"), "\n") {
		if m.width > 0 {
			l = truncate(l, m.width)
		}
		lines = append(lines, l)
	}
	if len(m.trace) == 0 && m.traceErr == nil {
		lines = append(lines, "waiting for the pod's DNS messages…")
	}
	lines = append(lines, helpStyle.Render(traceHelpLine))
	b.WriteString(strings.Join(lines, "\n"))
	return b.String()
}

func truncate(s string, width int) string {
	r := []rune(s)
	if len(r) <= width {
		return s
	}
	return string(r[:width])
}
