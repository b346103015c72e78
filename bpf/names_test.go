package bpf

import (
	"bytes"
	"strings"
	"testing"
)

func TestDecodeWireName(t *testing.T) {
	for _, tc := range []struct {
		wire []byte
		want string
		ok   bool
	}{
		{wireName("WWW", "Example", "com"), "www.example.com", true},
		{wireName(), ".", true},
		{wireName("a.b", "c"), "a.b.c", true}, // a dot inside a label is kept raw
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

// FuzzDecodeWireName: never panics, and a name it accepts encodes back to
// the same wire bytes (lower-cased) when no label contains a dot.
func FuzzDecodeWireName(f *testing.F) {
	f.Add(wireName("www", "Example", "COM"))
	f.Add(wireName())
	f.Add([]byte{63})
	f.Add([]byte{0xc0, 0x0c})
	f.Add(wireName(strings.Repeat("a", 63), strings.Repeat("b", 63)))
	f.Fuzz(func(t *testing.T, wire []byte) {
		name, ok := decodeWireName(wire)
		if !ok || name == "." {
			return
		}
		var labels [][]byte
		for pos := 0; wire[pos] != 0; pos += int(wire[pos]) + 1 {
			labels = append(labels, wire[pos+1:pos+1+int(wire[pos])])
		}
		for _, l := range labels {
			if bytes.IndexByte(l, '.') >= 0 || len(l) == 0 {
				return
			}
		}
		if again := textToWire(name); !bytes.Equal(again, lowerASCII(wire)) {
			t.Fatalf("%q decoded to %q, which encodes to %q", wire, name, again)
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
