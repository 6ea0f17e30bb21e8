package ctl

import (
	"strings"
	"testing"
)

// A running instance got its secrets when it started: a new value under
// the same name reaches it at its next start. secret set said nothing of
// it, and an operator who rotated a leaked token saw the app still use the
// old one, as files put once left them waiting (TestFilesPutNamesTheAppsToRestart).
func TestSecretSetNamesTheAppsToRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v1\n", "--key-file", key, "secret", "set", "db")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	r := h.ok("v2\n", "--key-file", key, "secret", "set", "db")
	want := "db is used by app, whose running instances keep the value they started with: narun ctl app restart app rolls this one out"
	if !strings.Contains(r.out+r.err, want) {
		t.Errorf("secret set of a secret in use: stdout %q, stderr %q; want %q", r.out, r.err, want)
	}
	if r := h.ok("x\n", "--key-file", key, "secret", "set", "other"); strings.Contains(r.out+r.err, "restart") {
		t.Errorf("secret set of a secret no app uses: stdout %q, stderr %q", r.out, r.err)
	}
}
