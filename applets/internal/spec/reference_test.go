package spec_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/testutil"
)

// referenceSections are the headings of docs/SPEC.md whose table lists
// the keys of a table of the spec, by the TOML name of that table ("" for
// the top level).
var referenceSections = map[string]string{
	"## Top-level keys": "",
	"## `[sandbox]` (only with `mode = \"sandbox\"`)": "sandbox",
	"## `[resources]`": "resources",
	"## `[restart]`":   "restart",
	"## `[health]`":    "health",
	"## `[http]`":      "http",
	"## `[[files]]`":   "files",
	"## `[[secrets]]`": "secrets",
	"## `[[routes]]`":  "routes",
}

// referenceRows reads the tables of docs/SPEC.md's key reference: the
// documented text of each key, by dotted name ("health.interval"). A
// section that is a table of the spec ("## `[http]`") documents that key
// of the top level too.
func referenceRows(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "docs", "SPEC.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	table, in, section := "", false, ""
	tick := regexp.MustCompile("`\\[*([a-z_.]+)\\]*`")
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "## ") {
			heading := strings.TrimSpace(line)
			table, in = referenceSections[heading]
			section = ""
			if m := regexp.MustCompile("^## `\\[+([a-z_]+)[].]").FindStringSubmatch(heading); m != nil {
				section = m[1]
				rows[section] = heading
			}
			continue
		}
		if section != "" && !strings.HasPrefix(line, "|") {
			// What the section says of its table as a whole.
			rows[section] += " " + strings.TrimSpace(line)
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			key := m[1]
			// A row of [sandbox] names its array of tables in full.
			key = strings.TrimPrefix(key, table+".")
			if table != "" {
				key = table + "." + key
			}
			rows[key] = strings.Join(cells[2:], "|")
		}
	}
	return rows
}

// tomlPaths lists the dotted keys a struct decodes, its tables' keys
// included, but for those of maps (names the operator chooses).
func tomlPaths(typ reflect.Type, prefix string) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, prefix+name)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, tomlPaths(ft, prefix+name+".")...)
		}
	}
	return out
}

// Every key the parser takes has a row in docs/SPEC.md, in the section of
// its table, and every row names a key the parser takes.
func TestReferenceNamesEveryKey(t *testing.T) {
	rows := referenceRows(t)
	keys := tomlPaths(reflect.TypeFor[spec.App](), "")
	for _, k := range keys {
		// Written by narun ctl, each documented by a section of its
		// own with an example.
		if strings.HasPrefix(k, "binaries.") {
			continue
		}
		// The keys of an array of tables in another table are in its
		// row ("[[sandbox.paths]]": "path" and "mode").
		parent, leaf := k[:max(strings.LastIndex(k, "."), 0)], k[strings.LastIndex(k, ".")+1:]
		if _, ok := rows[k]; !ok && !strings.Contains(rows[parent], "`"+leaf+"`") {
			t.Errorf("key %q is taken by the parser but has no row in docs/SPEC.md", k)
		}
	}
	for k := range rows {
		if !slices.Contains(keys, k) {
			t.Errorf("docs/SPEC.md documents key %q, which the parser does not take", k)
		}
	}
}

