package ctl

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// Without --to, a rollback passes over the revisions that differ from the
// current spec only in restarted_at and file pins (app restart, a deploy
// after files put), as documented: a rollback after a restart goes to the
// deploy before. It said only which revision it restored, and an operator
// who read app history, where the one before the current is a restart or
// a re-pin, saw it go further back than asked without a word of why.
func TestRollbackSaysWhichRevisionsItPassesOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	h.ok("", "files", "put", "app.conf", h.file("a", "answer = 1\n"))
	spec := func(version string) string {
		return h.file("rs"+version+".toml", "name = \"rs\"\nversion = \""+version+"\"\nnodes = [\"n\"]\n[[files]]\nobject = \"app.conf\"\npath = \"app.conf\"\n")
	}
	h.ok("", "deploy", spec("1"), "--binary", bin)
	h.ok("", "deploy", spec("2"), "--binary", bin)
	h.ok("", "files", "put", "app.conf", h.file("b", "answer = 2\n"))
	h.ok("", "deploy", spec("2"), "--binary", bin)
	h.ok("", "app", "restart", "rs")
	// Revision 1 pinned the first content: put back, it is restorable.
	h.ok("", "files", "put", "app.conf", h.file("a", "answer = 1\n"))

	hist, err := h.kv(names.AppsBucket).History(context.Background(), "rs")
	if err != nil || len(hist) != 4 {
		t.Fatalf("history of rs: %d entries, %v", len(hist), err)
	}
	var revs []string
	for _, en := range hist {
		revs = append(revs, strconv.FormatUint(en.Revision(), 10))
	}
	first, second, repin, restart := revs[0], revs[1], revs[2], revs[3]

	r := h.ok("", "app", "rollback", "rs")
	if !strings.Contains(r.out, "rolled back to revision "+first) {
		t.Fatalf("rollback after a restart and a re-pin: stdout %s", r.out)
	}
	for _, want := range []string{
		"rolling back to revision " + first,
		"current spec (" + restart + ")",
		repin + " (only restarted_at differs)",
		second + " (only restarted_at and file pins differ)",
	} {
		if !strings.Contains(r.err, want) {
			t.Errorf("rollback to revision %s passing over %s, %s: stderr lacks %q:\n%s", first, repin, second, want, r.err)
		}
	}

	// A rollback to the revision just before says no more than it did.
	h.ok("", "deploy", spec("3"), "--binary", bin)
	r = h.ok("", "app", "rollback", "rs")
	if strings.Contains(r.err, "rolling back") {
		t.Errorf("rollback to the revision before the current one: stderr\n%s", r.err)
	}
}
