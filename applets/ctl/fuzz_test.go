package ctl

import (
	"slices"
	"strings"
	"testing"
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
