package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// keygen writes a signing key with ctl and returns its path and public key.
func (h *harness) keygen(name string) (path, public string) {
	h.t.Helper()
	path = filepath.Join(h.dir, name)
	r := h.ok("", "signing", "keygen", path)
	return path, strings.TrimSpace(r.out)
}

// useSigningKey makes path the [ctl] signing_key_file of the harness's
// config; "" configures none.
func (h *harness) useSigningKey(path string) {
	h.t.Helper()
	h.file("narun.toml", fmt.Sprintf("data_dir = %q\n[ctl]\ntimeout = \"5s\"\nsigning_key_file = %q\n", filepath.Join(h.dir, "data"), path))
}

func verifier(t *testing.T, public string) *signing.Verifier {
	t.Helper()
	v, err := signing.NewVerifier("trusted_keys", []string{public})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSigningKeygen(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1" // neither command needs NATS
	path, public := h.keygen("sign.key")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	key, err := signing.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if key.Public() != public {
		t.Errorf("keygen printed %q, the key's public half is %q", public, key.Public())
	}
	if r := h.ok("", "signing", "public", "--signing-key", path); strings.TrimSpace(r.out) != public {
		t.Errorf("signing public --signing-key: %q, want %q", r.out, public)
	}
	h.useSigningKey(path)
	if r := h.ok("", "signing", "public"); strings.TrimSpace(r.out) != public {
		t.Errorf("signing public with signing_key_file: %q, want %q", r.out, public)
	}

	before, _ := os.ReadFile(path)
	r := h.fails(1, "", "signing", "keygen", path)
	if !strings.Contains(r.err, "exists") {
		t.Errorf("keygen over an existing file: %s", r.err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("keygen replaced an existing key file")
	}
	if matches, _ := filepath.Glob(filepath.Join(h.dir, ".sign.key.tmp-*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	h.fails(2, "", "signing", "keygen")
	h.fails(2, "", "signing", "public", "extra")
	h.useSigningKey("")
	if r := h.fails(2, "", "signing", "public"); !strings.Contains(r.err, "signing_key_file") {
		t.Errorf("signing public without a key: %s", r.err)
	}
}

func TestDeploySigned(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	path, public := h.keygen("sign.key")
	v := verifier(t, public)

	// Unsigned without a key, as before signing existed.
	h.ok("", "deploy", p, "--binary", bin)
	unsigned, _ := h.get(names.AppsBucket, "hello")
	routes, _ := h.get(names.RoutesBucket, "hello")
	if strings.Contains(string(unsigned)+string(routes), "narun-signature") {
		t.Errorf("stored signed without a key:\n%s\n%s", unsigned, routes)
	}
	if r := h.ok("", "app", "status", "hello"); !strings.Contains(r.out, ", unsigned:") {
		t.Errorf("status of an unsigned spec: %s", r.out)
	}

	// A key configured over the unsigned spec builds nothing on it (an app
	// may have written it); a deploy with --binary replaces it, signed.
	h.useSigningKey(path)
	if r := h.fails(1, "", "deploy", p); !strings.Contains(r.err, "not signed by this ctl's key (unsigned)") {
		t.Errorf("deploy without --binary over the unsigned spec: %s", r.err)
	}
	if r := h.ok("", "deploy", p, "--binary", bin, "--json"); !strings.Contains(r.out, `"changed": true`) {
		t.Errorf("first signed deploy: %s", r.out)
	}
	stored, _ := h.get(names.AppsBucket, "hello")
	body, err := v.Verify(stored)
	if err != nil {
		t.Fatalf("stored spec: %v\n%s", err, stored)
	}
	if !bytes.Equal(signing.StripSequence(body), unsigned) {
		t.Errorf("signed spec differs from the unsigned one beyond its sequence and trailer:\n%s\nwas\n%s", body, unsigned)
	}
	if seq, err := signing.Sequence(body); err != nil || seq == 0 {
		t.Errorf("signed spec without a sequence: %d, %v\n%s", seq, err, body)
	}
	raw, _ := h.get(names.RoutesBucket, "hello")
	body, err = v.Verify(raw)
	if err != nil {
		t.Fatalf("stored routes: %v\n%s", err, raw)
	}
	var rs []config.Route
	if err := json.Unmarshal(body, &rs); err != nil || len(rs) != 1 || rs[0].Path != "/hello/" {
		t.Errorf("signed routes %q: %+v, %v", raw, rs, err)
	}

	// The same file with the same key again is unchanged.
	for _, args := range [][]string{{"deploy", p}, {"deploy", p, "--binary", bin}} {
		if r := h.ok("", args...); !strings.Contains(r.out, "hello 1.0.0: unchanged") {
			t.Errorf("%v again: %s", args, r.out)
		}
	}
	if now, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(now, stored) {
		t.Errorf("unchanged redeploy rewrote the spec:\n%s", now)
	}

	r := h.ok("", "app", "status", "hello", "--json")
	var st struct {
		SignedBy string `json:"signed_by"`
		Name     string `json:"name"`
	}
	if err := json.Unmarshal([]byte(r.out), &st); err != nil || st.SignedBy != public || st.Name != "hello" {
		t.Errorf("status --json: %+v, %v\n%s", st, err, r.out)
	}
	if r := h.ok("", "app", "status", "hello"); !strings.Contains(r.out, "signed by "+public) {
		t.Errorf("status of a signed spec: %s", r.out)
	}
	if r := h.ok("", "route", "list", "--json"); !strings.Contains(r.out, `"path": "/hello/"`) {
		t.Errorf("route list of signed entries: %s", r.out)
	}

	// Restart keeps a valid signature.
	h.ok("", "app", "restart", "hello")
	restarted, _ := h.get(names.AppsBucket, "hello")
	body, err = v.Verify(restarted)
	if err != nil {
		t.Fatalf("restarted spec: %v\n%s", err, restarted)
	}
	if app, err := spec.Parse("restarted", body); err != nil || app.RestartedAt == "" {
		t.Errorf("restarted spec: %v, restarted_at %q", err, app.RestartedAt)
	}

	// Without the key, ctl cannot rewrite the signed spec: the result
	// would be unsigned, which nodes that trust the key refuse.
	h.useSigningKey("")
	for _, args := range [][]string{{"app", "restart", "hello"}, {"deploy", p}} {
		r := h.fails(1, "", args...)
		if !strings.Contains(r.err, "signing_key_file") {
			t.Errorf("%v without a key: %s", args, r.err)
		}
		if now, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(now, restarted) {
			t.Errorf("%v without a key changed the stored spec:\n%s", args, now)
		}
	}
}

// Deploy and restart pin each file object's digest before signing, so the
// signature covers the pins: a file replaced in narun-files without a
// redeploy is no longer what the spec allows.
func TestFilesPinned(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, public := h.keygen("sign.key")
	h.useSigningKey(path)
	v := verifier(t, public)
	bin := elfBinary(t)
	sum := func(s string) string {
		d := sha256.Sum256([]byte(s))
		return hex.EncodeToString(d[:])
	}
	pins := func() map[string]string {
		t.Helper()
		stored, _ := h.get(names.AppsBucket, "app")
		body, err := v.Verify(stored)
		if err != nil {
			t.Fatalf("stored spec: %v\n%s", err, stored)
		}
		a, err := spec.Parse("stored", body)
		if err != nil {
			t.Fatal(err)
		}
		return a.FileDigests
	}
	put := func(name, content string) {
		t.Helper()
		h.ok("", "files", "put", name, h.file(name+".src", content))
	}
	put("app.conf", "answer = 1\n")
	put("ca", "ca\n")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n"+
		"[[files]]\nobject = \"app.conf\"\npath = \"etc/app.conf\"\n"+
		"[[files]]\nobject = \"app.conf\"\npath = \"copy.conf\"\n"+
		"[[files]]\nobject = \"ca\"\npath = \"ca.pem\"\n")
	h.ok("", "deploy", p, "--binary", bin)
	want := map[string]string{"app.conf": sum("answer = 1\n"), "ca": sum("ca\n")}
	if got := pins(); !maps.Equal(got, want) {
		t.Errorf("deploy pinned %v, want %v", got, want)
	}
	if r := h.ok("", "deploy", p); !strings.Contains(r.out, "app 1: unchanged") {
		t.Errorf("deploy with the same files: %s", r.out)
	}

	put("app.conf", "answer = 2\n")
	if r := h.ok("", "deploy", p); !strings.Contains(r.out, "app 1: deployed") {
		t.Errorf("deploy after files put: %s", r.out)
	}
	if want["app.conf"] = sum("answer = 2\n"); !maps.Equal(pins(), want) {
		t.Errorf("deploy after files put pinned %v, want %v", pins(), want)
	}

	// files put then app restart is how a changed file rolls out.
	put("app.conf", "answer = 3\n")
	h.ok("", "app", "restart", "app")
	if want["app.conf"] = sum("answer = 3\n"); !maps.Equal(pins(), want) {
		t.Errorf("restart pinned %v, want %v", pins(), want)
	}
	restarted, _ := h.get(names.AppsBucket, "app")
	if n := strings.Count(string(restarted), "[file_digests]"); n != 1 {
		t.Errorf("%d [file_digests] tables after restart:\n%s", n, restarted)
	}
	if r := h.ok("", "deploy", p); !strings.Contains(r.out, "app 1: unchanged") {
		t.Errorf("deploy after restart: %s", r.out)
	}

	// A stored spec saved and deployed again keeps its pins, which must
	// still hold.
	saved := h.file("saved.toml", string(restarted))
	if r := h.ok("", "deploy", saved); !strings.Contains(r.out, "app 1: unchanged") {
		t.Errorf("deploy of the stored spec: %s", r.out)
	}
	put("ca", "other ca\n")
	r := h.fails(1, "", "deploy", saved)
	if !strings.Contains(r.err, "file ca has sha256 "+sum("other ca\n")+", the spec pins "+sum("ca\n")) {
		t.Errorf("deploy of pins that no longer hold: %s", r.err)
	}
	if now, _ := h.get(names.AppsBucket, "app"); !bytes.Equal(now, restarted) {
		t.Errorf("refused deploy changed the stored spec:\n%s", now)
	}
}

// Without a signing key named, ctl signs with the node key narun up keeps
// in the data dir, and goes without it, silently, when it cannot read it.
func TestNodeKeyFromDataDir(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, path := writeNodeKey(t, h, 0o600)
	if r := h.ok("", "signing", "public"); strings.TrimSpace(r.out) != key.Public() {
		t.Errorf("signing public with the data dir's key: %q, want %q", r.out, key.Public())
	}
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	stored, _ := h.get(names.AppsBucket, "hello")
	if _, err := verifier(t, key.Public()).Verify(stored); err != nil {
		t.Errorf("spec deployed with the node key in the data dir: %v\n%s", err, stored)
	}
	routes, _ := h.get(names.RoutesBucket, "hello")
	if _, err := verifier(t, key.Public()).Verify(routes); err != nil {
		t.Errorf("routes deployed with the node key in the data dir: %v\n%s", err, routes)
	}

	if os.Geteuid() == 0 {
		return // root reads every file
	}
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "deploy", h.file("other.toml", strings.ReplaceAll(helloSpec, "hello", "other")), "--binary", elfBinary(t))
	if r.err != "" {
		t.Errorf("deploy without access to the node key: stderr %q, want nothing", r.err)
	}
	if stored, _ := h.get(names.AppsBucket, "other"); strings.Contains(string(stored), "narun-signature") {
		t.Errorf("signed without access to the key:\n%s", stored)
	}
}

// A deploy without a key warns before writing of each node it selects
// that runs only signed specs, and --wait fails at once instead of timing
// out; node list shows which nodes require signatures.
func TestDeployWarnsSignedOnlyNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true})
	h.heartbeat(state.Node{ID: "node-2", SignaturesRequired: true})
	h.heartbeat(state.Node{ID: "node-3"})
	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--force")
	want := "warning: node node-1 runs only signed specs and ctl has no signing key (signing_key_file): it will not run this deploy"
	if !strings.Contains(r.err, want) || strings.Contains(r.err, "node node-2 runs") || strings.Contains(r.err, "node node-3 runs") {
		t.Errorf("deploy stderr:\n%s\nwant only %q", r.err, want)
	}
	if v, _ := h.get(names.AppsBucket, "hello"); len(v) == 0 {
		t.Error("spec not stored after the warning")
	}

	start := time.Now()
	r = h.fails(ExitRollout, "", "deploy", p, "--force", "--wait", "--timeout", "60s")
	if !strings.Contains(r.err, "node(s) node-1 run only signed specs") || time.Since(start) > 30*time.Second {
		t.Errorf("deploy --wait after %s: %s", time.Since(start), r.err)
	}

	r = h.ok("", "node", "list")
	if !strings.Contains(r.out, "SIGNED-ONLY") {
		t.Errorf("node list has no SIGNED-ONLY column:\n%s", r.out)
	}
	for line := range strings.Lines(r.out) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "node-") {
			continue
		}
		if got, want := strings.Contains(line, " yes "), f[0] != "node-3"; got != want {
			t.Errorf("node list, %s: signed-only %v, want %v:\n%s", f[0], got, want, r.out)
		}
	}
	if r := h.ok("", "node", "list", "--json"); strings.Count(r.out, `"signatures_required": true`) != 2 {
		t.Errorf("node list --json:\n%s", r.out)
	}
}

