package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// Errors an operator meets while setting up say what to do next.
func TestSetupErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	missing := filepath.Join(h.dir, "none.key")
	r := h.fails(1, "", "--key-file", missing, "secret", "keygen", "--add")
	if want := "key file " + missing + " does not exist: run narun ctl secret keygen without --add to create it"; !strings.Contains(r.err, want) {
		t.Errorf("keygen --add of a missing file: %q, want %q", r.err, want)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("keygen --add made %s: %v", missing, err)
	}

	r = h.fails(2, "v\n", "secret", "set", "db")
	if want := "narun ctl secret keygen --key-file FILE makes one"; !strings.Contains(r.err, want) {
		t.Errorf("secret set without a key file: %q, want %q", r.err, want)
	}

	guarded := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		Users: []embednats.User{{User: "edge", Password: "edge-secret"}}})
	h.url = guarded.ClientURL()
	r = h.fails(1, "", "node", "list")
	if want := "Authorization Violation (the server wants a login, or refused this one: put user:password@ in --nats-url, or name a credentials file with --nats-creds or an nkey seed with --nats-nkey ([ctl] nats_url, nats_creds, nats_nkey))"; !strings.Contains(r.err, want) {
		t.Errorf("ctl without a login: %q, want %q", r.err, want)
	}
}
