package bpf

// decodeWireName turns a wire-format name as stored by the kernel (length-
// prefixed labels ending with the root label) into lower-cased dotted text
// without the trailing dot, "." for the root. A-Z are lower-cased, other
// bytes are kept raw. ok is false if wire is not a well-formed name, which
// the kernel never stores; the text is then escaped for display.
func decodeWireName(wire []byte) (name string, ok bool) {
	// On the stack for any name the kernel stores (<= 255 bytes): the only
	// allocation is the returned string.
	out := make([]byte, 0, 256)
	pos := 0
	for pos < len(wire) {
		n := int(wire[pos])
		pos++
		if n == 0 {
			if len(out) == 0 {
				return ".", true
			}
			return string(out), pos == len(wire)
		}
		if n > 63 || pos+n > len(wire) {
			break
		}
		if len(out) > 0 {
			out = append(out, '.')
		}
		for _, c := range wire[pos : pos+n] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			out = append(out, c)
		}
		pos += n
	}
	return string(out) + "?", false
}

func nameText(v *dnsNameValue) string {
	name, _ := decodeWireName(entryWire(v))
	return name
}

// entryWire is the entry's name in wire format.
func entryWire(v *dnsNameValue) []byte {
	n := int(v.WireLen)
	if n > len(v.Wire) {
		n = len(v.Wire)
	}
	return v.Wire[:n]
}