// A node key that a heartbeat names and ctl cannot use (narun up run by
// another user, whose data dir this user cannot read, or on another
// machine) is named in the deploy's warning, with what to do: without it
// the warning said only that ctl had no key, though the node has one.
func TestDeployWarningNamesTheUnusableNodeKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	// Readable by others: refused by LoadKey for root too, as a key this
	// user may not read is refused for any other user.
	open := filepath.Join(t.TempDir(), signing.NodeKeyFile)
	if err := os.WriteFile(open, key.File(), 0o644); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(t.TempDir(), "elsewhere", signing.NodeKeyFile)
	// A heartbeat is anyone's to write: a pipe would hold ctl's read for
	// ever, and the path is printed escaped.
	fifo := filepath.Join(t.TempDir(), "key\x1b]0;owned\x07")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoShown := filepath.Dir(fifo) + `/key\x1b]0;owned\x07`
	p := h.file("hello.toml", helloSpec)
	for _, tc := range []struct{ path, want string }{
		{fifo, "the node key it names, " + fifoShown + ", is not a regular file: it will not run this deploy"},
		{open, "the node key it names cannot be used (signing key " + open + " has mode 0644: allow only its owner (chmod 600); run ctl as the user that runs narun up, or pass a copy with --signing-key FILE): it will not run this deploy"},
		{gone, "the node key it names, " + gone + ", is not on this machine (pass a copy with --signing-key FILE): it will not run this deploy"},
	} {
		h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, SigningKeyFile: tc.path, TrustedKeys: []string{key.Public()}})
		r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--force")
		if want := "warning: node node-1 runs only signed specs and ctl has no signing key (signing_key_file): " + tc.want; !strings.Contains(r.err, want) {
			t.Errorf("deploy stderr:\n%s\nwant %q", r.err, want)
		}
	}
}

