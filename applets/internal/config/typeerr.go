package config

import (
	"encoding"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The decoder's two wordings of a value of the wrong type; both speak of Go
// types, which a person writing TOML does not know.
var (
	badTypeErr   = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (.+)$`)
	notTableErr  = regexp.MustCompile(`^type mismatch for (\S+): expected table but found (\S+)$`)
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// typeMessage rewrites the decoder's type mismatch text for key into what
// the key wants and what it got, in TOML's terms. What the key wants comes
// from the Go type at key's path in v, which is reliable when the
// decoder's own destination agrees with it; otherwise the decoder's
// destination kind is named, or nothing more precise than "another type".
// A text that is no type mismatch is returned as it is.
func typeMessage(v any, key, msg string) string {
	var got, dst string
	if m := badTypeErr.FindStringSubmatch(msg); m != nil {
		got, dst = m[1], m[2]
	} else if m := notTableErr.FindStringSubmatch(msg); m != nil {
		got, dst = m[2], "table"
	} else {
		return msg
	}
	gotWords := goTypeWords(got)
	want := kindWords(dst)
	if t, ok := typeAt(reflect.TypeOf(v), splitKey(key), nil); ok {
		switch {
		case matches(t, dst):
			want = typeWords(t)
		case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && matches(t.Elem(), dst):
			want = typeWords(t)
			gotWords = "a list holding " + gotWords
		}
	}
	return "want " + want + ", got " + gotWords
}

// TOMLKind names the TOML kind of a decoded value, for types with an
// UnmarshalTOML that refuse some kinds.
func TOMLKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date or time"
	}
	return "a value of another type"
}

// goTypeWords names the TOML kind of a value from the Go type the decoder
// names in its message.
func goTypeWords(name string) string {
	switch {
	case name == "string":
		return "a string"
	case name == "int64":
		return "an integer"
	case name == "float64":
		return "a float"
	case name == "bool":
		return "a boolean"
	case strings.HasPrefix(name, "[]"):
		return "a list"
	case strings.HasPrefix(name, "map["):
		return "a table"
	case name == "time.Time":
		return "a date or time"
	}
	return "a value of another type"
}

// kindWords names the decoder's destination kind when the Go type at the
// key cannot be trusted to be the one it refers to.
func kindWords(dst string) string {
	switch dst {
	case "string":
		return "a string"
	case "integer":
		return "an integer"
	case "float":
		return "a number"
	case "boolean":
		return "true or false"
	case "slice":
		return "a list"
	case "map", "table":
		return "a table"
	}
	return "a value of another type"
}

// matches reports whether the decoder's destination kind dst describes t.
func matches(t reflect.Type, dst string) bool {
	if custom(t) {
		return dst == "primitive (string-like)"
	}
	switch t.Kind() {
	case reflect.String:
		return dst == "string"
	case reflect.Float32, reflect.Float64:
		return dst == "float"
	case reflect.Bool:
		return dst == "boolean"
	case reflect.Slice, reflect.Array:
		return dst == "slice"
	case reflect.Map:
		return dst == "map"
	case reflect.Struct:
		return dst == "table"
	}
	return isInt(t) && dst == "integer"
}

// typeWords says what a value of Go type t is written as in TOML.
func typeWords(t reflect.Type) string {
	switch t {
	case durationType:
		return `a duration such as "30s"`
	case sizeType:
		return `a size such as "64MiB"`
	}
	if custom(t) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list of " + plural(t.Elem())
	case reflect.Map:
		return "a table of " + plural(t.Elem())
	case reflect.Struct:
		return "a table"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	if isInt(t) {
		return "an integer"
	}
	return "a value of another type"
}

func isInt(t reflect.Type) bool {
	return t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
}

// plural names the elements of a list or table of Go type t.
func plural(t reflect.Type) string {
	switch t {
	case durationType:
		return "durations"
	case sizeType:
		return "sizes"
	}
	if custom(t) {
		return "strings"
	}
	switch t.Kind() {
	case reflect.String:
		return "strings"
	case reflect.Bool:
		return "booleans"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	case reflect.Slice, reflect.Array:
		return "lists"
	case reflect.Map, reflect.Struct:
		return "tables"
	}
	if isInt(t) {
		return "integers"
	}
	return "values"
}

// custom reports whether values of t decode themselves.
func custom(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) || p.Implements(reflect.TypeFor[toml.Unmarshaler]())
}

// typeAt follows a key path through t the way the decoder does: struct
// fields by toml tag (or by name when untagged), as written or else
// ignoring case, any key of a map, and through lists, whose elements have
// no key of their own. spell, unless nil, is told the index in path and
// the field's own spelling of each part that names a struct field, up to
// where the path leaves t.
func typeAt(t reflect.Type, path []string, spell func(i int, spelt string)) (reflect.Type, bool) {
	for i := 0; ; {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == nil {
			return nil, false
		}
		if i == len(path) {
			return t, true
		}
		if custom(t) {
			return nil, false
		}
		switch t.Kind() {
		case reflect.Slice, reflect.Array:
			t = t.Elem()
			continue
		case reflect.Map:
			t = t.Elem()
		case reflect.Struct:
			f, spelt, ok := field(t, path[i])
			if !ok {
				return nil, false
			}
			if spell != nil {
				spell(i, spelt)
			}
			t = f.Type
		default:
			return nil, false
		}
		i++
	}
}

// field finds the struct field that TOML key name decodes into, as the
// decoder does: the one spelt name, or else the first spelt name but for
// case; spelt is the field's own spelling.
func field(t reflect.Type, name string) (f reflect.StructField, spelt string, ok bool) {
	if f, spelt, ok = fieldBy(t, func(s string) bool { return s == name }); ok {
		return f, spelt, ok
	}
	return fieldBy(t, func(s string) bool { return strings.EqualFold(s, name) })
}

// fieldBy finds the first field of t, or of a struct embedded in it, whose
// toml tag (or name, when untagged) is one that match accepts.
func fieldBy(t reflect.Type, match func(string) bool) (reflect.StructField, string, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case tag == "-" || !f.IsExported():
		case tag == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			if inner, spelt, ok := fieldBy(f.Type, match); ok {
				return inner, spelt, true
			}
		case tag == "" && match(f.Name):
			return f, f.Name, true
		case tag != "" && match(tag):
			return f, tag, true
		}
	}
	return reflect.StructField{}, "", false
}

// splitKey undoes toml.Key.String: parts joined by dots, quoted when they
// are not bare keys.
func splitKey(key string) []string {
	var parts []string
	for key != "" {
		if key[0] == '"' {
			if q, err := strconv.QuotedPrefix(key); err == nil {
				s, _ := strconv.Unquote(q)
				parts = append(parts, s)
				key = strings.TrimPrefix(key[len(q):], ".")
				continue
			}
		}
		part, rest, _ := strings.Cut(key, ".")
		parts = append(parts, part)
		key = rest
	}
	return parts
}

// Mistyped is a key whose Go destination is a map but whose TOML value is
// not a table.
type Mistyped struct {
	Key       string
	Want, Got string
	path      toml.Key
}

// MistypedTables finds the keys of data that v wants as a table of values
// (a Go map, such as labels or env) but that hold something else. The TOML
// decoder leaves such a map empty without an error, so `labels = "edge"`
// would silently select nothing.
func MistypedTables(data []byte, v any) []Mistyped {
	var doc map[string]any
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		return nil // DecodeStrict reports it
	}
	var found []Mistyped
	for _, key := range md.Keys() {
		t, ok := typeAt(reflect.TypeOf(v), key, nil)
		if !ok || t.Kind() != reflect.Map || custom(t) {
			continue
		}
		if got := md.Type(key...); got != "Hash" {
			found = append(found, Mistyped{Key: key.String(), Want: typeWords(t), Got: tomlTypeWords(got), path: key})
		}
	}
	return found
}

// tomlTypeWords names a TOML type as the decoder's metadata spells it.
func tomlTypeWords(name string) string {
	switch name {
	case "String":
		return "a string"
	case "Integer":
		return "an integer"
	case "Float":
		return "a float"
	case "Bool":
		return "a boolean"
	case "Datetime":
		return "a date or time"
	case "Array", "ArrayHash":
		return "a list"
	}
	return "a value of another type"
}

// DecodeWhatDecodes decodes into v (a pointer to a struct) every value of
// data that has its field's type and that the type takes, where the
// decoder stopped at the first that did not, and returns the keys of the
// others as a validator names them ("restart.max_backoff",
// "routes[1].timeout", "env.A"); none when data does not parse or every
// value decodes. Unknown keys are left for DecodeStrict to name. It walks
// data as typeErrors does.
func DecodeWhatDecodes(data []byte, v any) []string {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return nil
	}
	var refused []string
	var into func(prim toml.Primitive, dst reflect.Value, key string) bool
	fields := func(table map[string]toml.Primitive, dst reflect.Value, key string) {
		for k, p := range table {
			f, _, ok := field(dst.Type(), k)
			if !ok {
				continue
			}
			// An embedded struct behind a nil pointer has nowhere to
			// decode to: left as the decoder left it.
			if fv, err := dst.FieldByIndexErr(f.Index); err == nil {
				into(p, fv, strings.TrimPrefix(key+"."+k, "."))
			}
		}
	}
	into = func(prim toml.Primitive, dst reflect.Value, key string) bool {
		if md.PrimitiveDecode(prim, dst.Addr().Interface()) == nil {
			return true
		}
		t := dst.Type()
		ok := false
		switch {
		case custom(t):
		case t.Kind() == reflect.Struct:
			var table map[string]toml.Primitive
			if ok = md.PrimitiveDecode(prim, &table) == nil; ok {
				fields(table, dst, key)
			}
		case t.Kind() == reflect.Map:
			var table map[string]toml.Primitive
			if ok = md.PrimitiveDecode(prim, &table) == nil; ok {
				m := reflect.MakeMapWithSize(t, len(table))
				for k, p := range table {
					elem := reflect.New(t.Elem()).Elem()
					if into(p, elem, key+"."+k) {
						m.SetMapIndex(reflect.ValueOf(k), elem)
					}
				}
				dst.Set(m)
			}
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			// A list of plain values is refused whole, as typeErrors
			// names it.
			var list []toml.Primitive
			if ok = md.PrimitiveDecode(prim, &list) == nil; ok {
				s := reflect.MakeSlice(t, len(list), len(list))
				for i, p := range list {
					into(p, s.Index(i), key+"["+strconv.Itoa(i)+"]")
				}
				dst.Set(s)
			}
		}
		if !ok {
			refused = append(refused, key)
		}
		return ok
	}
	fields(top, reflect.ValueOf(v).Elem(), "")
	return refused
}
