package ctl

import (
	"encoding/json"
	"strings"
	"testing"
)

// A deploy that only pins the new content of a [[files]] object (after
// files put) restarts nothing: file pins are not in the fingerprint.
// History called such a revision a restart, as it calls what app restart
// writes, and an operator looked for restarts that never happened.
func TestHistoryTellsARepinFromARestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	h.ok("", "files", "put", "app.conf", h.file("a", "answer = 1\n"))
	p := h.file("hf.toml", "name = \"hf\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"app.conf\"\npath = \"app.conf\"\n")
	h.ok("", "deploy", p, "--binary", bin)
	h.ok("", "files", "put", "app.conf", h.file("b", "answer = 2\n"))
	h.ok("", "deploy", p, "--binary", bin)
	h.ok("", "app", "restart", "hf")

	r := h.ok("", "app", "history", "hf", "--json")
	var revs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &revs); err != nil || len(revs) != 3 {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	restart, repin, first := revs[0], revs[1], revs[2]
	if restart["restart"] != true || restart["files"] != false {
		t.Errorf("app restart's revision: restart %v, files %v; want true, false", restart["restart"], restart["files"])
	}
	if repin["restart"] != false || repin["files"] != true {
		t.Errorf("re-pinning deploy's revision: restart %v, files %v; want false, true", repin["restart"], repin["files"])
	}
	if first["restart"] != false || first["files"] != false {
		t.Errorf("first deploy's revision: restart %v, files %v; want false, false", first["restart"], first["files"])
	}

	r = h.ok("", "app", "history", "hf")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "restart") || strings.Contains(lines[2], "restart") || !strings.HasSuffix(lines[2], "files") {
		t.Errorf("history table:\n%s", r.out)
	}
}
