package ctl

import (
	"strings"
	"testing"
)

// A duration flag given a bare number is the most common slip (a
// timeout in seconds): the error names the flag as it is typed and says
// what a duration looks like, as spec files do. Valid values still work.
func TestDurationFlagError(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"logs", "web", "--since", "10"}, `--since "10": want a duration such as 10m (a number needs a unit: s, m, h)`},
		{[]string{"logs", "web", "--since", "ten"}, `--since "ten": want a duration such as 10m`},
		{[]string{"deploy", "app.toml", "--wait", "--timeout", "2"}, `--timeout "2": want a duration such as 10m (a number needs a unit: s, m, h)`},
		{[]string{"--timeout", "2", "app", "list"}, `--timeout "2": want a duration such as 10m (a number needs a unit: s, m, h)`},
	} {
		r := h.fails(2, "", c.args...)
		if !strings.Contains(r.err, c.want) || strings.Contains(r.err, "parse error") {
			t.Errorf("ctl %q: stderr %q, want %q", c.args, r.err, c.want)
		}
	}
	if r := h.fails(1, "", "logs", "--since", "10m", "nope"); strings.Contains(r.err, "since") {
		t.Errorf("--since 10m: %s", r.err)
	}
}

// A number flag given something else said only "parse error", which
// names neither what is wrong nor what is wanted: --to -3, a revision
// typed with its sign, or --tail 10m, a duration where a count goes.
func TestNumberFlagError(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "rollback", "web", "--to", "-3"}, `--to "-3": want a revision number, 1 or more (narun ctl app history lists them)`},
		{[]string{"app", "history", "web", "--revision", "two"}, `--revision "two": want a revision number, 1 or more (narun ctl app history lists them)`},
		{[]string{"logs", "web", "--tail", "10m"}, `--tail "10m": want a number of lines, 0 or more`},
		{[]string{"logs", "web", "-n", "x"}, `-n "x": want a number of lines, 0 or more`},
	} {
		r := h.fails(2, "", c.args...)
		if !strings.Contains(r.err, c.want) || strings.Contains(r.err, "parse error") {
			t.Errorf("ctl %q: stderr %q, want %q", c.args, r.err, c.want)
		}
	}
}
