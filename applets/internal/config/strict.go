package config

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/narun/narun/applets/internal/suggest"
)

// typeErr matches the decoder's type mismatch message, which carries the
// line and key only inside its text.
var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// DecodeStrict decodes TOML into v and refuses what it does not know: an
// unknown key or a value of the wrong type is an error that names the file,
// the line and the key, so a typo never silently falls back to a default;
// one error names them all, in line order (the first 20, and a count).
// Keys are case-sensitive, although the decoder sets a field from a key
// spelt like it but for case: such a key is unknown too, with a
// suggestion. The metadata tells a key written with its zero value from
// one left out.
func DecodeStrict(file string, data []byte, v any) (toml.MetaData, error) {
	md, _, err := decode(file, data, v, false)
	return md, err
}

// DecodeStored is DecodeStrict for a file that an earlier narun accepted
// and kept, such as a stored spec: that narun set a field from a key
// spelt like it but for case, and so does this, returning such keys (the
// first maxUnknownKeys) rather than refusing them, so that what ran runs
// on.
func DecodeStored(file string, data []byte, v any) (toml.MetaData, []Miscased, error) {
	return decode(file, data, v, true)
}

// Miscased is a key spelt like the field it sets but for case.
type Miscased struct {
	Key  string // as written
	Want string // as the field spells it
	Line int    // 0 when the key cannot be placed
}

func decode(file string, data []byte, v any, stored bool) (toml.MetaData, []Miscased, error) {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(v)
	var mistyped []problem
	if err != nil {
		if mistyped = typeErrors(file, data, v); mistyped == nil {
			_, err := placeError(file, data, v, err, 0)
			return md, nil, err
		}
	}
	// Every unknown key at once, with the values of the wrong type, so one
	// run finds all the typos; the keys inside an unknown table are that
	// table's, not more typos, and a miscased table is named once, not
	// with each key in it. Placing a key scans the file, so a file of
	// thousands of unknown keys (a wrong file, or one made to slow a node
	// down) names the first maxUnknownKeys and counts the rest. The
	// decoder lists its keys before it decodes, but which it decoded only
	// up to the first value of the wrong type: known tells them from the
	// type instead.
	named := map[string]bool{}
	var unknown []problem
	var miscased []Miscased
	var last string
	more := 0
	for _, key := range md.Keys() {
		name := key.String()
		var want string
		if !known(reflect.TypeOf(v), key) {
			if last != "" && strings.HasPrefix(name, last+".") {
				continue
			}
			last = name
		} else {
			spelt, parts := respell(reflect.TypeOf(v), key)
			fresh := false
			for _, i := range parts {
				if p := key[:i+1].String(); !named[p] {
					named[p], fresh = true, true
				}
			}
			if !fresh {
				continue
			}
			want = spelt.String()
		}
		switch {
		case want != "" && stored:
			if len(miscased) < maxUnknownKeys {
				miscased = append(miscased, Miscased{Key: name, Want: want, Line: keyLine(data, key)})
			}
		case len(unknown) == maxUnknownKeys:
			more++
		case want != "":
			line := keyLine(data, key)
			unknown = append(unknown, problem{line, fmt.Errorf("%s:%d: unknown key %q (did you mean %q?)", file, line, name, want), true})
		default:
			line := keyLine(data, key)
			unknown = append(unknown, problem{line, fmt.Errorf("%s:%d: unknown key %q%s", file, line, name, guess(reflect.TypeOf(v), key)), true})
		}
	}
	if err := joinProblems(file, unknown, more, mistyped); err != nil {
		return md, nil, err
	}
	return md, miscased, nil
}

// known reports whether the decoder takes key into a value of type t, as
// MetaData.Undecoded tells after a decode that succeeds: a key is unknown
// where it names no field of a struct; the keys of a map, and those below
// a type that decodes itself or a value of the wrong type, are taken.
func known(t reflect.Type, key toml.Key) bool {
	i := reach(t, key)
	if i == len(key) {
		return true
	}
	parent, _ := typeAt(t, key[:i], nil)
	for parent.Kind() == reflect.Pointer || parent.Kind() == reflect.Slice || parent.Kind() == reflect.Array {
		parent = parent.Elem()
	}
	return parent.Kind() != reflect.Struct || custom(parent)
}

// reach is how many parts of key, from the first, lead through t.
func reach(t reflect.Type, key toml.Key) int {
	i := 0
	for i < len(key) {
		if _, ok := typeAt(t, key[:i+1], nil); !ok {
			break
		}
		i++
	}
	return i
}

