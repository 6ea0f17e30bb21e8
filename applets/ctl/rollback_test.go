package ctl

import (
	"bytes"
	"context"
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

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// helloVersion is helloSpec at version v, routed at path.
func helloVersion(v, path string) string {
	return fmt.Sprintf("name = \"hello\"\nversion = %q\nnodes = [\"node-1\"]\nreplicas = 2\nhealth = { min_healthy = \"100ms\" }\n[[routes]]\npath = %q\n", v, path)
}

// revisionOf is the revision narun-apps holds for app now, and its value.
func (h *harness) revisionOf(app string) (uint64, []byte) {
	h.t.Helper()
	e, err := h.kv(names.AppsBucket).Get(context.Background(), app)
	if err != nil {
		h.t.Fatal(err)
	}
	return e.Revision(), e.Value()
}

// historyOf is what app history --json prints for app.
func (h *harness) historyOf(app string) []revision {
	h.t.Helper()
	r := h.ok("", "app", "history", app, "--json")
	var revs []revision
	if err := json.Unmarshal([]byte(r.out), &revs); err != nil {
		h.t.Fatalf("decode %q: %v", r.out, err)
	}
	return revs
}

// versionOf parses a stored spec and returns its version.
func versionOf(t *testing.T, stored []byte) string {
	t.Helper()
	a, err := spec.Parse("stored", stored)
	if err != nil {
		t.Fatal(err)
	}
	return a.Version
}

// otherBuild is a copy of the executable bin with tag appended: another
// build, whose object is not the one bin's deploy pins.
func otherBuild(t *testing.T, bin, tag string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(bin))
	if err := os.WriteFile(p, append(b, tag...), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// Deploy 1.0.0, deploy 2.0.0, roll back: a real runner runs 1.0.0 again and
// the app's routes are 1.0.0's; rolling back again returns to 2.0.0.
func TestRollbackWithRealRunner(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", hello, "--wait", "--timeout", "30s")
	v1Routes, _ := h.get(names.RoutesBucket, "hello")
	h.file("hello.toml", helloVersion("2.0.0", "/hello2/"))
	h.ok("", "deploy", p, "--binary", hello, "--wait", "--timeout", "30s")
	v2Routes, _ := h.get(names.RoutesBucket, "hello")
	if bytes.Equal(v1Routes, v2Routes) {
		t.Fatalf("the two deploys stored the same routes: %s", v1Routes)
	}

	r := h.ok("", "app", "rollback", "hello", "--wait", "--timeout", "30s")
	if !strings.Contains(r.out, "hello 1.0.0: rolled back to revision") || !strings.Contains(r.out, "2 instance(s) ready") {
		t.Errorf("rollback output: %s", r.out)
	}
	var st appStatusJSON
	testutil.Eventually(t, 20*time.Second, "status to show 1.0.0 ready on the node", func() bool {
		res := h.ok("", "app", "status", "hello", "--json")
		if err := json.Unmarshal([]byte(res.out), &st); err != nil {
			t.Fatal(err)
		}
		return st.Version == "1.0.0" && st.Ready == 2
	})
	for _, in := range st.Instances {
		if in.Current && in.Version != "1.0.0" {
			t.Errorf("instance %s runs %s after the rollback", in.ID, in.Version)
		}
	}
	if now, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(now, v1Routes) {
		t.Errorf("routes after the rollback: %s, want 1.0.0's %s", now, v1Routes)
	}

	// Rolling back a rollback goes forward again, as kubectl's undo does.
	h.ok("", "app", "rollback", "hello", "--wait", "--timeout", "30s")
	if _, stored := h.revisionOf("hello"); versionOf(t, stored) != "2.0.0" {
		t.Errorf("second rollback stored %s, want 2.0.0", versionOf(t, stored))
	}
	if now, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(now, v2Routes) {
		t.Errorf("routes after the second rollback: %s, want 2.0.0's %s", now, v2Routes)
	}
}

// --to restores the revision it names; the current one is a no-op; a
// revision the app never had is not found.
func TestRollbackTo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	rev1, v1 := h.revisionOf("hello")
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.file("hello.toml", helloVersion("3.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	rev3, _ := h.revisionOf("hello")

	r := h.ok("", "app", "rollback", "hello", "--to", fmt.Sprint(rev1))
	rev4, now := h.revisionOf("hello")
	if !bytes.Equal(now, v1) || rev4 <= rev3 {
		t.Fatalf("after rollback --to %d: revision %d (was %d) holds\n%s\nwant\n%s", rev1, rev4, rev3, now, v1)
	}
	if !strings.Contains(r.out, fmt.Sprintf("rolled back to revision %d, stored as revision %d", rev1, rev4)) {
		t.Errorf("rollback output: %s", r.out)
	}

	// Its routes lost (a rollback whose routes failed after its spec was
	// stored): restoring the current revision writes them.
	if err := h.kv(names.RoutesBucket).Delete(context.Background(), "hello"); err != nil {
		t.Fatal(err)
	}
	r = h.ok("", "app", "rollback", "hello", "--to", fmt.Sprint(rev4))
	if !strings.Contains(r.out, "is the current one; nothing to roll back") {
		t.Errorf("rollback to the current revision: %s", r.out)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
		t.Errorf("rollback to the current revision did not write its routes")
	}
	r = h.ok("", "app", "rollback", "hello", "--to", fmt.Sprint(rev1))
	if !strings.Contains(r.out, "holds the same spec as the current one") {
		t.Errorf("rollback to a revision with the current spec: %s", r.out)
	}
	if rev, _ := h.revisionOf("hello"); rev != rev4 {
		t.Errorf("a rollback that changes nothing wrote revision %d", rev)
	}

	r = h.fails(ExitNotFound, "", "app", "rollback", "hello", "--to", "999")
	if !strings.Contains(r.err, "revision 999 is not in the history of hello") {
		t.Errorf("rollback to an unknown revision: %s", r.err)
	}
	h.fails(2, "", "app", "rollback", "hello", "--to", "x")
	h.fails(2, "", "app", "rollback", "hello", "--to", "0")
}

// A revision whose binary image delete removed, or whose file changed, is
// refused, naming the revision and what is missing, and nothing is written.
func TestRollbackRefusedWritesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Deleted at once, which prune_grace would refuse (TestImageDeleteDuringDeploy).
	h.pruneGrace("0s")
	bin := elfBinary(t)
	h.ok("", "files", "put", "conf", h.file("conf", "a = 1\n"))
	withFile := helloVersion("1.0.0", "/hello/") + "[[files]]\nobject = \"conf\"\npath = \"conf.toml\"\n"
	p := h.file("hello.toml", withFile)
	h.ok("", "deploy", p, "--binary", otherBuild(t, bin, "v1"))
	rev1, v1 := h.revisionOf("hello")
	object := "hello/1.0.0/linux-" + runtime.GOARCH + "-"
	h.file("hello.toml", helloVersion("2.0.0", "/hello2/"))
	h.ok("", "deploy", p, "--binary", bin)
	before, stored := h.revisionOf("hello")
	routes, _ := h.get(names.RoutesBucket, "hello")

	h.ok("", "files", "put", "conf", h.file("conf", "a = 2\n"))
	a1, err := spec.Parse("v1", v1)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "image", "delete", a1.Binaries[runtime.GOARCH].Object)

	r := h.fails(1, "", "app", "rollback", "hello")
	for _, want := range []string{
		fmt.Sprintf("rollback of hello to revision %d refused, nothing written", rev1),
		"binary " + object,
		"is not in " + names.BinariesBucket,
		`file "conf" changed since revision`,
	} {
		if !strings.Contains(r.err, want) {
			t.Errorf("refusal lacks %q: %s", want, r.err)
		}
	}
	after, now := h.revisionOf("hello")
	if after != before || !bytes.Equal(now, stored) {
		t.Errorf("refused rollback wrote revision %d (was %d)", after, before)
	}
	if nowRoutes, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(nowRoutes, routes) {
		t.Errorf("refused rollback changed the routes: %s, was %s", nowRoutes, routes)
	}
}

// Deleting a binary only earlier kept revisions pin goes ahead, and says
// which revisions a rollback can no longer restore.
func TestImageDeleteNamesKeptRevisions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Deleted at once, which prune_grace would refuse (TestImageDeleteDuringDeploy).
	h.pruneGrace("0s")
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", otherBuild(t, bin, "v1"))
	rev1, v1 := h.revisionOf("hello")
	h.file("hello.toml", helloVersion("2.0.0", "/hello2/"))
	h.ok("", "deploy", p, "--binary", bin)
	a1, err := spec.Parse("v1", v1)
	if err != nil {
		t.Fatal(err)
	}
	old := a1.Binaries[runtime.GOARCH].Object
	if n := h.objectCount(names.BinariesBucket); n != 2 {
		t.Fatalf("%d binaries stored, want both versions'", n)
	}

	r := h.ok("", "image", "delete", old)
	want := fmt.Sprintf("warning: image %s is pinned by earlier revisions %s keeps, which app rollback will refuse to restore once it is gone: hello revision %d (version 1.0.0)\n", old, names.AppsBucket, rev1)
	if !strings.Contains(r.err, want) {
		t.Errorf("image delete does not name the revision it breaks:\n%s\nwant\n%s", r.err, want)
	}
	if n := h.objectCount(names.BinariesBucket); n != 1 {
		t.Errorf("%d binaries left, want the current one only", n)
	}
}

