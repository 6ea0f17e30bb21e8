package ctl

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/embednats/natstest"
)

// A deploy reads each secret its spec uses once per check: the check
// that it exists, before anything is written, and, once the spec is
// stored, the look again for a secret delete that ran meanwhile
// (usesAll). The warning about nodes that lack the secret's key is about
// the value that check read, not a third read, which could find another
// value (set again, by another key file, or deleted) than the one the
// deploy checked. A dry run stores nothing and reads once.
func TestDeployReadsEachSecretOncePerCheck(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	h.heartbeat(state.Node{ID: "lacks", Arch: runtime.GOARCH, SecretKeys: &state.SecretKeys{File: true, IDs: []string{"0123456789ab"}}})
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"lacks\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")
	bin := elfBinary(t)

	// ctl reads a key from the bucket's leader (patientKV.Get).
	reading := "$JS.API.STREAM.MSG.GET.KV_" + names.SecretsBucket
	spy := natstest.Connect(t, h.srv)
	sub, err := spy.SubscribeSync(reading)
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	// reads counts the reads of db since the last count: a marker the spy
	// publishes after ctl ended arrives after every request ctl sent.
	reads := func() int {
		t.Helper()
		const marker = "narun_test_marker"
		if err := spy.Publish(reading, []byte(marker)); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			msg, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for the marker: %v", err)
			}
			switch {
			case string(msg.Data) == marker:
				return n
			case strings.Contains(string(msg.Data), `"$KV.`+names.SecretsBucket+`.db"`):
				n++
			}
		}
	}
	const warning = "node lacks cannot open secret db"
	for _, run := range []struct {
		what string
		args []string
		want int
	}{
		{"deploy --dry-run", []string{"deploy", p, "--binary", bin, "--dry-run"}, 1},
		{"deploy", []string{"deploy", p, "--binary", bin}, 2},
	} {
		r := h.ok("", run.args...)
		if !strings.Contains(r.err, warning) {
			t.Errorf("%s: no warning %q:\n%s", run.what, warning, r.err)
		}
		if n := reads(); n != run.want {
			t.Errorf("%s read secret db %d times, want %d", run.what, n, run.want)
		}
	}
}
