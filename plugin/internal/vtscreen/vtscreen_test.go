package vtscreen

import (
	"testing"
)

func TestScreenPlaysCursorMovesAndErases(t *testing.T) {
	s := New(4, 20)
	s.Write([]byte("\x1b[?1049h\x1b[H\x1b[2Jhello\r\nworld\x1b[31m!\x1b[0m\r\nthird"))
	s.Write([]byte("\x1b[2A\rHELLO\x1b[K\x1b[1B\r\x1b[2Kw\xc3"))
	s.Write([]byte("\xa9\x1b]0;title\x07"))
	want := "HELLO\nwé\nthird"
	if got := s.Text(); got != want {
		t.Errorf("screen:\n%q\nwant\n%q", got, want)
	}
	s.Write([]byte("\x1b[3;2Hx\x1b[?1049l"))
	if got := s.Text(); got != "" {
		t.Errorf("leaving the alternate screen: %q", got)
	}
}
