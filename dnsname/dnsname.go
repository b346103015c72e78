// Package dnsname turns DNS names into safe text. A label may hold any byte: a packet to any
// port 53 can carry escape sequences, newlines or dots inside a label, and those names reach
// the table, the live view, JSON, metrics and logs. Every name is therefore written in the
// zone-file presentation format (RFC 1035 §5.1, RFC 4343 §2.1): a byte outside '!'..'~' as
// \DDD (three decimal digits), a '.' or '\' inside a label as \. or \\. Output then holds only
// printable ASCII, and a dot always separates labels.
package dnsname

import (
	"fmt"
	"strings"
)

// AppendLabel appends label to out in presentation format, A-Z lower-cased (DNS names compare
// case-insensitively; the probe counts them so).
func AppendLabel(out, label []byte) []byte {
	for _, c := range label {
		switch {
		case c >= 'A' && c <= 'Z':
			out = append(out, c+'a'-'A')
		case c == '.' || c == '\\':
			out = append(out, '\\', c)
		case c < '!' || c > '~':
			out = append(out, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
		default:
			out = append(out, c)
		}
	}
	return out
}

// Sanitize escapes, as \DDD, every byte of a name already in text form (e.g. from Hubble) that is
// outside '!'..'~'; dots and backslashes are left as they are (the text is taken to be in
// presentation format already). Safe names are returned unchanged, without allocating.
func Sanitize(name string) string {
	i := 0
	for i < len(name) && name[i] >= '!' && name[i] <= '~' {
		i++
	}
	if i == len(name) {
		return name
	}
	out := make([]byte, 0, len(name)+16)
	out = append(out, name[:i]...)
	for ; i < len(name); i++ {
		c := name[i]
		if c < '!' || c > '~' {
			out = append(out, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

// Wire encodes a name in presentation format (with \DDD and \X escapes, a trailing dot or not)
// as wire-format labels ending with the root label.
func Wire(name string) ([]byte, error) {
	if name == "." || name == "" {
		return []byte{0}, nil
	}
	if n := len(name); name[n-1] == '.' && (n-1-len(strings.TrimRight(name[:n-1], "\\")))%2 == 0 {
		name = name[:n-1] // the root's dot, not an escaped one
	}
	var out, label []byte
	flush := func() error {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("name %q: a label of %d bytes", name, len(label))
		}
		out = append(append(out, byte(len(label))), label...)
		label = label[:0]
		return nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if err := flush(); err != nil {
				return nil, err
			}
		case c == '\\' && i+3 < len(name) && isDigit(name[i+1]) && isDigit(name[i+2]) && isDigit(name[i+3]):
			v := int(name[i+1]-'0')*100 + int(name[i+2]-'0')*10 + int(name[i+3]-'0')
			if v > 255 {
				return nil, fmt.Errorf("name %q: escape \\%s is over 255", name, name[i+1:i+4])
			}
			label = append(label, byte(v))
			i += 3
		case c == '\\' && i+1 < len(name):
			label = append(label, name[i+1])
			i++
		case c == '\\':
			return nil, fmt.Errorf("name %q ends in a lone backslash", name)
		default:
			label = append(label, c)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return append(out, 0), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
