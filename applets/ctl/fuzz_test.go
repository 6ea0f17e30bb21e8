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
// safe for a terminal: no control character or invalid UTF-8 is left,
// and text that has none is left as it is.
func FuzzShown(f *testing.F) {
	for _, s := range []string{"healthy", "crashed (exit 1)\x1b[2J", "\xff\xfe", "tab\tok", "\u009b31m", "é\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := shown(s)
		if !utf8.ValidString(got) {
			t.Fatalf("shown(%q) = %q, not UTF-8", s, got)
		}
		clean := true
		for _, r := range got {
			if r != '\t' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0) {
				t.Fatalf("shown(%q) = %q keeps %U", s, got, r)
			}
		}
		for _, r := range s {
			clean = clean && r != utf8.RuneError && (r == '\t' || r >= 0x20 && r != 0x7f && (r < 0x80 || r >= 0xa0))
		}
		if clean && got != s {
			t.Fatalf("shown(%q) = %q, changed text with nothing to escape", s, got)
		}
	})
}
