package bpf

import (
	"bytes"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/dnsname"
)

func TestDecodeWireName(t *testing.T) {
	for _, tc := range []struct {
		wire []byte
		want string
		ok   bool
	}{
		{wireName("WWW", "Example", "com"), "www.example.com", true},
		{wireName(), ".", true},
		{wireName("a.b", "c"), `a\.b.c`, true}, // a dot inside a label is escaped: dots separate labels
		// Terminal injection: ESC, CR/LF, DEL, a space, a backslash and non-ASCII bytes become \DDD or \\.
		{wireName("\x1b[2J\r\nFAKE ROW\x7f", `back\slash`, "caf\xc3\xa9"), `\027[2j\013\010fake\032row\127.back\\slash.caf\195\169`, true},
		{[]byte{3, 'a', 'b'}, "?", false},
		{[]byte{0xc0, 0x0c}, "?", false},
		{append(wireName("a"), 'x'), "a", false},
	} {
		got, ok := decodeWireName(tc.wire)
		if got != tc.want || ok != tc.ok {
			t.Errorf("decodeWireName(%q) = %q, %v; want %q, %v", tc.wire, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzDecodeWireName: never panics, a name it accepts holds printable ASCII
// only, and it encodes back to the same wire bytes (lower-cased).
func FuzzDecodeWireName(f *testing.F) {
	f.Add(wireName("www", "Example", "COM"))
	f.Add(wireName())
	f.Add([]byte{63})
	f.Add([]byte{0xc0, 0x0c})
	f.Add(wireName(strings.Repeat("a", 63), strings.Repeat("b", 63)))
	f.Add(wireName("a.b", "\x1b[31m\n", "\\"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		name, ok := decodeWireName(wire)
		for i := 0; i < len(name); i++ {
			if name[i] < '!' || name[i] > '~' {
				t.Fatalf("%q decoded to %q: byte %#x at %d is not printable ASCII", wire, name, name[i], i)
			}
		}
		if !ok {
			return
		}
		again, err := dnsname.Wire(name)
		if err != nil || !bytes.Equal(again, lowerASCII(wire)) {
			t.Fatalf("%q decoded to %q, which encodes to %q (%v)", wire, name, again, err)
		}
	})
}

func lowerASCII(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i, c := range out {
		if c >= 'A' && c <= 'Z' {
			out[i] = c + 'a' - 'A'
		}
	}
	return out
}