// Without a key of its own, ctl signs with the node key a heartbeat names
// when it can read it and that node trusts it: narun up's data dir need
// not be given to ctl on the same machine.
func TestNodeKeyFromHeartbeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	keys := t.TempDir()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(keys, signing.NodeKeyFile)
	if err := signing.WriteKeyFile(path, key.File()); err != nil {
		t.Fatal(err)
	}
	other, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}

	// A key file that node does not trust is not used.
	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, SigningKeyFile: path, TrustedKeys: []string{other.Public()}})
	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--force")
	if !strings.Contains(r.err, "node node-1 runs only signed specs and ctl has no signing key") || strings.Contains(r.err, "signing with") {
		t.Errorf("deploy with an untrusted key in the heartbeat: stderr\n%s", r.err)
	}
	if stored, _ := h.get(names.AppsBucket, "hello"); strings.Contains(string(stored), "narun-signature") {
		t.Errorf("signed with a key the node does not trust:\n%s", stored)
	}

	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, SigningKeyFile: path, TrustedKeys: []string{key.Public()}})
	r = h.ok("", "deploy", p, "--binary", elfBinary(t))
	if want := fmt.Sprintf("signing with the node key of node-1 (%s)\n", path); strings.Count(r.err, "signing with") != 1 || !strings.Contains(r.err, want) {
		t.Errorf("deploy stderr:\n%s\nwant once %q", r.err, want)
	}
	stored, _ := h.get(names.AppsBucket, "hello")
	if _, err := verifier(t, key.Public()).Verify(stored); err != nil {
		t.Errorf("spec deployed with the heartbeat's node key: %v\n%s", err, stored)
	}
	routes, _ := h.get(names.RoutesBucket, "hello")
	if _, err := verifier(t, key.Public()).Verify(routes); err != nil {
		t.Errorf("routes deployed with the heartbeat's node key: %v\n%s", err, routes)
	}
}

