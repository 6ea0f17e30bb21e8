package ctl

import (
	"strings"
	"testing"
)

// A mistyped subcommand gets a guess, as a mistyped name does: among its
// siblings, or else among ctl's commands (logs is not under app).
func TestSubcommandDidYouMean(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "stauts", "hello"}, `unknown command "stauts" after app: want one of list, status, events, delete, restart, history, rollback (did you mean "status"? if not: --help says more)`},
		{[]string{"secret", "sett", "x"}, `(did you mean "set"?`},
		{[]string{"lgos", "hello"}, `unknown command "lgos": want one of deploy, app, logs, node, image, secret, files, route, signing, completion, version (did you mean "logs"?`},
		{[]string{"app", "logz"}, `(did you mean "narun ctl logs"?`},
		{[]string{"app", "logs", "hello"}, `(did you mean "narun ctl logs"?`},
		{[]string{"app", "frobnicate"}, `want one of list, status, events, delete, restart, history, rollback (--help says more)`},
	} {
		r := h.fails(2, "", c.args...)
		if !strings.Contains(r.err, c.want) {
			t.Errorf("ctl %s: %q, want %q", strings.Join(c.args, " "), r.err, c.want)
		}
	}
}
