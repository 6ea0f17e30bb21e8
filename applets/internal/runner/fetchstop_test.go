package runner

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/embednats/natstest"
)

// hookedStore is a real object store whose reads of an object tell when
// they have begun and wait after their first bytes until hold is closed: a
// download caught in the middle, whatever its speed.
type hookedStore struct {
	jetstream.ObjectStore
	begun chan struct{}
	once  sync.Once
	hold  chan struct{}
}

func (s *hookedStore) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	r, err := s.ObjectStore.Get(ctx, name, opts...)
	if err != nil {
		return nil, err
	}
	return &hookedResult{ObjectResult: r, s: s}, nil
}

type hookedResult struct {
	jetstream.ObjectResult
	s    *hookedStore
	read bool
}

func (r *hookedResult) Read(p []byte) (int, error) {
	if r.read {
		<-r.s.hold
	}
	n, err := r.ObjectResult.Read(p)
	if n > 0 && !r.read {
		r.read = true
		r.s.once.Do(func() { close(r.s.begun) })
	}
	return n, err
}

// bigObject stores size random bytes as name in a new object store of a
// real embedded NATS server and returns the store and their digest.
func bigObject(t *testing.T, name string, size int) (jetstream.ObjectStore, string) {
	t.Helper()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "big"})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	if _, err := obs.PutBytes(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return obs, hex.EncodeToString(sum[:])
}

// cacheEntries lists what the cache directory holds, temporary files
// included.
func cacheEntries(t *testing.T, c *cache) []string {
	t.Helper()
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A stop in the middle of a download (the instance's Prepare fetching a
// large binary) ends it with the stop's error, leaving nothing in the
// cache: not the partial file, nor a binary under its digest.
func TestFetchStoppedMidRead(t *testing.T) {
	t.Parallel()
	obs, digest := bigObject(t, "app/1/linux", 8<<20)
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hooked := &hookedStore{ObjectStore: obs, begun: make(chan struct{}), hold: make(chan struct{})}
	defer close(hooked.hold)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.binary(ctx, hooked, spec.Binary{Object: "app/1/linux", SHA256: digest})
		done <- err
	}()
	<-hooked.begun
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch stopped mid-read returned %v, want context.Canceled", err)
	}
	if names := cacheEntries(t, c); len(names) != 0 {
		t.Fatalf("a stopped fetch left %v in the cache", names)
	}
}

// A fetch that waits for another of the same digest (two apps deployed
// from one binary) ends at its own stop, not once the other's download is
// over, which may take minutes.
func TestFetchWaitingForAnotherEndsAtStop(t *testing.T) {
	t.Parallel()
	obs, digest := bigObject(t, "app/1/linux", 1<<20)
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hooked := &hookedStore{ObjectStore: obs, begun: make(chan struct{}), hold: make(chan struct{})}
	b := spec.Binary{Object: "app/1/linux", SHA256: digest}
	first := make(chan error, 1)
	go func() {
		_, err := c.binary(context.Background(), hooked, b)
		first <- err
	}()
	<-hooked.begun
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		_, err := c.binary(ctx, hooked, b)
		second <- err
	}()
	waiting := func() bool {
		c.flights.mu.Lock()
		defer c.flights.mu.Unlock()
		return c.flights.m[digest] != nil && c.flights.m[digest].n == 2
	}
	for deadline := time.Now().Add(10 * time.Second); !waiting(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second fetch never waited for the first")
		}
	}
	cancel()
	select {
	case err := <-second:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped fetch returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		close(hooked.hold)
		t.Fatal("a fetch stopped while it waited for another of the same digest went on waiting for that download")
	}
	close(hooked.hold)
	if err := <-first; err != nil {
		t.Fatalf("the first fetch, not stopped: %v", err)
	}
}
