package ctl

import (
	"path/filepath"
	"testing"
)

// TestExitCodes runs each command into each outcome SPEC's table of exit
// codes names, against one server holding an app that uses an image, a
// file and a secret: a script branches on these codes, and on stdout
// holding nothing when a command fails.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := filepath.Join(h.dir, "secret.key")
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	h.ok("", "files", "put", "conf", h.file("conf", "x"))
	h.ok("", "deploy", h.file("hello.toml", helloSpec+"[[files]]\nobject = \"conf\"\npath = \"conf\"\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n"), "--binary", elfBinary(t))
	var object string
	for _, b := range h.historyOf("hello")[0].Binaries {
		object = b.Object
	}

	for _, c := range []struct {
		code int
		args []string
	}{
		{2, []string{"app"}},
		{2, []string{"app", "status"}},
		{2, []string{"app", "status", "a.b"}},
		{2, []string{"app", "list", "extra"}},
		{2, []string{"app", "list", "--bogus"}},
		{2, []string{"app", "restart", "hello", "--wait", "--timeout", "0s"}},
		{2, []string{"app", "rollback", "hello", "--to", "0"}},
		{2, []string{"logs", "hello", "--since", "-1s"}},
		{2, []string{"deploy"}},
		{2, []string{"image", "delete"}},
		{2, []string{"files", "put", "x"}},
		{2, []string{"secret", "set", "db", "value"}},
		{2, []string{"secret", "set", "db"}},
		{3, []string{"app", "status", "nope", "--json"}},
		{3, []string{"app", "delete", "nope"}},
		{3, []string{"app", "restart", "nope"}},
		{3, []string{"app", "history", "nope", "--json"}},
		{3, []string{"app", "history", "hello", "--revision", "999"}},
		{3, []string{"app", "rollback", "nope"}},
		{3, []string{"app", "rollback", "hello", "--to", "999"}},
		{3, []string{"logs", "nope", "--json"}},
		{3, []string{"image", "delete", "nope/1/linux-amd64"}},
		{3, []string{"files", "delete", "nope"}},
		{3, []string{"secret", "delete", "nope"}},
		{5, []string{"image", "delete", object}},
		{5, []string{"files", "delete", "conf"}},
		{5, []string{"secret", "delete", "db"}},
	} {
		r := h.run("", c.args...)
		if r.code != c.code || r.out != "" {
			t.Errorf("ctl %q: exit %d, want %d; stdout %q, want nothing\nstderr: %s", c.args, r.code, c.code, r.out, r.err)
		}
	}
	h.url = "nats://127.0.0.1:1"
	// A bad flag is a usage error with NATS down too: ctl checks the
	// command line before it connects.
	for _, args := range [][]string{
		{"app", "restart", "hello", "--wait", "--timeout", "0s"},
		{"app", "rollback", "hello", "--wait", "--timeout", "-1s"},
		{"app", "rollback", "hello", "--to", "0"},
		{"deploy", "hello.toml", "--wait", "--timeout", "0s"},
		{"logs", "hello", "--since", "-1s"},
	} {
		if r := h.run("", args...); r.code != 2 {
			t.Errorf("ctl %q without NATS: exit %d, want 2\nstderr: %s", args, r.code, r.err)
		}
	}
	for _, args := range [][]string{{"app", "list", "--json"}, {"node", "list", "--json"}, {"app", "status", "hello", "--json"}} {
		if r := h.run("", args...); r.code != 1 || r.out != "" {
			t.Errorf("ctl %q without NATS: exit %d, want 1; stdout %q, want nothing", args, r.code, r.out)
		}
	}
}