// problem is one error of a file, on its line (0 when it has none).
type problem struct {
	line    int
	err     error
	unknown bool // an unknown key, not a value of the wrong type
}

// joinProblems names unknown, the file's first unknown keys in the order
// they are written (more is how many followed), and mistyped, its values
// of the wrong type, in the order of their lines: the first
// maxUnknownKeys of them, then a count of the rest of each kind. nil when
// there are none.
func joinProblems(file string, unknown []problem, more int, mistyped []problem) error {
	// The decoder meets values in map order: the text breaks ties among
	// them, the order written among unknown keys.
	slices.SortFunc(mistyped, func(a, b problem) int {
		return cmp.Or(cmp.Compare(lineOrder(a.line), lineOrder(b.line)), strings.Compare(a.err.Error(), b.err.Error()))
	})
	found := slices.Concat(unknown, mistyped)
	slices.SortStableFunc(found, func(a, b problem) int { return cmp.Compare(lineOrder(a.line), lineOrder(b.line)) })
	// The entries of a list of tables share their key, and the decoder
	// places them all on one line.
	found = slices.CompactFunc(found, func(a, b problem) bool { return a.err.Error() == b.err.Error() })
	var all []error
	moreMistyped := 0
	for i, p := range found {
		switch {
		case i < maxUnknownKeys:
			all = append(all, p.err)
		case p.unknown:
			more++
		default:
			moreMistyped++
		}
	}
	if more > 0 {
		all = append(all, fmt.Errorf("%s: %d more unknown keys", file, more))
	}
	if moreMistyped > 0 {
		all = append(all, fmt.Errorf("%s: %d more values of the wrong type", file, moreMistyped))
	}
	return errors.Join(all...)
}

// JoinByLine joins errs, and the errors joined in each (at any depth), in
// the order of the lines they name as "file:line: ", those without a line
// last in the order given; nil when all are nil. It merges a decoder's
// error, which names the refused values, with what checks of the values
// that decoded found, and the problems each check of an applet found.
func JoinByLine(file string, errs ...error) error {
	var all []problem
	var add func(errs []error)
	add = func(errs []error) {
		for _, e := range errs {
			if e == nil {
				continue
			}
			if parts := Joined(e); parts != nil {
				add(parts)
				continue
			}
			n := 0
			if rest, ok := strings.CutPrefix(e.Error(), file+":"); ok {
				digits, _, _ := strings.Cut(rest, ":")
				n, _ = strconv.Atoi(digits)
			}
			all = append(all, problem{line: n, err: e})
		}
	}
	add(errs)
	slices.SortStableFunc(all, func(a, b problem) int { return cmp.Compare(lineOrder(a.line), lineOrder(b.line)) })
	out := make([]error, len(all))
	for i, p := range all {
		out[i] = p.err
	}
	return errors.Join(out...)
}

// Joined is the errors errors.Join joined into err, nil when another
// made it: a message that wraps several ("%w: %w") is one problem, whose
// words around them would be lost if it were split.
func Joined(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil
	}
	parts := j.Unwrap()
	var texts []string
	for _, e := range parts {
		texts = append(texts, e.Error())
	}
	if strings.Join(texts, "\n") != err.Error() {
		return nil
	}
	return parts
}

// lineOrder puts a problem without a line after the placed ones.
func lineOrder(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}

// controlCharMessage begins the decoder's message for a control
// character in the file.
const controlCharMessage = "TOML files cannot contain control characters"

// writtenTwice matches the decoder's message for a key or table defined
// a second time.
var writtenTwice = regexp.MustCompile(`^Key '(.*)' has already been defined\.$`)

