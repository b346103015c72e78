package dnsname

import (
	"bytes"
	"testing"
)

func TestAppendLabel(t *testing.T) {
	for label, want := range map[string]string{
		"WWW":                         "www",
		"a.b":                         `a\.b`,
		`back\slash`:                  `back\\slash`,
		"\x1b[2J\r\nFAKE ROW\x7f\x00": `\027[2j\013\010fake\032row\127\000`,
		"caf\xc3\xa9":                 `caf\195\169`,
		"_srv-1~!":                    "_srv-1~!",
	} {
		if got := string(AppendLabel(nil, []byte(label))); got != want {
			t.Errorf("AppendLabel(%q) = %q, want %q", label, got, want)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"api.example.com.":       "api.example.com.",
		"evil\x1b]0;pwned\x07.x": `evil\027]0;pwned\007.x`,
		"row\nforged row":        `row\010forged\032row`,
		`already\032escaped`:     `already\032escaped`,
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWire(t *testing.T) {
	for name, want := range map[string][]byte{
		".":               {0},
		"www.example.com": {3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0},
		"a.":              {1, 'a', 0},
		`a\.b.c`:          {3, 'a', '.', 'b', 1, 'c', 0},
		`a\.`:             {2, 'a', '.', 0},
		`\027x\\`:         {3, 27, 'x', '\\', 0},
	} {
		got, err := Wire(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Wire(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"a..b", `a\`, `\256`, "x." + string(bytes.Repeat([]byte("y"), 64))} {
		if _, err := Wire(bad); err == nil {
			t.Errorf("Wire(%q) accepted", bad)
		}
	}
}