func TestNotOurs(t *testing.T) {
	t.Parallel()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("name = \"hello\"\n")
	signed := key.Sign(body)
	changed := bytes.Replace(signed, []byte("hello"), []byte("hullo"), 1)
	for _, tc := range []struct {
		name  string
		key   *signing.Key
		value []byte
		want  string
	}{
		{"ours", key, signed, ""},
		{"no key", nil, body, ""},
		{"unsigned", key, body, "unsigned"},
		{"another key", key, other.Sign(body), "signed by " + other.Public()},
		{"changed", key, changed, "changed after it was signed"},
	} {
		if got := notOurs(tc.key, tc.value); got != tc.want {
			t.Errorf("%s: notOurs = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A node whose heartbeats have stopped is named with what it last said,
// but does not fail deploy --wait: it may have been down to be given the
// key, and the rollout does not wait for it.
func TestDeployWaitPassesOverADownNodeThatDidNotTrust(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, public := h.keygen("ctl.key")
	h.useSigningKey(path)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Interval: time.Nanosecond, SignaturesRequired: true})
	testutil.Eventually(t, 10*time.Second, "node-1 late", func() bool {
		return strings.Contains(h.ok("", "node", "list").out, "late")
	})
	r := h.fails(ExitRollout, "", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--wait", "--timeout", "1s")
	want := "warning: node node-1, whose heartbeats have stopped (late: down?), last said it runs only signed specs and does not trust ctl's key " + public
	if !strings.Contains(r.err, want) {
		t.Errorf("deploy --wait stderr lacks %q:\n%s", want, r.err)
	}
	if strings.Contains(r.err, "cannot complete") || !strings.Contains(r.err, "no node selected by hello") {
		t.Errorf("deploy --wait with the only selected node down: want it to wait for the node, not to fail for its last heartbeat:\n%s", r.err)
	}
}

// A deploy with a key warns of each node it selects that runs only signed
// specs and does not trust that key, and --wait fails at once; a node that
// trusts it goes unmentioned.
func TestDeployWarnsUntrustingNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, public := h.keygen("ctl.key")
	h.useSigningKey(path)
	other, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, TrustedKeys: []string{other.Public()}})
	h.heartbeat(state.Node{ID: "node-2", SignaturesRequired: true, TrustedKeys: []string{other.Public()}})
	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--force")
	want := "warning: node node-1 runs only signed specs and does not trust ctl's key " + public + " (add it to that node's trusted_keys): it will not run this deploy"
	if !strings.Contains(r.err, want) || strings.Contains(r.err, "node node-2 runs") {
		t.Errorf("deploy stderr:\n%s\nwant only %q", r.err, want)
	}

	start := time.Now()
	r = h.fails(ExitRollout, "", "deploy", p, "--force", "--wait", "--timeout", "60s")
	if !strings.Contains(r.err, "node(s) node-1 run only signed specs and do not trust ctl's key "+public) || time.Since(start) > 30*time.Second {
		t.Errorf("deploy --wait after %s: %s", time.Since(start), r.err)
	}

	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, TrustedKeys: []string{other.Public(), public}})
	if r := h.ok("", "deploy", p); strings.Contains(r.err, "does not trust") {
		t.Errorf("deploy to a node that trusts the key: stderr\n%s", r.err)
	}
}

