package ctl

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// --revision prints a spec as stored, TOML: with --json as well, a script
// that piped the output to a JSON parser got TOML and exit 0.
func TestHistoryRevisionRefusesJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hr.toml", "name = \"hr\"\nversion = \"1\"\nnodes = [\"n\"]\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	var revs []revision
	if err := json.Unmarshal([]byte(h.ok("", "app", "history", "hr", "--json").out), &revs); err != nil || len(revs) != 1 {
		t.Fatalf("history --json: %v", err)
	}
	rev := revs[0].Revision

	r := h.run("", "app", "history", "hr", "--revision", strconv.FormatUint(rev, 10), "--json")
	if r.code != 2 || r.out != "" || !strings.Contains(r.err, "--json") || !strings.Contains(r.err, "--revision") {
		t.Fatalf("history --revision N --json: exit %d, want 2 naming both flags and printing nothing\nstdout: %s\nstderr: %s", r.code, r.out, r.err)
	}
	// Without --json it still prints the spec, to deploy as it is.
	if r := h.ok("", "app", "history", "hr", "--revision", strconv.FormatUint(rev, 10)); !strings.Contains(r.out, `name = "hr"`) {
		t.Errorf("history --revision N printed:\n%s", r.out)
	}
}