// History lists every kept revision, newest first, and says which one is
// current, which restarted, which repeats an earlier one and which deleted
// the app; a deleted app is not rolled back.
func TestAppHistory(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.ok("", "app", "restart", "hello")
	// After a restart the previous deploy is the one rolled back to.
	h.ok("", "app", "rollback", "hello")
	_, now := h.revisionOf("hello")
	if versionOf(t, now) != "1.0.0" {
		t.Fatalf("rollback after a restart stored %s, want 1.0.0", versionOf(t, now))
	}

	revs := h.historyOf("hello")
	if len(revs) != 4 {
		t.Fatalf("history: %d revisions, want 4: %+v", len(revs), revs)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i].Revision >= revs[i-1].Revision {
			t.Errorf("history not newest first: %d before %d", revs[i-1].Revision, revs[i].Revision)
		}
	}
	rb, restart, v2, v1 := revs[0], revs[1], revs[2], revs[3]
	if !rb.Current || rb.SameAs != v1.Revision || rb.Version != "1.0.0" || rb.Operation != "put" {
		t.Errorf("rollback revision: %+v", rb)
	}
	if restart.Current || !restart.Restart || restart.Version != "2.0.0" {
		t.Errorf("restart revision: %+v", restart)
	}
	if v2.Restart || v2.SameAs != 0 || v1.Replicas != 2 || v1.SignedBy != "" {
		t.Errorf("deploy revisions: %+v %+v", v2, v1)
	}
	a1, err := spec.Parse("v1", now)
	if err != nil {
		t.Fatal(err)
	}
	if got := v1.Binaries[runtime.GOARCH]; got.SHA256 != a1.Binaries[runtime.GOARCH].SHA256 || got.Object != a1.Binaries[runtime.GOARCH].Object {
		t.Errorf("binaries of revision %d: %+v, want %+v", v1.Revision, v1.Binaries, a1.Binaries)
	}

	h.ok("", "app", "delete", "hello")
	r := h.ok("", "app", "history", "hello")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "REVISION") || !strings.Contains(lines[1], "app deleted") ||
		!strings.Contains(lines[2], fmt.Sprintf("same as %d", v1.Revision)) || strings.Contains(r.out, "current") ||
		!strings.Contains(lines[3], "restart") || !strings.Contains(lines[5], prefix(a1.Binaries[runtime.GOARCH].SHA256)) {
		t.Errorf("history table:\n%s", r.out)
	}
	r = h.fails(ExitNotFound, "", "app", "rollback", "hello")
	if !strings.Contains(r.err, "was deleted") || !strings.Contains(r.err, "narun ctl deploy") {
		t.Errorf("rollback of a deleted app: %s", r.err)
	}
	if _, ok := h.get(names.AppsBucket, "hello"); ok {
		t.Error("rollback of a deleted app stored a spec")
	}
	h.fails(ExitNotFound, "", "app", "history", "nope")
	// The delete is the next write to narun-apps after the rollback.
	r = h.fails(1, "", "app", "history", "hello", "--revision", fmt.Sprint(revs[0].Revision+1))
	if !strings.Contains(r.err, "is its deletion, not a spec") {
		t.Errorf("history --revision of the deletion: %s", r.err)
	}

	// What the hint says brings a deleted app back: a kept revision,
	// printed, saved and deployed.
	r = h.ok("", "app", "history", "hello", "--revision", fmt.Sprint(v1.Revision))
	h.ok("", "deploy", h.file("saved.toml", r.out))
	if _, again := h.revisionOf("hello"); !bytes.Equal(again, now) {
		t.Errorf("deploy of revision %d as printed stored\n%s\nwant\n%s", v1.Revision, again, now)
	}
}

