package daemon

import (
	"net/url"
	"strings"
)

// HTTP paths are bounded before they are counted: a row keeps method + path template, never a
// raw URL (ids, tokens and query strings would make every request a key of its own).
const (
	// httpMaxSegments: path segments kept; more become one "…" segment.
	httpMaxSegments = 8
	// httpMaxSegmentLen: a longer segment is "{long}".
	httpMaxSegmentLen = 48
)

// httpMethods are the methods a row names; anything else is OTHER.
var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "CONNECT": true,
	"OPTIONS": true, "TRACE": true, "PATCH": true,
}

// httpMethod bounds a request method.
func httpMethod(m string) string {
	if httpMethods[m] {
		return m
	}
	return "OTHER"
}

// httpPathTemplate turns the URL of an L7 HTTP flow (Cilium's proxy reports the absolute URL,
// scheme://host/path?query) into a path template: no scheme, host, query or fragment; numeric
// segments {id}, UUIDs {uuid}, hex strings of 12+ characters with a digit {hex}, overlong
// segments {long}; percent-escapes kept as escapes and anything outside printable ASCII
// escaped, so a path is safe to print.
func httpPathTemplate(raw string) string {
	p := raw
	if u, err := url.Parse(raw); err == nil {
		p = u.EscapedPath()
	} else {
		// Not a URL Go parses: cut scheme://host and ?query by hand.
		if i := strings.Index(p, "://"); i >= 0 {
			p = p[i+3:]
			if j := strings.IndexByte(p, '/'); j >= 0 {
				p = p[j:]
			} else {
				p = "/"
			}
		}
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
	}
	if p == "" {
		return "/"
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(segs) > httpMaxSegments {
		segs = append(segs[:httpMaxSegments], "…")
	}
	for i, s := range segs {
		segs[i] = templateSegment(s)
	}
	return "/" + strings.Join(segs, "/")
}

func templateSegment(s string) string {
	switch {
	case s == "" || s == "…":
		return s
	case isDigits(s):
		return "{id}"
	case isUUID(s):
		return "{uuid}"
	case len(s) >= 12 && isHex(s) && strings.ContainsAny(s, "0123456789"):
		return "{hex}"
	case len(s) > httpMaxSegmentLen:
		return "{long}"
	}
	return printable(s)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// isUUID accepts the 8-4-4-4-12 hex form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i : i+1]) {
				return false
			}
		}
	}
	return true
}

// printable percent-escapes bytes outside printable ASCII (EscapedPath leaves none, the
// fallback may).
func printable(s string) string {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			var b strings.Builder
			for j := 0; j < len(s); j++ {
				c := s[j]
				if c < 0x21 || c > 0x7e {
					b.WriteByte('%')
					b.WriteByte(hexDigits[c>>4])
					b.WriteByte(hexDigits[c&15])
					continue
				}
				b.WriteByte(c)
			}
			return b.String()
		}
	}
	return s
}
