package ctl

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

// slowDeletes is JetStream whose key-value gets, puts and deletions are
// each answered after delay, as over a slow link or during a leader
// election.
type slowDeletes struct {
	jetstream.JetStream
	delay time.Duration
}

func (s slowDeletes) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := s.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return slowDeleteKV{kv, s.delay}, nil
}

type slowDeleteKV struct {
	jetstream.KeyValue
	delay time.Duration
}

func (kv slowDeleteKV) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(kv.delay):
		return nil
	}
}

func (kv slowDeleteKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if err := kv.wait(ctx); err != nil {
		return nil, err
	}
	return kv.KeyValue.Get(ctx, key)
}

func (kv slowDeleteKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := kv.wait(ctx); err != nil {
		return 0, err
	}
	return kv.KeyValue.Put(ctx, key, value)
}

func (kv slowDeleteKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(kv.delay):
	}
	return kv.KeyValue.Delete(ctx, key, opts...)
}

// --timeout bounds each NATS operation. app delete gave one deadline to
// all its writes (routes, spec, routes again): three answers that each
// took 40% of it, far within it one by one, ran it out at the third, and
// the delete failed with its routes gone, and, with a slower first
// answer, its spec still stored, the app running on without routes.
func TestAppDeleteGivesEachWriteTheTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	e := h.env(io.Discard)
	e.timeout = time.Second
	e.js = slowDeletes{e.js, 400 * time.Millisecond}
	var out strings.Builder
	e.stdio.Stdout = &out
	if err := appDelete(context.Background(), nil, e, "hello"); err != nil {
		t.Fatalf("app delete: %v", err)
	}
	if !strings.Contains(out.String(), "hello deleted") {
		t.Errorf("app delete said %q", out.String())
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("routes still stored")
	}
	if _, ok := h.get(names.AppsBucket, "hello"); ok {
		t.Error("spec still stored")
	}
}

// The routes a deploy writes once its spec is stored: the read of the
// entry and its write shared one deadline, and a write left undone by it
// left the gateways on the routes of the spec before.
func TestPutRoutesGivesEachOperationTheTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, err := spec.Parse("hello.toml", []byte(helloSpec))
	if err != nil {
		t.Fatal(err)
	}
	h.kv(names.RoutesBucket) // created: a bucket that is created is not slowed
	e := h.env(io.Discard)
	e.timeout = time.Second
	e.js = slowDeletes{e.js, 600 * time.Millisecond}
	if err := e.putRoutes(context.Background(), app, nil); err != nil {
		t.Fatalf("put routes: %v", err)
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
		t.Error("routes not stored")
	}
}

// lateStreams is JetStream whose lookups of a stream are answered only as
// their deadline ends, as over a link slow enough to take the whole
// --timeout: what follows one must have a deadline of its own.
type lateStreams struct{ jetstream.JetStream }

func (s lateStreams) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	<-ctx.Done()
	return s.JetStream.Stream(context.WithoutCancel(ctx), name)
}

// The listings of orphan chunks and of objects, and the reads and writes
// of a prune, opened the stream and used it under one deadline: a stream
// slow to open left nothing for the listing (of many subjects, the slow
// part) or the purge after it.
func TestListingsAndPruneGiveEachOperationTheTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.build("1.0.0", 1)
	h.upload(b)
	bucket := names.BinariesBucket
	orphan, _ := h.orphan(bucket, 1, 10)
	e := h.env(io.Discard)
	e.timeout = time.Second
	e.js = lateStreams{e.js}
	ctx := context.Background()
	if orphans, _, err := e.orphanChunks(ctx, bucket, true); err != nil || len(orphans) != 1 || orphans[orphan] != 1 {
		t.Errorf("orphan chunks: %v, %v; want %s", orphans, err, orphan)
	}
	if objs, _, err := e.objectNames(ctx, bucket); err != nil || !slices.Equal(objs, []string{b.object}) {
		t.Errorf("objects: %q, %v; want %s", objs, err, b.object)
	}
	if err := e.pruneObject(ctx, bucket, b.object, time.Now().Add(24*time.Hour)); err != nil {
		t.Errorf("prune %s: %v", b.object, err)
	}
	if n := h.subjects(store.ObjectMetaSubject(bucket, "") + ">"); n != 0 {
		t.Errorf("%d objects left after the prune, want none (not even its deletion marker)", n)
	}
}

// The purge of a secret's earlier sealed values after secret set or
// rotate looked its stream up and purged under one deadline: a lookup slow
// enough to take it left the purge none, and the replaced value stayed in
// the history.
func TestDropEarlierSealedGivesEachOperationTheTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := filepath.Join(h.dir, "secret.key")
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v1\n", "--key-file", key, "secret", "set", "db")
	h.ok("v2\n", "--key-file", key, "secret", "set", "db")
	kv := h.kv(names.SecretsBucket)
	if _, err := kv.Put(context.Background(), "db", []byte("planted")); err != nil {
		t.Fatal(err)
	}
	e := h.env(io.Discard)
	e.timeout = time.Second
	e.js = lateStreams{e.js}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.dropEarlierSealed(ctx, "db", "set it again"); err != nil {
		t.Fatalf("purge of earlier sealed values: %v", err)
	}
	history, err := kv.History(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 1 {
		t.Errorf("%d values of db left in the history, want the latest alone", len(history))
	}
}
