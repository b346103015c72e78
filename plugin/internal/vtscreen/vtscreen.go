// Package vtscreen is a small VT100/ANSI screen for tests: it runs a real pty, plays what a
// program writes to it (text, cursor moves, erases, the alternate screen; colours ignored) onto
// a grid of cells, and says what the screen shows, so a test of the live view can type keys
// and assert on the screen as a user would see it.
package vtscreen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Screen is a terminal of fixed size fed by Write.
type Screen struct {
	mu         sync.Mutex
	rows, cols int
	cells      [][]rune
	row, col   int
	pending    []byte // an incomplete escape sequence or UTF-8 rune
	changed    chan struct{}
}

// New returns an empty screen of rows × cols.
func New(rows, cols int) *Screen {
	s := &Screen{rows: rows, cols: cols, changed: make(chan struct{}, 1)}
	s.clear()
	return s
}

func (s *Screen) clear() {
	s.cells = make([][]rune, s.rows)
	for i := range s.cells {
		s.cells[i] = blank(s.cols)
	}
}

func blank(n int) []rune {
	r := make([]rune, n)
	for i := range r {
		r[i] = ' '
	}
	return r
}

// Write plays p onto the screen.
func (s *Screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	b := append(s.pending, p...)
	s.pending = nil
	for len(b) > 0 {
		n := s.step(b)
		if n == 0 { // incomplete: wait for more
			s.pending = append([]byte(nil), b...)
			break
		}
		b = b[n:]
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// step consumes one item at the start of b and returns its length (0: incomplete).
func (s *Screen) step(b []byte) int {
	switch c := b[0]; {
	case c == 0x1b:
		return s.escape(b)
	case c == '\r':
		s.col = 0
	case c == '\n':
		s.lineFeed()
	case c == '\b':
		s.col = max(0, s.col-1)
	case c == '\t':
		s.col = min(s.cols-1, (s.col/8+1)*8)
	case c < 0x20 || c == 0x7f:
	default:
		if !utf8.FullRune(b) {
			return 0
		}
		r, n := utf8.DecodeRune(b)
		s.put(r)
		return n
	}
	return 1
}

func (s *Screen) put(r rune) {
	if s.col >= s.cols {
		s.col = 0
		s.lineFeed()
	}
	s.cells[s.row][s.col] = r
	s.col++
}

func (s *Screen) lineFeed() {
	if s.row < s.rows-1 {
		s.row++
		return
	}
	copy(s.cells, s.cells[1:])
	s.cells[s.rows-1] = blank(s.cols)
}

// escape handles ESC sequences: CSI (ESC [), OSC (ESC ] ... BEL or ST) and two-byte ones.
func (s *Screen) escape(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '[':
		for i := 2; i < len(b); i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				s.csi(string(b[2:i]), b[i])
				return i + 1
			}
		}
		return 0
	case ']', 'P', '_', '^':
		for i := 2; i < len(b); i++ {
			if b[i] == 0x07 {
				return i + 1
			}
			if b[i] == 0x1b && i+1 < len(b) && b[i+1] == '\\' {
				return i + 2
			}
		}
		return 0
	case '(', ')':
		if len(b) < 3 {
			return 0
		}
		return 3
	}
	return 2
}

func (s *Screen) csi(params string, final byte) {
	if strings.HasPrefix(params, "?") || strings.HasPrefix(params, ">") {
		if final == 'h' || final == 'l' {
			for _, p := range strings.Split(params[1:], ";") {
				if p == "1049" || p == "47" || p == "1047" { // alternate screen in or out: a clean grid
					s.clear()
					if final == 'h' {
						s.row, s.col = 0, 0
					}
				}
			}
		}
		return
	}
	var args []int
	for _, p := range strings.Split(params, ";") {
		n, _ := strconv.Atoi(p)
		args = append(args, n)
	}
	arg := func(i, def int) int {
		if i < len(args) && args[i] > 0 {
			return args[i]
		}
		return def
	}
	switch final {
	case 'A':
		s.row = max(0, s.row-arg(0, 1))
	case 'B':
		s.row = min(s.rows-1, s.row+arg(0, 1))
	case 'C':
		s.col = min(s.cols-1, s.col+arg(0, 1))
	case 'D':
		s.col = max(0, s.col-arg(0, 1))
	case 'E':
		s.row, s.col = min(s.rows-1, s.row+arg(0, 1)), 0
	case 'F':
		s.row, s.col = max(0, s.row-arg(0, 1)), 0
	case 'G':
		s.col = min(s.cols-1, arg(0, 1)-1)
	case 'H', 'f':
		s.row, s.col = min(s.rows-1, arg(0, 1)-1), min(s.cols-1, arg(1, 1)-1)
	case 'J':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.row, s.col, s.cols)
			for r := s.row + 1; r < s.rows; r++ {
				s.cells[r] = blank(s.cols)
			}
		case 1:
			for r := 0; r < s.row; r++ {
				s.cells[r] = blank(s.cols)
			}
			s.eraseLine(s.row, 0, s.col+1)
		default:
			s.clear()
		}
	case 'K':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.row, s.col, s.cols)
		case 1:
			s.eraseLine(s.row, 0, s.col+1)
		default:
			s.eraseLine(s.row, 0, s.cols)
		}
	case 'X':
		s.eraseLine(s.row, s.col, s.col+arg(0, 1))
	}
}

func (s *Screen) eraseLine(row, from, to int) {
	for c := max(0, from); c < min(to, s.cols); c++ {
		s.cells[row][c] = ' '
	}
}

// Text is what the screen shows: its lines without trailing blanks, blank lines at the end
// dropped.
func (s *Screen) Text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := make([]string, s.rows)
	for i, r := range s.cells {
		lines[i] = strings.TrimRight(string(r), " ")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// WaitFor returns the screen text once ok holds for it, or an error with the last screen after
// timeout. It checks after every write to the screen.
func (s *Screen) WaitFor(timeout time.Duration, ok func(text string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		text := s.Text()
		if ok(text) {
			return text, nil
		}
		select {
		case <-s.changed:
		case <-deadline.C:
			return text, fmt.Errorf("screen after %s:\n%s", timeout, text)
		}
	}
}

// OpenPTY opens a pseudo-terminal of rows × cols: the program under test gets tty (as its
// input and output), the test reads ptm (what the program shows) and writes to it (keys).
func OpenPTY(rows, cols int) (ptm, tty *os.File, err error) {
	ptm, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)}); err != nil {
		ptm.Close()
		tty.Close()
		return nil, nil, fmt.Errorf("pty size: %w", err)
	}
	return ptm, tty, nil
}