// placeError names the file, line and key of err, an error of the
// decoder decoding data into v, in TOML's terms; line is 0 when err has
// none. at, unless 0, is the line of a value of the wrong type, where
// the caller knows it better than the decoder.
func placeError(file string, data []byte, v any, err error, at int) (line int, placed error) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The message may quote the input it stopped at, line breaks
		// and all: one line, so that each line of an error names the
		// file.
		msg := strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(pe.Message)
		pos := pe.Position
		if strings.HasPrefix(pe.Message, controlCharMessage) {
			// The decoder (BurntSushi/toml 1.6.0) points at the byte
			// before the control character, the line break before it when
			// the character starts a line, so the error named the line
			// above.
			pos.Start++
		}
		line := errorLine(data, pos)
		// The decoder's own words, unlike every other problem's.
		if m := writtenTwice.FindStringSubmatch(pe.Message); m != nil {
			return line, fmt.Errorf("%s:%d: key %q: written twice: TOML takes each key and table once", file, line, m[1])
		}
		if pe.LastKey != "" {
			return line, fmt.Errorf("%s:%d: key %q: %s", file, line, pe.LastKey, msg)
		}
		return line, fmt.Errorf("%s:%d: %s", file, line, msg)
	}
	if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
		key, uerr := strconv.Unquote(m[2])
		line, aerr := strconv.Atoi(m[1])
		if at > 0 {
			line = at
		}
		if uerr == nil && aerr == nil {
			return line, fmt.Errorf("%s:%d: key %q: %s", file, line, key, typeMessage(v, key, m[3]))
		}
	}
	return 0, fmt.Errorf("%s: %w", file, err)
}

// typeErrors names every value of data that v's field has another type
// for, the maps the decoder leaves empty (MistypedTables) among them; nil
// when data does not parse, or has no such value. The decoder stops at
// the first it meets, taking the keys of a table in map order: a user who
// fixed the one named was told of the next only at the next try. Each
// table and list of tables is decoded on its own, and looked into when it
// fails.
func typeErrors(file string, data []byte, v any) []problem {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return nil
	}
	var found []problem
	// key is the value's as DecodeWhatDecodes names it, with the index of
	// each entry of a list of tables: the decoder's own line for a key of
	// an entry is that of the same key in the list's last entry.
	var check func(t reflect.Type, prim toml.Primitive, key string)
	fields := func(t reflect.Type, prims map[string]toml.Primitive, key string) {
		for k, prim := range prims {
			// decode names the unknown keys, types right or wrong.
			if f, _, ok := field(t, k); ok {
				check(f.Type, prim, strings.TrimPrefix(key+"."+k, "."))
			}
		}
	}
	check = func(t reflect.Type, prim toml.Primitive, key string) {
		t = deref(t)
		err := md.PrimitiveDecode(prim, reflect.New(t).Interface())
		if err == nil {
			return
		}
		var table map[string]toml.Primitive
		var list []toml.Primitive
		switch {
		case custom(t):
		case t.Kind() == reflect.Struct:
			if md.PrimitiveDecode(prim, &table) == nil {
				fields(t, table, key)
				return
			}
		case t.Kind() == reflect.Map:
			if md.PrimitiveDecode(prim, &table) == nil {
				for k, p := range table {
					check(t.Elem(), p, key+"."+k)
				}
				return
			}
		case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
			// A list of plain values is named once, not once per value.
			elem := deref(t.Elem())
			if (elem.Kind() == reflect.Struct || elem.Kind() == reflect.Map) && !custom(elem) && md.PrimitiveDecode(prim, &list) == nil {
				for i, p := range list {
					check(elem, p, key+"["+strconv.Itoa(i)+"]")
				}
				return
			}
		}
		at, _ := entryLine(data, key)
		line, placed := placeError(file, data, v, err, at)
		found = append(found, problem{line: line, err: placed})
	}
	fields(deref(reflect.TypeOf(v)), top, "")
	if len(found) == 0 {
		return nil
	}
	for _, m := range MistypedTables(data, v) {
		line := keyLine(data, m.path)
		found = append(found, problem{line: line, err: fmt.Errorf("%s:%d: key %q: want %s, got %s", file, line, m.Key, m.Want, m.Got)})
	}
	return found
}

// deref is t without its pointers.
func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// errorLine is the line of the byte a parse error points at. The decoder's
// own line count has already gone past a line break it stopped at (an
// unclosed "[gateway"), and would send the reader to the line below.
func errorLine(data []byte, pos toml.Position) int {
	// The decoder counts from after a byte order mark, as it reads.
	switch {
	case bytes.HasPrefix(data, []byte("\xef\xbb\xbf")):
		data = data[3:]
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		data = data[2:]
	}
	if pos.Start < 0 || pos.Start > len(data) || pos.Len == 0 {
		return pos.Line
	}
	return 1 + bytes.Count(data[:pos.Start], []byte("\n"))
}