// With a signing key a rollback stores the revision signed by it, and
// refuses one the key did not sign.
func TestRollbackSigned(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	unsigned, _ := h.revisionOf("hello")
	path, public := h.keygen("sign.key")
	h.useSigningKey(path)
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.file("hello.toml", helloVersion("3.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	before, _ := h.revisionOf("hello")

	r := h.fails(1, "", "app", "rollback", "hello", "--to", fmt.Sprint(unsigned))
	if !strings.Contains(r.err, fmt.Sprintf("revision %d is not signed by this ctl's key (unsigned)", unsigned)) {
		t.Errorf("rollback to an unsigned revision: %s", r.err)
	}
	// Most unsigned revisions are those stored before an upgrade brought
	// the key: the refusal must not leave the operator suspecting an intruder.
	if !strings.Contains(r.err, "stored before this key signed") {
		t.Errorf("refusal of an unsigned revision does not say it may predate the key: %s", r.err)
	}
	if after, _ := h.revisionOf("hello"); after != before {
		t.Errorf("refused rollback wrote revision %d", after)
	}

	h.ok("", "app", "rollback", "hello")
	_, stored := h.revisionOf("hello")
	body, err := verifier(t, public).Verify(stored)
	if err != nil {
		t.Fatalf("rolled back spec: %v\n%s", err, stored)
	}
	if versionOf(t, body) != "2.0.0" {
		t.Errorf("rolled back to %s, want 2.0.0", versionOf(t, body))
	}
	routes, _ := h.get(names.RoutesBucket, "hello")
	if pub, err := signing.SignedBy(routes); pub != public || err != nil {
		t.Errorf("routes after the rollback signed by %q (%v), want %s", pub, err, public)
	}

	// The way the refusal names: the operator reads the revision and
	// deploys it, vouching for it.
	r = h.ok("", "app", "history", "hello", "--revision", fmt.Sprint(unsigned))
	h.ok("", "deploy", h.file("saved.toml", r.out))
	_, stored = h.revisionOf("hello")
	if body, err := verifier(t, public).Verify(stored); err != nil || versionOf(t, body) != "1.0.0" {
		t.Errorf("deploy of the unsigned revision as a file: %v\n%s", err, stored)
	}
}

// A deploy between a rollback's read and its write makes the rollback
// fail: the write is conditional on the revision it read.
func TestRollbackLosesRaceToDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)

	var stderr bytes.Buffer
	e := h.env(&stderr)
	ctx := context.Background()
	apps, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		t.Fatal(err)
	}
	revs, err := e.history(ctx, apps, "hello")
	if err != nil {
		t.Fatal(err)
	}
	target, err := rollbackTarget("hello", revs, 0)
	if err != nil {
		t.Fatal(err)
	}
	cur := revs[len(revs)-1]
	stored, final, err := e.restorable(ctx, "hello", target, cur, nil, signedOrder{})
	if err != nil {
		t.Fatal(err)
	}

	h.file("hello.toml", helloVersion("3.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	deployed, v3 := h.revisionOf("hello")

	_, err = e.publish(ctx, release{apps: apps, cur: current{app: cur.app, raw: cur.raw, rev: cur.Revision, last: cur.Revision}, stored: stored, final: final, verb: "rollback"}, false)
	if err == nil || !strings.Contains(err.Error(), "it changed during this rollback") {
		t.Errorf("rollback over a deploy it did not read: %v", err)
	}
	if rev, now := h.revisionOf("hello"); rev != deployed || !bytes.Equal(now, v3) {
		t.Errorf("the deploy was overwritten: revision %d (was %d)", rev, deployed)
	}
}

// A rollback --wait fails like deploy's when the nodes report a failure.
func TestRollbackWaitFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	fakeRunner(t, h, "node-1", state.Failed, "exit status 2", 0)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	r := h.fails(ExitRollout, "", "app", "rollback", "hello", "--wait", "--timeout", "20s")
	if !strings.Contains(r.err, "rollout of hello failed") || !strings.Contains(r.err, "exit status 2") {
		t.Errorf("rollback --wait of a failing revision: %s", r.err)
	}
	h.fails(2, "", "app", "rollback", "hello", "--wait", "--timeout", "0")
}