// Each row below is a bound docs/SPEC.md states for a key, held against
// what the parser does with a value on either side of it: the row of the
// key must say doc, and the spec with value must be refused or not, as
// refused says, naming the file, line and key.
func TestReferenceBounds(t *testing.T) {
	rows := referenceRows(t)
	const base = "name = \"app\"\nversion = \"1\"\nnodes = [\"node-1\"]\n"
	for _, tc := range []struct {
		key, doc string
		value    string // TOML after base
		refused  bool
		line     int
	}{
		{"replicas", "`0..100`", "replicas = 101", true, 4},
		{"replicas", "`0..100`", "replicas = -1", true, 4},
		{"replicas", "`0` keeps the spec", "replicas = 0", false, 0},
		{"stop_timeout", "at most `1h`", `stop_timeout = "1h0m1s"`, true, 4},
		{"stop_timeout", "at most `1h`", `stop_timeout = "10000000h"`, true, 4},
		{"stop_timeout", "More than 0", `stop_timeout = "0s"`, true, 4},
		{"resources.memory", "`4MiB..1TiB`", "[resources]\nmemory = \"4095KiB\"", true, 5},
		{"resources.memory", "`4MiB..1TiB`", "[resources]\nmemory = \"1025GiB\"", true, 5},
		{"resources.memory", "`4MiB..1TiB`", "[resources]\nmemory = \"1TiB\"", false, 0},
		{"resources.memory", "`4MiB..1TiB`", "[resources]\nmemory = \"99999999999TiB\"", true, 5},
		{"resources.memory", "`0` (no limit)", "[resources]\nmemory = -1", true, 5},
		{"resources.cpu", "`0.01..1024`", "[resources]\ncpu = 0.009", true, 5},
		{"resources.cpu", "`0.01..1024`", "[resources]\ncpu = 1024.5", true, 5},
		{"resources.cpu", "`0.01..1024`", "[resources]\ncpu = nan", true, 5},
		{"resources.pids", "2 up to `4194304`", "[resources]\npids = 1", true, 5},
		{"resources.pids", "2 up to `4194304`", "[resources]\npids = 4194305", true, 5},
		{"resources.pids", "2 up to `4194304`", "[resources]\npids = -1", true, 5},
		{"restart.initial_backoff", "Greater than 0, at most `1h`", "[restart]\ninitial_backoff = \"0s\"", true, 5},
		{"restart.initial_backoff", "Greater than 0, at most `1h`", "[restart]\ninitial_backoff = \"61m\"\nmax_backoff = \"61m\"", true, 5},
		{"restart.max_backoff", "at most `1h`", "[restart]\nmax_backoff = \"61m\"", true, 5},
		{"restart.max_backoff", "not below `initial_backoff`", "[restart]\ninitial_backoff = \"2s\"\nmax_backoff = \"1s\"", true, 6},
		{"restart.jitter", "`0..1`", "[restart]\njitter = 1.01", true, 5},
		{"restart.jitter", "`0..1`", "[restart]\njitter = -0.1", true, 5},
		{"restart.reset_after", "more than 0, at most `24h`", "[restart]\nreset_after = \"24h1s\"", true, 5},
		{"restart.reset_after", "more than 0, at most `24h`", "[restart]\nreset_after = \"0s\"", true, 5},
		{"restart.max_failures", "at most `10000`", "[restart]\nmax_failures = 10001", true, 5},
		{"restart.max_failures", "`0` retries forever", "[restart]\nmax_failures = -1", true, 5},
		{"health.interval", "at least `100ms`", "[health]\ntype = \"tcp\"\nport = 8080\ninterval = \"99ms\"", true, 7},
		{"health.interval", "unless `type = \"none\"`", "[health]\ntype = \"none\"\ninterval = \"1ms\"", false, 0},
		{"health.interval", "at most `1h`", "[health]\ninterval = \"61m\"", true, 5},
		{"health.timeout", "more than 0 (unless `type = \"none\"`), at most `1h`", "[health]\ntype = \"tcp\"\nport = 8080\ntimeout = \"0s\"", true, 7},
		{"health.timeout", "more than 0 (unless `type = \"none\"`), at most `1h`", "[health]\ntimeout = \"61m\"", true, 5},
		{"health.failures", "`1..1000`", "[health]\nfailures = 0", true, 5},
		{"health.failures", "`1..1000`", "[health]\nfailures = 1001", true, 5},
		{"health.start_grace", "more than 0", "[health]\nstart_grace = \"0s\"", true, 5},
		{"health.start_grace", "at most `1h`", "[health]\nstart_grace = \"61m\"", true, 5},
		{"health.min_healthy", "at most `1h`", "[health]\nmin_healthy = \"61m\"", true, 5},
		{"health.restart_after", "`1..1000`", "[health]\ntype = \"tcp\"\nport = 8080\nrestart_after = 1001", true, 7},
		{"health.restart_after", "`1..1000`", "[health]\nrestart_after = -1", true, 5},
		{"health.port", "`type = \"http\"` and `\"tcp\"`", "[health]\ntype = \"tcp\"\nport = 65536", true, 6},
		{"health.port", "a deploy refuses one out of range", "[health]\ntype = \"none\"\nport = 65536", true, 6},
		{"health.port", "a deploy refuses one out of range", "[health]\ntype = \"micro\"\nport = -1", true, 6},
		{"http.port", "(1–65535)", "[http]\nport = 65536", true, 5},
		{"http.port", "(1–65535)", "[http]\nport = 0", true, 5},
		{"routes.timeout", "At most `1h`", "[[routes]]\npath = \"/a\"\ntimeout = \"61m\"", true, 6},
		{"routes.max_body", "at most `1TiB`", "[[routes]]\npath = \"/a\"\nmax_body = \"1025GiB\"", true, 6},
		{"routes.max_body", "at most `1TiB`", "[[routes]]\npath = \"/a\"\nmax_body = -1", true, 6},
		{"sandbox.user", "`0`..`4294967294`", "mode = \"sandbox\"\n[sandbox]\nuser = \"4294967295\"", true, 6},
		{"sandbox", "is an error", "[sandbox]\nuser = \"nobody\"", true, 4},
		// An empty one too: it reads as "sandbox it with the defaults".
		{"sandbox", "is an error", "[sandbox]", true, 4},
	} {
		t.Run(tc.key+"/"+strings.ReplaceAll(tc.value, "\n", ";"), func(t *testing.T) {
			row, ok := rows[tc.key]
			if !ok {
				t.Fatalf("docs/SPEC.md has no row for %q", tc.key)
			}
			if !strings.Contains(row, tc.doc) {
				t.Errorf("docs/SPEC.md's row of %q does not say %s", tc.key, tc.doc)
			}
			_, err := spec.Parse("app.toml", []byte(base+tc.value+"\n"))
			switch {
			case !tc.refused && err != nil:
				t.Errorf("refused, though docs/SPEC.md allows it: %v", err)
			case tc.refused && err == nil:
				t.Errorf("accepted, though docs/SPEC.md refuses it")
			case tc.refused:
				want := "app.toml:" + strconv.Itoa(tc.line) + `: key "`
				unindexed := regexp.MustCompile(`\[\d+\]`).ReplaceAllString(err.Error(), "")
				if !strings.HasPrefix(err.Error(), want) || !strings.Contains(unindexed, `"`+tc.key+`"`) {
					t.Errorf("error does not name the file, line %d and key %q:\n%v", tc.line, tc.key, err)
				}
			}
		})
	}
}