// guess is what an unknown key probably meant, as the end of its error:
// " (did you mean ...)", or "" without one guess. The first part of the key
// that names nothing is taken for a top-level key written below a table
// header, which TOML reads as that table's (the common slip of adding a
// line at the end of a file), or else for a typo of the one key of its
// table that is within two edits.
func guess(t reflect.Type, key toml.Key) string {
	i := reach(t, key)
	if i == len(key) {
		return ""
	}
	if _, ok := typeAt(t, key[i:], nil); ok && i > 0 {
		return fmt.Sprintf(" (did you mean the top-level %q? write it above the first table)", key[i:].String())
	}
	parent, _ := typeAt(t, key[:i], nil)
	near := suggest.Nearest(key[i], fieldNames(parent))
	if near == "" {
		return ""
	}
	meant := slices.Clone(key)
	meant[i] = near
	return fmt.Sprintf(" (did you mean %q?)", meant.String())
}

// fieldNames lists the keys a value of type t takes: its fields' as the
// decoder reads them (fieldBy's names), through pointers, lists and
// embedded structs; none for a type that is not a struct or decodes
// itself.
func fieldNames(t reflect.Type) []string {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || custom(t) {
		return nil
	}
	var names []string
	fieldBy(t, func(name string) bool {
		names = append(names, name)
		return false
	})
	return names
}

// respell returns key as the fields of t that it sets spell it, and the
// indexes of its parts that differ from that but for case. The keys of a
// map, and those below a type that decodes itself, are its own.
func respell(t reflect.Type, key toml.Key) (toml.Key, []int) {
	spelt := slices.Clone(key)
	var parts []int
	typeAt(t, key, func(i int, name string) {
		if name != key[i] {
			spelt[i] = name
			parts = append(parts, i)
		}
	})
	return spelt, parts
}

// maxUnknownKeys is how many unknown keys an error names.
const maxUnknownKeys = 20

// keyLine finds the line where key is defined. The TOML decoder keeps key
// positions private, so this follows table headers and key names in the
// source, read as TOML reads them (bare, quoted, dotted); it returns 0
// when the key cannot be placed.
func keyLine(data []byte, key toml.Key) int {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var table []string
	fallback := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			name, _ := upTo(strings.TrimLeft(line, "["), ']')
			parts, ok := keyParts(name)
			if !ok {
				continue
			}
			if slices.Equal(parts, key) {
				return n
			}
			table = parts
			continue
		}
		k, found := upTo(line, '=')
		parts, ok := keyParts(k)
		if !found || !ok {
			continue
		}
		path := slices.Concat(table, parts)
		if len(path) <= len(key) && slices.Equal(path, key[:len(path)]) {
			return n
		}
		if fallback == 0 && parts[len(parts)-1] == key[len(key)-1] {
			fallback = n
		}
	}
	return fallback
}

// upTo returns s up to the first stop outside quotes, and whether there
// is one.
func upTo(s string, stop byte) (string, bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case c == stop:
			return s[:i], true
		}
	}
	return s, false
}

// keyParts splits a key as written, bare or quoted and dotted, into the
// parts TOML reads: ["a b" . c] and 'a b'.c are both [a b, c]. ok is
// false for text that is no key.
func keyParts(s string) (parts []string, ok bool) {
	s = strings.TrimSpace(s)
	for {
		var part string
		switch {
		case strings.HasPrefix(s, `"`):
			end := 1
			for ; end < len(s) && s[end] != '"'; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return nil, false
			}
			unquoted, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, false
			}
			part, s = unquoted, s[end+1:]
		case strings.HasPrefix(s, "'"):
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, false
			}
			part, s = s[1:end+1], s[end+2:]
		default:
			end := strings.IndexAny(s, ". \t")
			if end < 0 {
				end = len(s)
			}
			if end == 0 {
				return nil, false
			}
			part, s = s[:end], s[end:]
		}
		parts = append(parts, part)
		s = strings.TrimSpace(s)
		if s == "" {
			return parts, true
		}
		if s[0] != '.' {
			return nil, false
		}
		s = strings.TrimSpace(s[1:])
	}
}

// ArrayTableLines returns the line of each [[name]] header in data, in
// order, so that an error about the n-th entry of an array of tables can
// name its line. Entries written inline (name = [{...}]) have no header:
// the caller compares the count with the entries decoded.
func ArrayTableLines(data []byte, name string) []int {
	var lines []int
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "[[") {
			continue
		}
		header, _, ok := strings.Cut(line[2:], "]]")
		if ok && strings.TrimSpace(header) == name {
			lines = append(lines, n)
		}
	}
	return lines
}