// Rolled back from a revision whose instances failed and then straight
// back to it: the node's heartbeat may still list those failed instances,
// of the very spec restored. The runner starts new ones for it, and those
// are what --wait follows, not the ones that ended before the write.
func TestRollbackWaitIgnoresInstancesEndedBefore(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	_, v1 := h.revisionOf("hello")
	app, err := spec.Parse("stored", v1)
	if err != nil {
		t.Fatal(err)
	}
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	var failed []state.Instance
	for i := range 2 {
		failed = append(failed, state.Instance{App: "hello", Node: "node-1", ID: fmt.Sprintf("%d-old", i), Slot: i, State: state.Failed,
			Reason: "exit status 2", Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH), Since: time.Now()})
	}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: failed})
	// The new instances turn healthy at once; the heartbeat that drops the
	// failed ones comes a second later.
	fakeRunner(t, h, "node-1", state.Healthy, "", time.Second)
	r := h.ok("", "app", "rollback", "hello", "--wait", "--timeout", "20s")
	if !strings.Contains(r.out, "rolled back to revision 1") || !strings.Contains(r.out, "2 instance(s) ready") {
		t.Errorf("rollback --wait to the revision whose failed instances the heartbeat still lists: %s\n%s", r.out, r.err)
	}
}

// A deploy --wait that changes nothing reports the instances that failed
// before it: they are what the stored spec runs as, and nothing restarts
// them.
func TestDeployWaitUnchangedReportsFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	fakeRunner(t, h, "node-1", state.Failed, "exit status 2", 0)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.fails(ExitRollout, "", "deploy", p, "--binary", bin, "--wait", "--timeout", "20s")
	r := h.fails(ExitRollout, "", "deploy", p, "--binary", bin, "--wait", "--timeout", "20s")
	if !strings.Contains(r.err, "rollout of hello failed") || !strings.Contains(r.err, "exit status 2") {
		t.Errorf("deploy --wait of the unchanged spec whose instances failed: %s", r.err)
	}
}

