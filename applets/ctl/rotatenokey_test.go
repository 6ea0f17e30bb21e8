package ctl

import (
	"strings"
	"testing"
)

// A secret rotate over a key file that lacks the key a secret is sealed
// with (the wrong file on the operator's machine, an old key removed too
// early) named the secret and "a key that is not in the key file", but
// neither the file nor what to do.
func TestSecretRotateWithoutTheKeySaysWhatToDo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	other := h.dir + "/other.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	r := h.ok("", "--key-file", other, "secret", "keygen")
	id := strings.Fields(r.out)[1]
	r = h.fails(1, "", "--key-file", other, "secret", "rotate")
	want := "the key file " + other + " holds only " + id + ": add the key db is sealed with to it, or set db again (narun ctl secret set db), or delete it"
	if !strings.Contains(r.err, want) {
		t.Errorf("secret rotate without the key: %q, want %q", r.err, want)
	}
}
