package top

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every JSON field of the frame a user can script against is documented in
// docs/top-dns-json.md (as `name` in a table row).
func TestJSONFieldsDocumented(t *testing.T) {
	checkJSONFieldsDocumented(t, "top-dns-json.md", reflect.TypeOf(Frame{}))
}

// checkJSONFieldsDocumented fails for every JSON field of root, and of the structs of this
// package it holds, that docs/<doc> does not name as `name`.
func checkJSONFieldsDocumented(t *testing.T, doc string, root reflect.Type) {
	t.Helper()
	text, err := os.ReadFile("../../docs/" + doc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() != root.PkgPath() {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(string(text), "`"+name+"`") {
				t.Errorf("%s.%s (json %q) is not in docs/%s", typ.Name(), f.Name, name, doc)
			}
			walk(f.Type)
		}
	}
	walk(root)
}