// A restart whose spec changed between its read and its write (a deploy
// meanwhile) fails, overwriting nothing, and says to run it again as a
// deploy or rollback that loses the race does.
func TestRestartLosesRaceToDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	read, stored := h.revisionOf("hello")
	restarted, err := spec.SetRestartedAt(names.AppsBucket+"/hello", stored, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	deployed, v2 := h.revisionOf("hello")

	e := h.env(io.Discard)
	err = e.storeRestart(context.Background(), h.kv(names.AppsBucket), "hello", restarted, read)
	if err == nil || !strings.Contains(err.Error(), "it changed during this restart") || !strings.Contains(err.Error(), "run it again") {
		t.Errorf("restart over a deploy it did not read: %v", err)
	}
	if rev, now := h.revisionOf("hello"); rev != deployed || !bytes.Equal(now, v2) {
		t.Errorf("the deploy was overwritten: revision %d (was %d)", rev, deployed)
	}
}

// app history --json has every key SPEC lists in every revision, a
// deletion's included: a script reading .binaries or .same_as found them
// only on some revisions.
func TestAppHistoryJSONKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloVersion("1.0.0", "/hello/")), "--binary", elfBinary(t))
	h.ok("", "app", "delete", "hello")
	r := h.ok("", "app", "history", "hello", "--json")
	var revs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &revs); err != nil || len(revs) != 2 {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	for _, rev := range revs {
		for _, k := range []string{"revision", "stored", "operation", "version", "replicas", "binaries", "signed_by", "signature_error", "current", "restart", "files", "same_as", "error"} {
			if _, ok := rev[k]; !ok {
				t.Errorf("%s revision lacks %q: %v", rev["operation"], k, rev)
			}
		}
		if _, ok := rev["binaries"].(map[string]any); !ok {
			t.Errorf("%s revision: binaries %#v, want an object", rev["operation"], rev["binaries"])
		}
	}
}