// writeNodeKey puts a new node key with mode in the harness's data dir, as
// narun up keeps it there, and returns it and its file.
func writeNodeKey(t *testing.T, h *harness, mode os.FileMode) (*signing.Key, string) {
	t.Helper()
	data := filepath.Join(h.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, signing.NodeKeyFile)
	if err := os.WriteFile(path, key.File(), mode); err != nil {
		t.Fatal(err)
	}
	return key, path
}

// A data dir's node key ctl may not use (readable by others) is warned
// about, and ctl goes on to the node key a heartbeat names: the warning
// must not say the deploy is stored unsigned when that key signs it.
func TestUnusableDataDirKeyThenHeartbeatKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	writeNodeKey(t, h, 0o644) // others may read it: ctl must not use it
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), signing.NodeKeyFile)
	if err := signing.WriteKeyFile(path, key.File()); err != nil {
		t.Fatal(err)
	}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, SignaturesRequired: true, SigningKeyFile: path, TrustedKeys: []string{key.Public()}})
	r := h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	if !strings.Contains(r.err, "has mode 0644") || !strings.Contains(r.err, "signing with the node key of node-1") || strings.Contains(r.err, "storing unsigned") {
		t.Errorf("deploy stderr:\n%s", r.err)
	}
	stored, _ := h.get(names.AppsBucket, "hello")
	if _, err := verifier(t, key.Public()).Verify(stored); err != nil {
		t.Errorf("spec deployed with the heartbeat's node key: %v\n%s", err, stored)
	}
}

