package ctl

import (
	"strings"
	"testing"
)

// A deployed spec pins the content of each [[files]] object: a files put
// over one that an app uses reaches its instances only with app restart.
// files put said nothing of it, and an operator used to config maps that
// update themselves waited for a change that never came.
func TestFilesPutNamesTheAppsToRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "app.conf", h.file("a", "answer = 1\n"))
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"app.conf\"\npath = \"app.conf\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	r := h.ok("", "files", "put", "app.conf", h.file("b", "answer = 2\n"))
	want := "app.conf is used by app, whose instances keep the content they were deployed with: narun ctl app restart app rolls this one out"
	if !strings.Contains(r.out+r.err, want) {
		t.Errorf("files put of a file in use: stdout %q, stderr %q; want %q", r.out, r.err, want)
	}
	if r := h.ok("", "files", "put", "other", h.file("c", "x\n")); strings.Contains(r.out+r.err, "restart") {
		t.Errorf("files put of a file no app uses: stdout %q, stderr %q", r.out, r.err)
	}
}
