package ctl

import (
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// An upload JetStream has no room for says so and what makes room, not
// only the server's "insufficient resources".
func TestUploadPastTheStoreLimitSaysWhatMakesRoom(t *testing.T) {
	t.Parallel()
	h := newHarnessOn(t, natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", JetStreamMaxStore: 8 << 20}))
	r := h.fails(1, "", "files", "put", "big", h.file("big", strings.Repeat("x", 12<<20)))
	for _, want := range []string{"insufficient resources", "no room", "max_store", "image delete"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.err)
		}
	}
}