// signing public with a node key in the data dir that ctl may not use
// says why (exit 1), not that there is no key there (exit 2).
func TestSigningPublicOfUnusableDataDirKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	writeNodeKey(t, h, 0o644) // others may read it: ctl must not use it
	r := h.fails(1, "", "signing", "public")
	if !strings.Contains(r.err, "has mode 0644") || strings.Contains(r.err, "no signing key") {
		t.Errorf("signing public stderr:\n%s", r.err)
	}
}

// A sequence counts the milliseconds of the NATS server that holds the
// bucket, not of the machine ctl runs on: an operator whose laptop is a
// month ahead would otherwise lock every other key out of the app for a
// month, and one on a device still at 1970 be refused after anyone else.
func TestSequenceOnServerClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, ahead := range []time.Duration{30 * 24 * time.Hour, -56 * 365 * 24 * time.Hour} {
		e := h.env(io.Discard)
		e.now = func() time.Time { return time.Now().Add(ahead) }
		for _, bucket := range []string{names.AppsBucket, names.RoutesBucket} {
			order, err := e.readOrder(ctx, h.kv(bucket), "hello", key, specSequence)
			if err != nil {
				t.Fatal(err)
			}
			seq, err := signing.Sequence(signing.Strip(seal(key, []byte("name = \"hello\"\n"), nil, order)))
			if err != nil {
				t.Fatal(err)
			}
			if off := time.Duration(int64(seq)-time.Now().UnixMilli()) * time.Millisecond; off.Abs() > time.Hour {
				t.Errorf("clock %s ahead, %s: sequence %d is %s from the server's clock", ahead, bucket, seq, off)
			}
		}
	}
}

