package ctl

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// What the server refuses without an answer (a publish the login may not
// make) reaches ctl's log in its format: nats.go's own handler printed it
// on stderr as a bare line, outside --log-format json.
func TestAsyncNATSErrorsGoToTheLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{
		{User: "admin", Password: "a"},
		{User: "ctl", Password: "c", Permissions: &embednats.Permissions{DenyPublish: []string{"$JS.API.STREAM.PURGE.KV_" + names.SecretsBucket}}},
	}})
	key := filepath.Join(h.dir, "secret.key")
	h.ok("", "--key-file", key, "secret", "keygen")
	h.url = strings.Replace(srv.ClientURL(), "nats://", "nats://admin:a@", 1)
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	h.url = strings.Replace(srv.ClientURL(), "nats://", "nats://ctl:c@", 1)
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