// A deploy without --binary of a version a kept revision pins builds of
// uses them: after a rollback to 1.0.0, scaling 1.1.0 from its file needs
// no upload again. A version no kept revision pins is still refused, with
// the hint.
func TestDeployKeepsBuildsOfAKeptRevision(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, append(must(os.ReadFile(elfBinary(t))), 1), 0o755); err != nil {
		t.Fatal(err)
	}
	h.file("hello.toml", helloVersion("1.1.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	want := h.storedApp("hello").Binaries
	h.ok("", "app", "rollback", "hello")
	objects := h.objectCount(names.BinariesBucket)

	h.file("hello.toml", strings.Replace(helloVersion("1.1.0", "/hello/"), "replicas = 2", "replicas = 3", 1))
	r := h.run("", "deploy", p)
	if r.code != 0 {
		t.Fatalf("deploy 1.1.0 without --binary after a rollback: exit %d\n%s", r.code, r.err)
	}
	got := h.storedApp("hello")
	if got.Version != "1.1.0" || got.Replicas != 3 || !maps.Equal(got.Binaries, want) {
		t.Errorf("stored %s, %d replicas, binaries %v; want 1.1.0, 3 and %v", got.Version, got.Replicas, got.Binaries, want)
	}
	if n := h.objectCount(names.BinariesBucket); n != objects {
		t.Errorf("%d objects in %s, %d before", n, names.BinariesBucket, objects)
	}
	if !strings.Contains(r.out, "kept from revision") {
		t.Errorf("deploy does not say where its binaries come from:\n%s", r.out)
	}

	h.file("hello.toml", helloVersion("2.0.0", "/hello/"))
	if r := h.fails(2, "", "deploy", p); !strings.Contains(r.err, "no binary for hello 2.0.0: pass --binary FILE") {
		t.Errorf("deploy of a version nothing pins: stderr\n%s", r.err)
	}
}
