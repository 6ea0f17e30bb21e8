package ctl

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

// Routes whose spec is gone (a delete cut short after the spec, or one that
// raced a deploy) are removed by `app delete`, which has no other way in.
func TestAppDeleteRemovesLeftoverRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	if err := h.kv(names.AppsBucket).Delete(context.Background(), "hello"); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
		t.Fatal("no routes entry to leave behind")
	}
	r := h.ok("", "app", "delete", "hello")
	if !strings.Contains(r.out, "leftover routes are removed") {
		t.Errorf("app delete said %q", r.out)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("leftover routes entry still there")
	}
	h.fails(ExitNotFound, "", "app", "delete", "hello")
}

// A deploy whose routes land after an `app delete` removed the spec takes
// them out again and says so, instead of leaving them to answer 503 and
// hold their path.
func TestRoutesWrittenAfterADeleteAreDropped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	rev, raw := h.revisionOf("hello")
	deployed, err := spec.Parse("hello", raw)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "app", "delete", "hello")

	// What the racing deploy does after the delete: write its routes, and
	// read the spec back.
	e := h.env(io.Discard)
	settle := func(rev uint64) error {
		return e.settleRoutes(context.Background(), deployed, rev, nil, "deploy", func(err error) error { return err })
	}
	if err := settle(rev); err == nil || !strings.Contains(err.Error(), "was deleted while this ran") {
		t.Errorf("after the delete: %v", err)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("routes of the deleted app still there")
	}

	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	rev, _ = h.revisionOf("hello")
	if err := settle(rev); err != nil {
		t.Errorf("with the spec there: %v", err)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
		t.Error("routes of a deployed app removed")
	}
}

// An app that a node runs from its cached spec though narun-apps has no
// entry for it (a store that lost its data) is deleted by `app delete`:
// the delete marker it stores is what the node waits for.
func TestAppDeleteStopsAppRunFromCache(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fails(ExitNotFound, "", "app", "delete", "ghost")
	h.heartbeat(state.Node{ID: "n1", Instances: []state.Instance{{App: "ghost", Node: "n1", ID: "0-abcdef", State: state.Healthy}}})
	r := h.ok("", "app", "delete", "ghost")
	if !strings.Contains(r.out, "runs on n1 from a cached spec") {
		t.Errorf("app delete said %q", r.out)
	}
	for _, bucket := range []string{names.AppsBucket, names.RoutesBucket} {
		hist, err := h.kv(bucket).History(context.Background(), "ghost")
		if err != nil || len(hist) != 1 || hist[0].Operation() != jetstream.KeyValueDelete {
			t.Errorf("%s history of ghost: %v %v, want one delete marker", bucket, hist, err)
		}
	}
}

// The same with its routes entry left: a store that lost narun-apps need
// not have lost narun-routes. Removing the routes alone said the app was
// deleted and left it running on the node, with nothing stored to stop it.
func TestAppDeleteStopsAppRunFromCacheWithRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if _, err := h.kv(names.RoutesBucket).Put(context.Background(), "ghost", []byte(`{"routes":[]}`)); err != nil {
		t.Fatal(err)
	}
	h.heartbeat(state.Node{ID: "n1", Instances: []state.Instance{{App: "ghost", Node: "n1", ID: "0-abcdef", State: state.Healthy}}})
	r := h.ok("", "app", "delete", "ghost")
	if !strings.Contains(r.out, "runs on n1 from a cached spec") {
		t.Errorf("app delete said %q", r.out)
	}
	hist, err := h.kv(names.AppsBucket).History(context.Background(), "ghost")
	if err != nil || len(hist) != 1 || hist[0].Operation() != jetstream.KeyValueDelete {
		t.Errorf("%s history of ghost: %v %v, want one delete marker, which stops it on n1", names.AppsBucket, hist, err)
	}
	if _, ok := h.get(names.RoutesBucket, "ghost"); ok {
		t.Error("leftover routes entry still there")
	}
}

// A stored binary whose chunks were damaged on disk, though its digest is
// intact, is uploaded again by a deploy of the same bytes: nodes fail
// every download of it, and that deploy is how an operator would fix it.
func TestDeployReplacesDamagedBinary(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	spec := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", spec, "--binary", elfBinary(t))
	ctx := context.Background()
	obs, err := h.js.ObjectStore(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	list, err := obs.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("objects: %v %v", list, err)
	}
	object := list[0].Name
	// Replace one chunk by as many other bytes, as a damaged block file
	// would have it.
	chunks := "$O." + names.BinariesBucket + ".C." + list[0].NUID
	stream, err := h.js.Stream(ctx, "OBJ_"+names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, chunks)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, m.Sequence); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, chunks, make([]byte, len(m.Data))); err != nil {
		t.Fatal(err)
	}
	read := func() error {
		obj, err := obs.Get(ctx, object)
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = io.Copy(io.Discard, obj)
		return err
	}
	if err := read(); !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Fatalf("damaged object read: %v", err)
	}

	r := h.ok("", "deploy", spec, "--binary", elfBinary(t))
	if !strings.Contains(r.err, object+" in "+names.BinariesBucket+" is damaged") {
		t.Errorf("deploy said nothing of the damaged object: %q", r.err)
	}
	if err := read(); err != nil {
		t.Errorf("object after the deploy: %v", err)
	}
}

