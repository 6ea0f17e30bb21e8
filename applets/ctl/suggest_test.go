package ctl

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
)

// A name one or two typos away from one that exists is suggested: a
// secret a spec or secret delete names, a node a spec lists.
func TestDidYouMean(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := filepath.Join(h.dir, "secret.key")
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db-password")
	h.ok("v\n", "--key-file", key, "secret", "set", "api-token")
	h.heartbeat(state.Node{ID: "vm", Arch: runtime.GOARCH})

	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"vm\"]\n[[secrets]]\nname = \"db-pasword\"\nenv = \"DB\"\n")
	r := h.fails(1, "", "deploy", p, "--binary", elfBinary(t))
	if want := `secret "db-pasword" does not exist (did you mean "db-password"? if not: narun ctl secret set db-pasword)`; !strings.Contains(r.err, want) {
		t.Errorf("deploy: %q, want %q", r.err, want)
	}
	r = h.fails(3, "", "--key-file", key, "secret", "delete", "API-token")
	if want := `secret "API-token" does not exist (did you mean "api-token"?)`; !strings.Contains(r.err, want) {
		t.Errorf("secret delete: %q, want %q", r.err, want)
	}
	// Nothing close: no guess.
	r = h.fails(3, "", "--key-file", key, "secret", "delete", "smtp")
	if strings.Contains(r.err, "did you mean") {
		t.Errorf("secret delete smtp: %q", r.err)
	}

	r = h.ok("", "deploy", h.file("vn.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"vn\"]\n"), "--binary", elfBinary(t), "--dry-run")
	if want := `warning: node vn sends no heartbeat (did you mean "vm"?`; !strings.Contains(r.err, want) {
		t.Errorf("deploy to vn: %q, want %q", r.err, want)
	}
}

func TestSuggestion(t *testing.T) {
	for _, c := range []struct {
		name  string
		among []string
		want  string
	}{
		{"db-pasword", []string{"db-password", "api"}, "db-password"},
		{"DB", []string{"db", "dc"}, "db"},
		{"vn", []string{"vm"}, "vm"},
		{"ab", []string{"xy"}, ""},          // every letter changed
		{"web", []string{"wab", "wob"}, ""}, // two as close: no guess
		{"same", []string{"same"}, ""},
	} {
		if got := suggestion(c.name, c.among); got != c.want {
			t.Errorf("suggestion(%q, %q) = %q, want %q", c.name, c.among, got, c.want)
		}
	}
}
