package ctl

import (
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// On one device ctl and the runner share a key file: secret keygen --add,
// then secret rotate at once, finds the node's last heartbeat from before
// the new key, listing only the old one. That node cannot be said to lack
// the key: rotate waits for its next heartbeat, which has it.
func TestSecretRotateRightAfterKeygenAdd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	hello := built(t, helloApp)
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	old, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	startRunnerWith(t, h, func(c *config.Runner) {
		c.MasterKeyFile = key
		c.HeartbeatInterval = config.Duration(2 * time.Second)
	})
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"node-1\"]\nhealth = { min_healthy = \"100ms\" }\n"+
		"[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")
	h.ok("", "deploy", p, "--binary", hello, "--wait", "--timeout", "30s")
	heartbeat := func() (state.Node, uint64) {
		e, err := h.kv(names.NodesBucket).Get(t.Context(), "node-1")
		if err != nil {
			return state.Node{}, 0
		}
		var n state.Node
		if err := json.Unmarshal(e.Value(), &n); err != nil {
			t.Fatal(err)
		}
		return n, e.Revision()
	}
	var rev uint64
	testutil.Eventually(t, 20*time.Second, "a heartbeat with the old key and the app healthy", func() bool {
		n, r := heartbeat()
		rev = r
		return n.SecretKeys != nil && slices.Equal(n.SecretKeys.IDs, []string{old.PrimaryID()}) &&
			slices.ContainsFunc(n.Instances, func(in state.Instance) bool { return in.App == "app" && in.State == state.Healthy })
	})
	// Just after a heartbeat, the next is an interval away.
	testutil.Eventually(t, 20*time.Second, "the next heartbeat", func() bool { _, r := heartbeat(); return r > rev })
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	r := h.ok("", "--key-file", key, "secret", "rotate")
	if !strings.Contains(r.out, "re-encrypted db") {
		t.Errorf("secret rotate: %q", r.out)
	}
	if strings.Contains(r.err, "node-1") {
		t.Errorf("secret rotate warns of node-1, whose key file holds the new key:\n%s", r.err)
	}
}

// A node whose last heartbeat is from before the key file changed, and
// that sends none within its interval, is not known to lack the new key:
// rotate says it has not reported since, not that it cannot open the
// secrets. So is one whose heartbeat was stored a moment after the change:
// the runner may have read its key file, then the file changed, then the
// heartbeat was stored (and a file's time is a clock tick behind).
func TestSecretRotateNodeSilentSinceKeygenAdd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		heartbeatBefore bool // stored before keygen --add, else just after
	}{
		{"heartbeat before the change", true},
		{"heartbeat just after the change", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			key := h.dir + "/secret.key"
			h.ok("", "--key-file", key, "secret", "keygen")
			old, err := secrets.LoadRing(key)
			if err != nil {
				t.Fatal(err)
			}
			h.ok("v\n", "--key-file", key, "secret", "set", "db")
			p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"silent\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")
			h.ok("", "deploy", p, "--binary", elfBinary(t))
			heartbeat := func() {
				h.heartbeat(state.Node{ID: "silent", Arch: runtime.GOARCH, Interval: time.Hour,
					SecretKeys: &state.SecretKeys{File: true, IDs: []string{old.PrimaryID()}}})
			}
			if tc.heartbeatBefore {
				heartbeat()
			}
			h.ok("", "--key-file", key, "secret", "keygen", "--add")
			if !tc.heartbeatBefore {
				heartbeat()
			}
			r := h.ok("", "--key-file", key, "--timeout", "1s", "secret", "rotate")
			if strings.Contains(r.err, "cannot open") {
				t.Errorf("secret rotate says node silent cannot open the secret, from a heartbeat made before the key:\n%s", r.err)
			}
			want := "node silent has not reported since key file " + key + " changed"
			if !strings.Contains(r.err, want) || !strings.Contains(r.err, "holds only "+old.PrimaryID()) {
				t.Errorf("secret rotate does not say %q with what the node said before:\n%s", want, r.err)
			}
		})
	}
}

// keyAddedBefore dates the key file back beyond keyChangeSlack, as one
// changed a while ago: the heartbeats a test then writes are the nodes'
// word from after the change.
func keyAddedBefore(t *testing.T, key string) {
	t.Helper()
	then := time.Now().Add(-2 * keyChangeSlack)
	if err := os.Chtimes(key, then, then); err != nil {
		t.Fatal(err)
	}
}
