package bpf

import "github.com/isoobs/isoobs/dnsname"

// decodeWireName turns a wire-format name as stored by the kernel (length-
// prefixed labels ending with the root label) into lower-cased dotted text
// without the trailing dot, "." for the root, in presentation format
// (dnsname.AppendLabel: A-Z lower-cased, bytes outside '!'..'~' as \DDD, a
// dot or backslash inside a label escaped), so a hostile name cannot write
// escape sequences or forge rows in anyone's terminal. ok is false if wire
// is not a well-formed name, which the kernel never stores.
func decodeWireName(wire []byte) (name string, ok bool) {
	// On the stack for any name the kernel stores (<= 255 bytes, each at most
	// 4 once escaped): the only allocation is the returned string.
	out := make([]byte, 0, 1024)
	pos := 0
	for pos < len(wire) {
		n := int(wire[pos])
		pos++
		if n == 0 {
			if len(out) == 0 {
				return ".", pos == len(wire)
			}
			return string(out), pos == len(wire)
		}
		if n > 63 || pos+n > len(wire) {
			break
		}
		if len(out) > 0 {
			out = append(out, '.')
		}
		out = dnsname.AppendLabel(out, wire[pos:pos+n])
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
