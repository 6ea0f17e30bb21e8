package ctl

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// A deploy whose spec is stored but whose routes cannot be written says
// that the spec is stored, and rolls out, instead of reading as a deploy
// that failed and changed nothing; deploying again writes the routes.
func TestDeployRoutesFailureSaysSpecStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A routes bucket that takes no entry as long as hello's: the
	// write of the routes fails after the spec's.
	if _, err := h.js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: names.RoutesBucket, MaxValueSize: 8}); err != nil {
		t.Fatal(err)
	}
	p := h.file("hello.toml", helloSpec)
	r := h.fails(1, "", "deploy", p, "--binary", elfBinary(t))
	if _, ok := h.get(names.AppsBucket, "hello"); !ok {
		t.Fatal("no spec stored: the routes' failure is not a partial one")
	}
	rev, _ := h.revisionOf("hello")
	for _, want := range []string{fmt.Sprintf("spec of hello stored (revision %d)", rev), "its routes are not", "deploy again"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("deploy whose routes failed: %q\nwant it to say %q", r.err, want)
		}
	}

	if _, err := h.js.UpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: names.RoutesBucket, MaxValueSize: -1}); err != nil {
		t.Fatal(err)
	}
	if r := h.ok("", "deploy", p, "--binary", elfBinary(t)); !strings.Contains(r.out, "unchanged") {
		t.Errorf("deploy again: %s, want the spec unchanged", r.out)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
		t.Error("deploy again did not write the routes")
	}
}

// routeLimit sets the largest value narun-routes takes: 8 bytes makes
// every write of an app's routes fail, -1 lifts the limit.
func (h *harness) routeLimit(max int32) {
	h.t.Helper()
	cfg, err := store.KVConfig(names.RoutesBucket)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.MaxValueSize = max
	if _, err := h.js.UpdateKeyValue(context.Background(), cfg); err != nil {
		h.t.Fatal(err)
	}
}

// A rollback whose spec is stored but whose routes cannot be written says
// so, and how to write them: the same rollback again, which then finds
// the spec restored and writes the revision's routes.
func TestRollbackRoutesFailureRepairedByRollbackAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", bin)
	rev1, _ := h.revisionOf("hello")
	h.file("hello.toml", helloVersion("2.0.0", "/hello2/"))
	h.ok("", "deploy", p, "--binary", otherBuild(t, bin, "v2"))

	h.routeLimit(8)
	to := fmt.Sprint(rev1)
	r := h.fails(1, "", "app", "rollback", "hello", "--to", to)
	for _, want := range []string{"spec of hello stored (revision ", "its routes are not written", "narun ctl app rollback hello --to " + to + " writes them"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("rollback whose routes failed: %q\nwant it to say %q", r.err, want)
		}
	}

	h.routeLimit(-1)
	h.ok("", "app", "rollback", "hello", "--to", to)
	routes, _ := h.get(names.RoutesBucket, "hello")
	if !strings.Contains(string(routes), `"/hello/"`) || strings.Contains(string(routes), "/hello2/") {
		t.Errorf("after the rollback again, the routes of hello are %s, want revision %d's (/hello/)", routes, rev1)
	}
}

// An app delete that removed the routes and then failed to delete the
// spec says that the app still runs without its routes, and what to run.
func TestAppDeleteSpecFailureSaysRoutesRemoved(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	// A sealed stream takes no more writes: the deletion of the spec fails.
	s, err := h.js.Stream(context.Background(), "KV_"+names.AppsBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sealed = true
	if _, err := h.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	r := h.fails(1, "", "app", "delete", "hello")
	for _, want := range []string{"delete spec of hello: ", "its routes are removed already", "narun ctl app delete hello again"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("app delete whose spec stays: %q\nwant it to say %q", r.err, want)
		}
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("the routes of hello are still there: the failure is not the partial one this test is about")
	}
}