// app delete names the builds of the app that no stored spec pins, the
// one the deleted spec pinned and those earlier revisions pin included,
// and none that image delete removed (which leaves a deletion marker in
// the stream) nor another app's whose name it prefixes.
func TestAppDeleteNamesLeftoverBuilds(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Deleted at once, which prune_grace would refuse (TestImageDeleteDuringDeploy).
	h.pruneGrace("0s")
	p := h.file("hello.toml", helloSpec)
	first := h.build("1.0.0", 0)
	h.ok("", "deploy", p, "--binary", first.path)
	h.file("hello.toml", helloVersion("1.0.1", "/hello/"))
	second := h.build("1.0.1", 1)
	h.ok("", "deploy", p, "--binary", second.path)
	unpinned := h.build("1.0.2", 2)
	h.upload(unpinned)
	removed := h.build("1.0.3", 3)
	h.upload(removed)
	h.ok("", "image", "delete", removed.object)
	other := h.build("1.0.0", 4)
	other.object = "hello2/" + strings.TrimPrefix(other.object, "hello/")
	h.upload(other)

	r := h.ok("", "app", "delete", "hello")
	want := "its binaries stay in " + names.BinariesBucket + "; to remove them: narun ctl image delete " +
		first.object + " " + second.object + " " + unpinned.object + "\n"
	if !strings.HasSuffix(r.out, want) {
		t.Errorf("app delete said %q, want it to end with %q", r.out, want)
	}

	// An app whose every build is gone leaves nothing to name.
	h.ok("", "deploy", h.file("solo.toml", strings.ReplaceAll(helloSpec, "hello", "solo")), "--binary", h.build("1.0.0", 5).path)
	raw, _ := h.get(names.AppsBucket, "solo")
	solo, err := spec.Parse("solo", raw)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "image", "delete", "--force", solo.Binaries[runtime.GOARCH].Object)
	r = h.ok("", "app", "delete", "solo")
	if strings.Contains(r.out, "binaries stay") {
		t.Errorf("app delete of an app whose builds are deleted said %q", r.out)
	}
}

// What app delete suggests for the builds it leaves works as it says.
// Right after a deploy, image delete refuses them for a while (a deploy may
// be storing a spec that pins them): the hint says so, and names --force,
// which deletes them at once.
func TestAppDeleteSuggestedImageDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.build("1.0.0", 0)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", b.path)

	r := h.ok("", "app", "delete", "hello")
	later := "narun ctl image delete " + b.object
	now := "narun ctl image delete --force " + b.object
	if !strings.Contains(r.out, later) || !strings.Contains(r.out, "refuses them for") || !strings.Contains(r.out, now+"\n") {
		t.Fatalf("app delete right after a deploy said %q; want it to name the wait before %q and %q", r.out, later, now)
	}
	refused := h.fails(ExitInUse, "", "image", "delete", b.object)
	if !strings.Contains(refused.err, "wait ") {
		t.Errorf("image delete right after the deploy: %s; want it to name the wait the hint named", refused.err)
	}
	h.ok("", "image", "delete", "--force", b.object)
	if r := h.ok("", "image", "list"); strings.Contains(r.out, b.object) {
		t.Errorf("image list after the suggested --force delete still shows %s:\n%s", b.object, r.out)
	}
}

// A second app delete while the nodes are still stopping the app is told
// that it is deleted already, and which nodes are stopping it: the first
// one's delete marker is stored, so it is not an app run from a cached
// spec, and nothing is stored again. It is not deployed: not found, as
// once the nodes are done.
func TestAppDeleteAgainWhileNodesStop(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	h.ok("", "app", "delete", "hello")
	h.heartbeat(state.Node{ID: "n1", Instances: []state.Instance{{App: "hello", Node: "n1", ID: "0-abcdef", State: state.Stopping}}})
	hist, err := h.kv(names.AppsBucket).History(context.Background(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	r := h.run("", "app", "delete", "hello")
	if r.code != ExitNotFound {
		t.Errorf("second app delete: exit %d, want %d", r.code, ExitNotFound)
	}
	if !strings.Contains(r.err, "already deleted") || !strings.Contains(r.err, "n1") || strings.Contains(r.out+r.err, "cached spec") {
		t.Errorf("second app delete said %q on stdout, %q on stderr, want that hello is already deleted and n1 still stops it", r.out, r.err)
	}
	again, err := h.kv(names.AppsBucket).History(context.Background(), "hello")
	if err != nil || len(again) != len(hist) {
		t.Errorf("%s history of hello: %d entries (%v) after the second delete, want %d: nothing stored again", names.AppsBucket, len(again), err, len(hist))
	}
	// With routes left behind, those are removed, and that is said too.
	if _, err := h.kv(names.RoutesBucket).Put(context.Background(), "hello", []byte(`{"routes":[]}`)); err != nil {
		t.Fatal(err)
	}
	r = h.ok("", "app", "delete", "hello")
	if !strings.Contains(r.out, "already deleted") || !strings.Contains(r.out, "leftover routes are removed") || !strings.Contains(r.out, "n1") {
		t.Errorf("app delete with leftover routes said %q", r.out)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("leftover routes entry still there")
	}
}
