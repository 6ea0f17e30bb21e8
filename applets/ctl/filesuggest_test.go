package ctl

import (
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
)

// A [[files]] object one typo away from one narun-files holds is
// suggested, as a secret's is: the hint to files put the name as spelt
// would store the file under the typo.
func TestDidYouMeanFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "app.conf", h.file("app.conf", "mode = demo\n"))
	h.heartbeat(state.Node{ID: "vm", Arch: runtime.GOARCH})

	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"vm\"]\n[[files]]\nobject = \"app.cnf\"\npath = \"app.conf\"\n")
	r := h.fails(1, "", "deploy", p, "--binary", elfBinary(t), "--dry-run")
	if want := `file "app.cnf" does not exist (did you mean "app.conf"? if not: narun ctl files put app.cnf FILE)`; !strings.Contains(r.err, want) {
		t.Errorf("deploy: %q, want %q", r.err, want)
	}
	// Nothing close: no guess.
	p = h.file("far.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"vm\"]\n[[files]]\nobject = \"smtp.pem\"\npath = \"smtp.pem\"\n")
	r = h.fails(1, "", "deploy", p, "--binary", elfBinary(t), "--dry-run")
	if want := `file "smtp.pem" does not exist (narun ctl files put smtp.pem FILE)`; !strings.Contains(r.err, want) {
		t.Errorf("deploy: %q, want %q", r.err, want)
	}
}
