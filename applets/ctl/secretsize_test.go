package ctl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// A secret within ctl's 512 KiB that the server's max_payload (256 KiB at
// its least) cannot carry sealed is refused naming both sizes and the
// setting, and the size that does fit stores.
func TestSecretSetOverMaxPayload(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = natstest.StartConfig(t, embednats.Config{MaxPayload: 256 << 10}).ClientURL()
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	r := h.fails(1, strings.Repeat("x", 200<<10), "--key-file", key, "secret", "set", "big")
	for _, want := range []string{"204800 bytes", "[nats] max_payload", "262144"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("refusal lacks %q:\n%s", want, r.err)
		}
	}
	var fits int
	if _, err := fmt.Sscanf(r.err[strings.Index(r.err, "at most ")+len("at most "):], "%d bytes", &fits); err != nil || fits <= 0 {
		t.Fatalf("refusal names no size that fits (%v):\n%s", err, r.err)
	}
	h.ok(strings.Repeat("x", fits), "--key-file", key, "secret", "set", "big")
}
