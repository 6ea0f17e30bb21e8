package ctl

import (
	"strings"
	"testing"
)

// What the server refuses without an answer (a publish the login may not
// make) reaches ctl's log in its format: nats.go's own handler printed it
// on stderr as a bare line, outside --log-format json.
func TestAsyncNATSErrorsGoToTheLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, asCtl := purgeDenied(t, h)
	asCtl()
	r := h.fails(1, "v2\n", "--timeout", "1s", "--log-format", "json", "--key-file", key, "secret", "set", "db")
	logged := false
	for _, line := range strings.Split(strings.TrimSpace(r.err), "\n") {
		if strings.HasPrefix(line, "nats: ") {
			t.Errorf("nats.go printed on stderr itself: %q", line)
		}
		if strings.HasPrefix(line, "{") && strings.Contains(line, "Permissions Violation") {
			logged = true
		}
	}
	if !logged {
		t.Errorf("the server's permissions violation is not in ctl's JSON log: stderr %q", r.err)
	}
}
