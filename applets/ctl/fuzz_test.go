package ctl

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReorder moves the flags of arbitrary command lines: no argument is
// lost, added or changed (a "--" aside, which keeps a positional
// argument that looks like a flag from being read as one), and the
// program name stays first.
func FuzzReorder(f *testing.F) {
	for _, s := range []string{
		"app status hello --json", "deploy a.toml --binary x --binary y --wait", "app list --nats-url nats://x:1",
		"logs -f hello --since=10m", "secret set db -- --weird", "app status --generate-bash-completion",
		"- --timeout", "deploy --binary", "node -- list --json --",
	} {
		f.Add(s)
	}
	app := newApp(cliIO(), "ctl")
	f.Fuzz(func(t *testing.T, line string) {
		args := append([]string{"ctl"}, strings.Fields(line)...)
		got := reorder(app, args)
		if got[0] != "ctl" {
			t.Fatalf("reorder(%q) = %q: program name moved", args, got)
		}
		withoutSep := func(a []string) []string {
			a = slices.DeleteFunc(slices.Clone(a), func(s string) bool { return s == "--" })
			slices.Sort(a)
			return a
		}
		if !slices.Equal(withoutSep(got), withoutSep(args)) {
			t.Fatalf("reorder(%q) = %q: arguments lost or added", args, got)
		}
	})
}

// FuzzShown makes arbitrary text from NATS (event reasons, log lines)
// safe for a terminal: no control character, bidirectional override or
// isolate (which reverse the rest of a table row on terminals that lay
// out right-to-left text) or invalid UTF-8 is left, and text that has
// none is left as it is.
func FuzzShown(f *testing.F) {
	for _, s := range []string{"healthy", "crashed (exit 1)\x1b[2J", "\xff\xfe", "tab\tok", "\u009b31m", "é\x7f", "exe.\u202egnp", "a\u2066b\u2069c", "\u202a\u202b\u202c\u202d\u2067\u2068"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := shown(s)
		if !utf8.ValidString(got) {
			t.Fatalf("shown(%q) = %q, not UTF-8", s, got)
		}
		acts := func(r rune) bool {
			return r != '\t' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0) || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
		}
		clean := true
		for _, r := range got {
			if acts(r) {
				t.Fatalf("shown(%q) = %q keeps %U", s, got, r)
			}
		}
		for _, r := range s {
			clean = clean && r != utf8.RuneError && !acts(r)
		}
		if clean && got != s {
			t.Fatalf("shown(%q) = %q, changed text with nothing to escape", s, got)
		}
	})
}
