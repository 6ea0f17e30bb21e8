package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// ctl's errors name the server it tried, but never its password or token.
func TestErrorsHideTheLogin(t *testing.T) {
	t.Parallel()
	closed := testutil.FreeAddr(t)
	noJetStream := testutil.FreeAddr(t)
	startWithoutJetStream(t, noJetStream)
	guarded := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		Users: []embednats.User{{User: "edge", Password: "edge-secret"}}})
	guardedAddr := strings.TrimPrefix(guarded.ClientURL(), "nats://")
	for _, tc := range []struct {
		name, url, secret string
		want              []string
	}{
		{"closed port", "nats://edge:edge-secret@" + closed + ",nats://edge:edge-secret@" + closed, "edge-secret",
			[]string{"connect to NATS at nats://edge:xxxxx@" + closed + ",nats://edge:xxxxx@" + closed + " (from --nats-url):"}},
		{"token", "nats://t0ken-secret@" + closed, "t0ken-secret", []string{"nats://xxxxx@" + closed}},
		{"no scheme", "edge:edge-secret@" + closed, "edge-secret", []string{"edge:xxxxx@" + closed}},
		{"refused login", "nats://edge:wrong-secret@" + guardedAddr, "wrong-secret",
			[]string{"connect to NATS at nats://edge:xxxxx@" + guardedAddr + " (from --nats-url): nats: Authorization Violation"}},
		{"jetstream silent", "nats://edge:edge-secret@" + noJetStream, "edge-secret",
			[]string{"jetstream at nats://edge:xxxxx@" + noJetStream + " (from --nats-url) not answering"}},
		// nats.go quotes the URL it cannot parse.
		{"bad port", "nats://edge:edge-secret@127.0.0.1:42x", "edge-secret", []string{`"nats://edge:xxxxx@127.0.0.1:42x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, url: tc.url, dir: t.TempDir()}
			h.config = filepath.Join(h.dir, "narun.toml")
			if err := os.WriteFile(h.config, []byte("[ctl]\ntimeout = \"300ms\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := h.run("", "node", "list")
			if r.code == 0 {
				t.Fatalf("ctl node list at %s succeeded", tc.url)
			}
			if strings.Contains(r.err+r.out, tc.secret) {
				t.Errorf("the login appears in the output:\n%s%s", r.out, r.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err, w) {
					t.Errorf("error lacks %q:\n%s", w, r.err)
				}
			}
		})
	}
}
