package spec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/narun/narun/applets/internal/config"
)

// FieldError is a problem with one key of a spec.
type FieldError struct {
	File string
	Line int // 0 when the key cannot be placed (e.g. a missing required key)
	Key  string
	Msg  string
	// against are the other keys a rule compared Key with.
	against []string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: key %q: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: key %q: %s", e.File, e.Key, e.Msg)
}

// validator collects every problem of a spec, each placed at its line.
type validator struct {
	file string
	data []byte
	errs []*FieldError
	// stored is set for a spec read back from narun-apps: the deploy-time
	// rules then go to outdated instead of errs.
	stored   bool
	outdated []*FieldError
	// lines is the line of each key and table of data, indexed at the
	// first problem: placing each problem by scanning the spec made one of
	// thousands of bad entries (a wrong file, or one made to slow a node
	// down) take seconds to refuse.
	lines map[string]int
}

// maxErrors is how many problems of a spec an error names.
const maxErrors = 50

func (v *validator) field(key, format string, args ...any) *FieldError {
	if v.lines == nil {
		v.lines = keyLines(v.data)
	}
	return &FieldError{File: v.file, Line: place(v.lines, key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) add(key, format string, args ...any) {
	v.put(v.field(key, format, args...), false)
}

// deployRule adds a problem found by a rule that came after specs had
// already been stored: a new deploy is refused for it, but a stored spec
// that breaks it ran before, and an upgrade of narun must not stop it.
// Such a rule only refuses what the runner ignores, what fails at start,
// or what the runner checks again itself where it matters: a file placed
// in data/ or tmp/ of a sandboxed app, which the app may write, is such a
// rule here and a permanent failure in the runner.
func (v *validator) deployRule(key, format string, args ...any) {
	v.put(v.field(key, format, args...), true)
}

// put adds e to the problems, to outdated if it is found by a deploy
// rule and the spec is a stored one.
func (v *validator) put(e *FieldError, deploy bool) {
	if deploy && v.stored {
		v.outdated = append(v.outdated, e)
		return
	}
	v.errs = append(v.errs, e)
}

// against is the validator of a rule that judges a key by others: when
// the decoder refused one of them, the rule would judge the default left
// in its place, which the spec never wrote, and its problem is dropped
// (judged).
func (v *validator) against(others ...string) rule {
	return rule{v, others}
}

// dropComparedWithRejected drops the problems of rules that compared a
// key with one another rule rejected outright: the comparison was with a
// value that cannot stand, and the problem is that key's alone. Only
// rules that judge a key by itself reject it, or two comparing rules
// could silence each other.
func (v *validator) dropComparedWithRejected() {
	var rejected []string
	for _, e := range v.errs {
		if e.against == nil {
			rejected = append(rejected, e.Key)
		}
	}
	compared := func(e *FieldError) bool {
		return slices.ContainsFunc(e.against, func(k string) bool {
			return slices.ContainsFunc(rejected, func(r string) bool { return within(k, r) || within(r, k) })
		})
	}
	v.errs = slices.DeleteFunc(v.errs, compared)
	v.outdated = slices.DeleteFunc(v.outdated, compared)
}

type rule struct {
	v      *validator
	others []string
}

func (r rule) add(key, format string, args ...any) {
	e := r.v.field(key, format, args...)
	e.against = r.others
	r.v.put(e, false)
}

func (r rule) deployRule(key, format string, args ...any) {
	e := r.v.field(key, format, args...)
	e.against = r.others
	r.v.put(e, true)
}

// joinFirst joins the first maxErrors of errs in the order of their lines,
// those without a line last, and counts the rest: the rules find problems
// in their own order (the names of [env] sorted), and the ones named must
// be the first of the file. nil if there are none.
func joinFirst(file string, errs []*FieldError) error {
	slices.SortStableFunc(errs, func(x, y *FieldError) int {
		return lineOrder(x.Line) - lineOrder(y.Line)
	})
	var all []error
	for _, e := range errs[:min(len(errs), maxErrors)] {
		all = append(all, e)
	}
	if len(errs) > maxErrors {
		all = append(all, fmt.Errorf("%s: %d more problems", file, len(errs)-maxErrors))
	}
	return errors.Join(all...)
}

// lineOrder puts errors without a line after the placed ones.
func lineOrder(l int) int {
	if l == 0 {
		return 1 << 30
	}
	return l
}

func (v *validator) check(key string, err error) {
	if err != nil {
		v.add(key, "%v", err)
	}
}

func (v *validator) port(key string, p int) {
	if p < 1 || p > 65535 {
		v.add(key, "want a port 1..65535, got %d", p)
	}
}

func (v *validator) maxDur(key string, d config.Duration, limit time.Duration) {
	if d.D() > limit {
		v.add(key, "%s is more than the maximum %s", d.D(), limit)
	}
}

// positiveDur checks a duration for which 0 means nothing useful; why says
// what 0 would do. A spec decodes over its defaults, so a 0 here was
// written, not left out.
func (v *validator) positiveDur(key string, d config.Duration, limit time.Duration, why string) {
	if d == 0 {
		v.deployRule(key, "want more than 0 and at most %s, got 0s: %s", limit, why)
		return
	}
	v.maxDur(key, d, limit)
}

// keyLines indexes the first line of each key path such as
// "restart.policy", "files[1].path" or "env.FOO", and of each table, in
// TOML source. The decoder keeps positions private, so this follows table
// headers, [[array]] counts and key names.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	record := func(path string, n int) {
		if _, ok := lines[path]; !ok {
			lines[path] = n
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	table := ""
	counts := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[[") {
			name := normKey(strings.Trim(strings.SplitN(line, "]]", 2)[0], "[ "))
			table = name + "[" + strconv.Itoa(counts[name]) + "]"
			counts[name]++
			record(table, n)
			continue
		}
		if line[0] == '[' {
			table = normKey(strings.Trim(strings.SplitN(line, "]", 2)[0], "[ "))
			record(table, n)
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			continue
		}
		full := normKey(line[:eq])
		if table != "" {
			full = table + "." + full
		}
		record(full, n)
	}
	return lines
}

// place returns the line of path in lines or, when the exact key is absent
// (a default, an inline table), the line of the closest enclosing key or
// table, and 0 if there is none.
func place(lines map[string]int, path string) int {
	if n, ok := lines[path]; ok {
		return n
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' && path[i] != '[' {
			continue
		}
		if n, ok := lines[path[:i]]; ok {
			return n
		}
	}
	return 0
}

// normKey turns `a . "b" ` into `a.b`.
func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}