// ctl says it signs with a heartbeat's node key only once it signs a spec:
// said by a command that then fails before it signs anything, it reads as
// if something had been stored.
func TestNodeKeyNamedOnlyWhenSigning(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), signing.NodeKeyFile)
	if err := signing.WriteKeyFile(path, key.File()); err != nil {
		t.Fatal(err)
	}
	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, SigningKeyFile: path, TrustedKeys: []string{key.Public()}})
	p := h.file("hello.toml", helloSpec)
	for _, tc := range []struct {
		code int
		args []string
	}{
		{ExitNotFound, []string{"app", "rollback", "nope"}},
		{ExitNotFound, []string{"app", "restart", "nope"}},
		{2, []string{"deploy", p}},
	} {
		if r := h.fails(tc.code, "", tc.args...); strings.Contains(r.err, "signing with") {
			t.Errorf("ctl %v, which signs nothing: stderr\n%s", tc.args, r.err)
		}
	}
	if r := h.ok("", "deploy", p, "--binary", elfBinary(t)); strings.Count(r.err, "signing with the node key of node-1") != 1 {
		t.Errorf("deploy, which signs: stderr\n%s\nwant once %q", r.err, "signing with the node key of node-1")
	}
}

// A deploy that every selected node would refuse for its signature is
// refused before anything is stored: stored, it took the app's routes down
// on gateways that drop the untrusted entry, while the instances ran on.
// --force stores it all the same; a node that would run it, or one listed
// that has sent no heartbeat, lets it through, with the warning about the
// others.
func TestDeployRefusedByEveryNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	good, goodPub := h.keygen("good.key")
	other, otherPub := h.keygen("other.key")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, SignaturesRequired: true, TrustedKeys: []string{goodPub}})
	p := h.file("hello.toml", helloSpec)
	h.ok("", "--signing-key", good, "deploy", p, "--binary", elfBinary(t))
	spec0, _ := h.get(names.AppsBucket, "hello")
	routes0, _ := h.get(names.RoutesBucket, "hello")
	objects0 := h.objectCount(names.BinariesBucket)

	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, append(must(os.ReadFile(elfBinary(t))), 0), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"deploy", p, "--binary", bin, "--wait"},
		{"deploy", p, "--binary", bin, "--dry-run"},
	} {
		r := h.fails(1, "", append([]string{"--signing-key", other}, args...)...)
		want := "nothing deployed: no node that hello selects would run it: node node-1 runs only signed specs and does not trust ctl's key " + otherPub
		if !strings.Contains(r.err, want) || !strings.Contains(r.err, "--force") {
			t.Errorf("ctl %v: stderr\n%s\nwant %q and --force", args, r.err, want)
		}
	}
	if spec, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(spec, spec0) {
		t.Errorf("spec stored by a refused deploy:\n%s", spec)
	}
	if routes, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(routes, routes0) {
		t.Errorf("routes stored by a refused deploy:\n%s", routes)
	}
	if n := h.objectCount(names.BinariesBucket); n != objects0 {
		t.Errorf("%d objects in %s after a refused deploy, %d before", n, names.BinariesBucket, objects0)
	}

	r := h.ok("", "--signing-key", other, "deploy", p, "--binary", bin, "--force")
	if !strings.Contains(r.err, "node node-1 runs only signed specs and does not trust ctl's key "+otherPub) {
		t.Errorf("deploy --force: stderr\n%s\nwant the warning", r.err)
	}
	if spec, _ := h.get(names.AppsBucket, "hello"); bytes.Equal(spec, spec0) {
		t.Error("deploy --force stored nothing")
	}

	// node-9, listed but never heard from, may be a device being set up
	// with the key: it lets the deploy through as a node whose heartbeats
	// stopped does, with the warnings.
	unseen := h.file("unseen.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-9"]`, 1))
	r = h.ok("", "--signing-key", other, "deploy", unseen, "--binary", bin)
	if !strings.Contains(r.err, "node node-1 runs only signed specs") || !strings.Contains(r.err, "node node-9 sends no heartbeat") {
		t.Errorf("deploy to a node never heard from: stderr\n%s", r.err)
	}

	// node-2 runs it: a warning of node-1, and the deploy goes ahead.
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH, SignaturesRequired: true, TrustedKeys: []string{otherPub}})
	both := h.file("both.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1))
	r = h.ok("", "--signing-key", other, "deploy", both, "--binary", bin)
	if !strings.Contains(r.err, "node node-1 runs only signed specs") || strings.Contains(r.err, "node node-2 runs") {
		t.Errorf("deploy some nodes refuse: stderr\n%s", r.err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A rollback that every selected node would refuse for its signature (the
// nodes trust a new key, ctl still signs with the old one) is refused as
// deploy refuses one, before anything is stored: stored, the app's routes
// went down on gateways that drop the untrusted entry. --force stores it
// all the same.
func TestRollbackRefusedByEveryNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old, oldPub := h.keygen("old.key")
	_, newPub := h.keygen("new.key")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, SignaturesRequired: true, TrustedKeys: []string{oldPub}})
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "--signing-key", old, "deploy", p, "--binary", elfBinary(t))
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "--signing-key", old, "deploy", p, "--binary", elfBinary(t))
	rev0, spec0 := h.revisionOf("hello")
	routes0, _ := h.get(names.RoutesBucket, "hello")

	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, SignaturesRequired: true, TrustedKeys: []string{newPub}})
	r := h.fails(1, "", "--signing-key", old, "app", "rollback", "hello")
	want := "refused, nothing written: no node that hello selects would run it: node node-1 runs only signed specs and does not trust ctl's key " + oldPub
	if !strings.Contains(r.err, want) || !strings.Contains(r.err, "--force") {
		t.Errorf("rollback: stderr\n%s\nwant %q and --force", r.err, want)
	}
	if rev, spec := h.revisionOf("hello"); rev != rev0 || !bytes.Equal(spec, spec0) {
		t.Errorf("a refused rollback stored revision %d (was %d)", rev, rev0)
	}
	if routes, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(routes, routes0) {
		t.Errorf("routes stored by a refused rollback:\n%s", routes)
	}

	r = h.ok("", "--signing-key", old, "app", "rollback", "hello", "--force")
	if !strings.Contains(r.err, "node node-1 runs only signed specs and does not trust ctl's key "+oldPub) {
		t.Errorf("rollback --force: stderr\n%s\nwant the warning", r.err)
	}
	if _, spec := h.revisionOf("hello"); versionOf(t, signing.StripSequence(signing.Strip(spec))) != "1.0.0" {
		t.Errorf("rollback --force stored %s", spec)
	}
}

// A node of narun up that signs with its own node key trusts that key
// alone: the hint to add ctl's key to its trusted_keys, taken, would turn
// the node key off there (SECURITY.md), so the refusal also names the copy
// of the node key to sign with.
func TestDeployToANodeKeyNodeNamesItsKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, public := h.keygen("ctl.key")
	h.useSigningKey(path)
	node, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h.heartbeat(state.Node{ID: "node-1", SignaturesRequired: true, TrustedKeys: []string{node.Public()}, SigningKeyFile: "/var/lib/narun/signing.key"})
	r := h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--force")
	want := "warning: node node-1 runs only signed specs and does not trust ctl's key " + public + " (sign with its node key: --signing-key with a copy of its /var/lib/narun/signing.key; or add ctl's key to its [runner] and [gateway] trusted_keys, which then replace the node key): it will not run this deploy"
	if !strings.Contains(r.err, want) {
		t.Errorf("deploy stderr:\n%s\nwant %q", r.err, want)
	}
}
