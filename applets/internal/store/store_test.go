package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

func TestCreateOrOpen(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	// An operator tuned narun-apps before any narun client started.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.AppsBucket, History: 42}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		kv, err := KV(ctx, js, names.AppsBucket, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.History() != 42 {
			t.Fatalf("history reset to %d", st.History())
		}
	}

	nodes, err := KV(ctx, js, names.NodesBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := nodes.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != NodeTTL {
		t.Errorf("nodes TTL %s, want %s", st.TTL(), NodeTTL)
	}
	for _, b := range []string{names.BinariesBucket, names.FilesBucket} {
		if _, err := Objects(ctx, js, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	s, err := LogsStream(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxBytes <= 0 || info.Config.MaxAge <= 0 || info.Config.MaxAge > 30*24*time.Hour {
		t.Errorf("logs stream unbounded: %+v", info.Config)
	}
	if _, err := KV(ctx, js, "something-else", nil); err == nil {
		t.Error("unknown bucket created")
	}
	if _, err := Objects(ctx, js, "something-else", nil); err == nil {
		t.Error("unknown object store created")
	}
}

// A server whose storage limit is below the log history's default size
// (a small disk, or [nats.jetstream] max_store) still gets a log stream,
// a smaller one, and says so: refused, it kept the runner from opening
// its buckets, so that nothing deployed ever ran.
func TestLogsStreamFitsSmallStore(t *testing.T) {
	ctx := context.Background()
	srv := natstest.StartConfig(t, embednats.Config{JetStreamMaxStore: 100 << 20})
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	s, err := LogsStream(ctx, js, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("log stream on a 100 MiB store: %v", err)
	}
	got := s.CachedInfo().Config.MaxBytes
	if got <= 0 || got > 100<<20 {
		t.Errorf("max bytes %d, want a bound that fits in 100 MiB", got)
	}
	if !strings.Contains(logs.String(), "log history created smaller") {
		t.Errorf("no warning of the smaller history:\n%s", logs)
	}
	// What is left still takes the buckets.
	if _, err := KV(ctx, js, names.AppsBucket, nil); err != nil {
		t.Fatal(err)
	}
}

// Tidy writes "nats: " once, and leaves the error chain as it was, so
// that a lost race is still told from other failures.
func TestTidy(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := KV(ctx, js, names.AppsBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	_, err = kv.Create(ctx, "a", []byte("2"))
	tidy := Tidy(err)
	var api *jetstream.APIError
	if strings.Count(tidy.Error(), "nats: ") != 1 || !errors.Is(tidy, jetstream.ErrKeyExists) || !errors.As(tidy, &api) {
		t.Errorf("Tidy(%q) = %q, chain kept: %v", err, tidy, errors.Is(tidy, jetstream.ErrKeyExists))
	}
	if Tidy(nil) != nil {
		t.Error("Tidy(nil) is not nil")
	}
}

// nats-server has refused, once each, to make the store of a stream in a
// cluster just formed and of one created again right after its deletion,
// and made it when asked again: KV asks again. A file where the stream's
// directory goes fails the first creation (nats-server removes it as it
// cleans up after the failure).
func TestKVAsksAgainWhenTheStoreFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	logs := &testutil.LogBuffer{}
	srv := natstest.StartConfig(t, embednats.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	streams := filepath.Join(dir, "jetstream", "jetstream", "$G", "streams")
	if err := os.MkdirAll(streams, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(streams, "KV_"+names.RoutesBucket), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := KV(ctx, js, names.RoutesBucket, nil); err != nil {
		t.Fatalf("a store refused once was not asked for again: %v", err)
	}
	if !strings.Contains(logs.String(), "Stream create failed for '$G > KV_"+names.RoutesBucket+"'") {
		t.Fatalf("the first creation did not fail, so nothing was tested:\n%s", logs.String())
	}
}

// A store nats-server cannot make however often it is asked (a full disk
// here) is refused with the likely causes, as the server's answer names
// none.
func TestKVSaysWhyTheStoreCannotBeMade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := natstest.SmallDisk(t, "8m")
	// The disk, not the account's limit, must refuse the store.
	srv := natstest.StartConfig(t, embednats.Config{DataDir: filepath.Join(dir, "data"), JetStreamMaxStore: 1 << 30})
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	natstest.FillDisk(t, dir)
	_, err = KV(ctx, js, names.AppsBucket, nil)
	if !storeFailed(err) {
		t.Fatalf("want the store refused, got %v", err)
	}
	for _, want := range []string{"disk is full", "data_dir", "its log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// TestLookupWithoutDeadlineEnds has JetStream take a bucket's lookups and
// answer none, as a cluster without a leader does, for a caller whose ctx
// has no deadline (the gateway's watch of narun-routes): KV ends, as the
// lookup would have after the client's default timeout, so that the
// caller's retry loop runs and warns. The lookup is still sent again.
func TestLookupWithoutDeadlineEnds(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Start(t))
	mute, err := nc.SubscribeSync("mute.API.>")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.NewWithAPIPrefix(nc, "mute.API", jetstream.WithDefaultTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := KV(context.Background(), js, names.RoutesBucket, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("KV gave %v, want a deadline exceeded", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("KV without a deadline still waits for JetStream after a minute")
	}
	if n, _, err := mute.Pending(); err != nil || n < 2 {
		t.Errorf("the lookup was sent %d times (%v), want it sent again", n, err)
	}
}
