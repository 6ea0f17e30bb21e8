package ctl

import (
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/state"
)

// A secret sealed with a key a node's key file lacks fails every start of
// its apps there until it holds the key: secret set, deploy and deploy --dry-run say so
// by node and key id, from the key ids in the heartbeats, and still
// succeed. A node that holds the key, and one of an earlier release that
// sends no key ids, are not warned of.
func TestSecretKeyMissingOnNodeWarned(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	keyAddedBefore(t, key)
	id := ring.PrimaryID()
	const otherID = "0123456789ab"
	for _, n := range []state.Node{
		{ID: "lacks", SecretKeys: &state.SecretKeys{File: true, IDs: []string{otherID}}},
		{ID: "holds", SecretKeys: &state.SecretKeys{File: true, IDs: []string{otherID, id}}},
		{ID: "nofile", SecretKeys: &state.SecretKeys{}},
		{ID: "unreadable", SecretKeys: &state.SecretKeys{File: true}},
		{ID: "older"},
		// Not selected by the spec, but still runs an instance of it.
		{ID: "leftover", SecretKeys: &state.SecretKeys{File: true, IDs: []string{otherID}}, Instances: []state.Instance{{App: "app", Node: "leftover", ID: "0-1", State: state.Running}}},
		// Lacks the key, but runs nothing that uses the secret.
		{ID: "idle", SecretKeys: &state.SecretKeys{File: true, IDs: []string{otherID}}},
	} {
		n.Arch = runtime.GOARCH
		h.heartbeat(n)
	}
	// No app uses it yet: nothing to warn of.
	if r := h.ok("v\n", "--key-file", key, "secret", "set", "db"); strings.Contains(r.err, "warning") {
		t.Errorf("secret set that no app uses warns:\n%s", r.err)
	}
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"lacks\", \"holds\", \"nofile\", \"unreadable\", \"older\"]\n"+
		"[[secrets]]\nname = \"db\"\nenv = \"DB\"\n[[secrets]]\nname = \"db\"\nfile = \"db\"\n")
	bin := elfBinary(t)
	wantWarned := map[string]string{
		"lacks":      "node lacks cannot open secret db (key " + id + "): its key file holds only " + otherID,
		"nofile":     "node nofile cannot open secret db (key " + id + "): it has no secret key file",
		"unreadable": "node unreadable cannot open secret db (key " + id + "): its secret key file cannot be read",
	}
	check := func(what string, r result, warned map[string]string) {
		t.Helper()
		for node, want := range warned {
			if !strings.Contains(r.err, want) {
				t.Errorf("%s: no warning %q for node %s:\n%s", what, want, node, r.err)
			}
		}
		for _, node := range []string{"holds", "older", "idle", "lacks", "nofile", "unreadable", "leftover"} {
			if _, ok := warned[node]; !ok && strings.Contains(r.err, "node "+node+" ") {
				t.Errorf("%s: warns of node %s:\n%s", what, node, r.err)
			}
			if n := strings.Count(r.err, "node "+node+" cannot open"); n > 1 {
				t.Errorf("%s: warns %d times of node %s:\n%s", what, n, node, r.err)
			}
		}
	}
	check("deploy --dry-run", h.ok("", "deploy", p, "--binary", bin, "--dry-run"), wantWarned)
	check("deploy", h.ok("", "deploy", p, "--binary", bin), wantWarned)

	r := h.ok("w\n", "--key-file", key, "secret", "set", "db")
	setWarned := map[string]string{
		"leftover": "node leftover cannot open secret db (key " + id + "): its key file holds only " + otherID,
	}
	for node, want := range wantWarned {
		setWarned[node] = want
	}
	check("secret set", r, setWarned)
	if !strings.Contains(r.err, "instances of app there fail to start") {
		t.Errorf("secret set does not name the app that fails:\n%s", r.err)
	}
	if !strings.Contains(r.out, "secret db stored (key "+id+")") {
		t.Errorf("secret set: %q", r.out)
	}
}

// secret rotate seals every secret with the key file's new first key: a
// node that runs an app using a secret and lacks that key is warned of as
// secret set warns, once, naming the secrets it can no longer open. A
// node that holds the new key, or runs nothing using a secret, is not.
func TestSecretRotateWarnsNodesLackingNewKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	h.ok("v\n", "--key-file", key, "secret", "set", "api")
	h.ok("v\n", "--key-file", key, "secret", "set", "unused")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"lacks\", \"holds\"]\n"+
		"[[secrets]]\nname = \"db\"\nenv = \"DB\"\n[[secrets]]\nname = \"api\"\nenv = \"API\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	old, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	keyAddedBefore(t, key)
	oldID, id := old.PrimaryID(), ring.PrimaryID()
	for _, n := range []state.Node{
		{ID: "lacks", SecretKeys: &state.SecretKeys{File: true, IDs: []string{oldID}}},
		{ID: "holds", SecretKeys: &state.SecretKeys{File: true, IDs: []string{id, oldID}}},
		{ID: "idle", SecretKeys: &state.SecretKeys{File: true, IDs: []string{oldID}}},
	} {
		n.Arch = runtime.GOARCH
		h.heartbeat(n)
	}
	r := h.ok("", "--key-file", key, "secret", "rotate")
	want := "node lacks cannot open secrets api, db (key " + id + "): its key file holds only " + oldID
	if !strings.Contains(r.err, want) || !strings.Contains(r.err, "instances of app there fail to start") {
		t.Errorf("secret rotate: no warning %q naming app:\n%s", want, r.err)
	}
	if n := strings.Count(r.err, "node lacks cannot open"); n != 1 {
		t.Errorf("secret rotate warns %d times of node lacks, want once:\n%s", n, r.err)
	}
	for _, node := range []string{"holds", "idle"} {
		if strings.Contains(r.err, "node "+node+" ") {
			t.Errorf("secret rotate warns of node %s:\n%s", node, r.err)
		}
	}
	if strings.Contains(r.err, "unused") {
		t.Errorf("secret rotate warns of a secret no app uses:\n%s", r.err)
	}
}
