package hubblereplay

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
)

// fieldMask keeps the listed fields of a flow: a nil child keeps a whole field.
type fieldMask map[protoreflect.Name]fieldMask

// compileMask checks the paths against flow.Flow, as Hubble does before streaming.
func compileMask(fm *fieldmaskpb.FieldMask) (fieldMask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	root := fieldMask{}
	md := (&flowpb.Flow{}).ProtoReflect().Descriptor()
	for _, p := range fm.GetPaths() {
		node, desc := root, md
		parts := strings.Split(p, ".")
		for i, part := range parts {
			fd := desc.Fields().ByName(protoreflect.Name(part))
			if fd == nil {
				return nil, fmt.Errorf("field mask path %q: %s has no field %q", p, desc.FullName(), part)
			}
			last := i == len(parts)-1
			if last {
				node[fd.Name()] = nil // the whole field, even if a sub-path asked for less
				break
			}
			if fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return nil, fmt.Errorf("field mask path %q: %s is not a singular message", p, fd.FullName())
			}
			child, seen := node[fd.Name()]
			if seen && child == nil {
				break // the whole parent is kept already
			}
			if child == nil {
				child = fieldMask{}
				node[fd.Name()] = child
			}
			node, desc = child, fd.Message()
		}
	}
	return root, nil
}

// apply returns a new flow with only the masked fields (values are shared, not copied: the
// result is only marshalled).
func (m fieldMask) apply(f *flowpb.Flow) *flowpb.Flow {
	if m == nil {
		return f
	}
	out := &flowpb.Flow{}
	m.copy(f.ProtoReflect(), out.ProtoReflect())
	return out
}

func (m fieldMask) copy(src, dst protoreflect.Message) {
	fields := src.Descriptor().Fields()
	for name, child := range m {
		fd := fields.ByName(name)
		if !src.Has(fd) {
			continue
		}
		if child == nil {
			dst.Set(fd, src.Get(fd))
			continue
		}
		child.copy(src.Get(fd).Message(), dst.Mutable(fd).Message())
	}
}