// A port out of range under a check that uses none came after specs were
// stored: one stored with it runs on, told what a redeploy must fix.
func TestUnusedHealthPortOutOfRangeRunsOn(t *testing.T) {
	src := "name = \"app\"\nversion = \"1\"\nnodes = [\"node-1\"]\n[health]\ntype = \"none\"\nport = 65536\n"
	_, outdated, err := spec.ParseStored("app.toml", []byte(src))
	if err != nil || outdated == nil || !strings.Contains(outdated.Error(), `app.toml:6: key "health.port"`) {
		t.Errorf("stored spec: err %v, outdated %v; want it run, with health.port outdated", err, outdated)
	}
}

// An empty [sandbox] with mode = "exec" came after specs were stored: one
// stored with it runs on, told what a redeploy must fix.
func TestEmptySandboxTableWithExecRunsOn(t *testing.T) {
	src := "name = \"app\"\nversion = \"1\"\nnodes = [\"node-1\"]\n[sandbox]\n"
	_, outdated, err := spec.ParseStored("app.toml", []byte(src))
	if err != nil || outdated == nil || !strings.Contains(outdated.Error(), `app.toml:4: key "sandbox"`) {
		t.Errorf("stored spec: err %v, outdated %v; want it run, with sandbox outdated", err, outdated)
	}
}
