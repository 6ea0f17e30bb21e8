package runner

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/state"
)

// The heartbeat names the ids of the keys the node's secret key file
// holds, for ctl to warn of a secret sealed with a key this node lacks;
// without a readable file it names none, and says whether one is
// configured at all. A key added to the file shows at the next heartbeat.
func TestHeartbeatSecretKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	first, second := newKeyLine(t), newKeyLine(t)
	ring, err := secrets.ParseRing([]byte(second + first))
	if err != nil {
		t.Fatal(err)
	}
	readable := writeKeyFile(t, []byte(first))
	open := writeKeyFile(t, []byte(first))
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       state.SecretKeys
	}{
		{"readable", readable, state.SecretKeys{File: true, IDs: ring.IDs()[1:]}},
		{"none configured", "", state.SecretKeys{}},
		{"missing", filepath.Join(t.TempDir(), "keys"), state.SecretKeys{File: true}},
		{"readable by others", open, state.SecretKeys{File: true}},
	}
	runners := map[string]*Runner{}
	for _, tc := range tests {
		r, err := New(Options{Config: config.Runner{NodeID: node, MasterKeyFile: tc.path}, DataDir: t.TempDir(), Conn: c.nc})
		if err != nil {
			t.Fatal(err)
		}
		runners[tc.name] = r
		got := r.nodeState().SecretKeys
		if got == nil || got.File != tc.want.File || !slices.Equal(got.IDs, tc.want.IDs) {
			t.Errorf("%s: heartbeat secret_keys %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if err := os.WriteFile(readable, []byte(second+first), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := runners["readable"].nodeState().SecretKeys; got == nil || !slices.Equal(got.IDs, ring.IDs()) {
		t.Errorf("after a key was added: heartbeat secret_keys %+v, want ids %v", got, ring.IDs())
	}
}

func newKeyLine(t *testing.T) string {
	t.Helper()
	k, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k + "\n"
}

// A secret key file that turns unreadable while the runner runs (made
// readable by others, removed) is logged once as it happens, not found at
// the next start of an app with secrets; it is logged again only after it
// was readable in between.
func TestUnreadableKeyFileLoggedOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	path := writeKeyFile(t, []byte(newKeyLine(t)))
	var logs bytes.Buffer
	r, err := New(Options{Config: config.Runner{NodeID: node, MasterKeyFile: path}, DataDir: t.TempDir(), Conn: c.nc,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	warnings := func() int { return strings.Count(logs.String(), "secret key file unreadable") }
	r.nodeState()
	if n := warnings(); n != 0 {
		t.Fatalf("%d warnings with a readable key file:\n%s", n, logs.String())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r.nodeState()
	r.nodeState()
	if n := warnings(); n != 1 || !strings.Contains(logs.String(), "chmod 600") {
		t.Fatalf("%d warnings after chmod 644, want 1 saying what to do:\n%s", n, logs.String())
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r.nodeState()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	r.nodeState()
	if n := warnings(); n != 2 {
		t.Fatalf("%d warnings after the file was readable again and then not, want 2:\n%s", n, logs.String())
	}
}

// A secret key file that cannot be used when the runner starts is said
// once, in one warning: the start and the first heartbeat each said it,
// one that apps "wait for it" and the other that they "fail".
func TestUnreadableKeyFileAtStartLoggedOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	var logs bytes.Buffer
	r, err := New(Options{Config: config.Runner{NodeID: node, MasterKeyFile: filepath.Join(t.TempDir(), "missing")}, DataDir: t.TempDir(), Conn: c.nc,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r.nodeState()
	r.nodeState()
	if n := strings.Count(logs.String(), "level=WARN msg=\"secret key"); n != 1 {
		t.Fatalf("%d warnings of the missing key file, want 1:\n%s", n, logs.String())
	}
}
