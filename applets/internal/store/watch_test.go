package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// Watch gives what nats.go's WatchAll gives: the latest entry of each key
// (deleted ones included), nil, then each change.
func TestWatchGivesWhatWatchAllGives(t *testing.T) {
	t.Parallel()
	_, nc, kv := newBucket(t, jetstream.KeyValueConfig{Bucket: "watched", History: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	empty, err := Watch(ctx, nc, "watched")
	if err != nil {
		t.Fatal(err)
	}
	if e := <-empty.Updates(); e != nil {
		t.Fatalf("first from an empty bucket: %s, want nil", show(e))
	}
	if err := empty.Stop(); err != nil {
		t.Fatal(err)
	}

	for _, write := range []func() error{
		func() error { _, err := kv.PutString(ctx, "web", "v1"); return err },
		func() error { _, err := kv.PutString(ctx, "web", "v2"); return err },
		func() error { _, err := kv.PutString(ctx, "api", "v1"); return err },
		func() error { _, err := kv.PutString(ctx, "old", "v1"); return err },
		func() error { return kv.Delete(ctx, "old") },
		func() error { _, err := kv.PutString(ctx, "gone", "v1"); return err },
		func() error { return kv.Purge(ctx, "gone") },
	} {
		if err := write(); err != nil {
			t.Fatal(err)
		}
	}
	theirs, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Stop()
	ours, err := Watch(ctx, nc, "watched")
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Stop()
	compare := func(what string, n int) {
		t.Helper()
		for i := range n {
			want, got := show(<-theirs.Updates()), show(<-ours.Updates())
			if got != want {
				t.Fatalf("%s, entry %d: %s, want %s", what, i, got, want)
			}
		}
	}
	compare("initial", 5)
	for _, write := range []func() error{
		func() error { _, err := kv.PutString(ctx, "web", "v3"); return err },
		func() error { return kv.Delete(ctx, "api") },
		func() error { return kv.Purge(ctx, "web") },
	} {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		compare("change", 1)
	}

	if err := ours.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-ours.Updates(); open {
		t.Fatal("updates still open after Stop")
	}
}

// A watch tells whether its consumer is alive every WatchHeartbeat, so
// that one lost with a cluster member is made again within two of them.
func TestWatchHeartbeat(t *testing.T) {
	t.Parallel()
	_, nc, kv := newBucket(t, jetstream.KeyValueConfig{Bucket: "watched"})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := Watch(ctx, nc, "watched")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if beats := testutil.WatchHeartbeats(t, js, "watched", 1); beats[0] != WatchHeartbeat {
		t.Fatalf("the watch's heartbeat: %s, want %s", beats[0], WatchHeartbeat)
	}
	// The consumer gone, as with the member that held it, the next
	// change still comes.
	s, err := js.Stream(ctx, "KV_watched")
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.ListConsumers(ctx).Info() {
		if err := s.DeleteConsumer(ctx, name.Name); err != nil {
			t.Fatal(err)
		}
	}
	<-w.Updates()
	if _, err := kv.PutString(ctx, "web", "v1"); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Key() != "web" {
			t.Fatalf("after its consumer was deleted: %s, want web", show(e))
		}
	case <-ctx.Done():
		t.Fatal("no change came after the watch's consumer was deleted")
	}
}

// newBucket creates a bucket of cfg on a server of its own, and returns
// the server's URL, a connection to it and the bucket.
func newBucket(t *testing.T, cfg jetstream.KeyValueConfig) (string, *nats.Conn, jetstream.KeyValue) {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), nc, kv
}

func show(e jetstream.KeyValueEntry) string {
	if e == nil {
		return "nil"
	}
	return fmt.Sprintf("%s %s rev %d %q delta %d", e.Key(), e.Operation(), e.Revision(), e.Value(), e.Delta())
}

// Keys lists the keys that hold a value; one whose consumer is never made
// (its request lost, as a cluster electing leaders loses it) fails within
// seconds, not at the end of its context, while the watch it holds up
// waits: nats.go's ListKeys waited for all of it.
func TestKeys(t *testing.T) {
	t.Parallel()
	url, nc, kv := newBucket(t, jetstream.KeyValueConfig{Bucket: "listed"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if keys, err := Keys(ctx, nc, "listed"); len(keys) != 0 || err != nil {
		t.Fatalf("keys of an empty bucket: %q, %v", keys, err)
	}
	for _, k := range []string{"web", "old", "api"} {
		if _, err := kv.PutString(ctx, k, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if keys, err := Keys(ctx, nc, "listed"); strings.Join(keys, " ") != "web api" || err != nil {
		t.Fatalf("keys: %q, %v; want web api", keys, err)
	}

	losing := testutil.LosingConn(t, url, func(subject string) bool {
		return strings.HasPrefix(subject, "$JS.API.CONSUMER.CREATE.KV_listed.")
	})
	if _, err := Keys(ctx, losing, "listed"); err == nil || ctx.Err() != nil {
		t.Fatalf("listing whose consumer was never made: %v, context %v; want an error before the context's end", err, ctx.Err())
	}
	if keys, err := Keys(ctx, losing, "listed"); len(keys) != 2 || err != nil {
		t.Fatalf("listed again: %q, %v", keys, err)
	}
}

// A watch that cannot start says of which bucket: a runner or gateway
// logs it among others' errors.
func TestWatchErrorNamesTheBucket(t *testing.T) {
	t.Parallel()
	_, nc, _ := newBucket(t, jetstream.KeyValueConfig{Bucket: "present"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Watch(ctx, nc, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("watch of a bucket that does not exist: %v, want an error naming it", err)
	}
	if _, err := Keys(ctx, nc, "missing"); err == nil || strings.Count(err.Error(), "missing") != 1 {
		t.Errorf("listing of a bucket that does not exist: %v, want an error naming it once", err)
	}
}
