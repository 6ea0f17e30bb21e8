package store

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// An opening JetStream leaves unanswered is sent again; one it answers
// with an error that lasts (no such object) is not.
func TestOpenObject(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "objects"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutString(ctx, "app", "the build"); err != nil {
		t.Fatal(err)
	}

	silent := &testutil.UnansweredGet{ObjectStore: obs}
	obj, err := OpenObject(ctx, silent, "app", time.Minute)
	if err != nil {
		t.Fatalf("open after an unanswered opening: %v", err)
	}
	if b, err := io.ReadAll(obj); string(b) != "the build" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
	if silent.Gets() != 2 {
		t.Fatalf("opened %d times, want 2", silent.Gets())
	}
	if err := obj.Close(); err != nil {
		t.Fatal(err)
	}

	counted := &countedGets{ObjectStore: obs}
	if _, err := OpenObject(ctx, counted, "none", time.Minute); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("open of a missing object: %v, want object not found", err)
	}
	if counted.gets != 1 {
		t.Fatalf("a missing object opened %d times, want once", counted.gets)
	}
}

type countedGets struct {
	jetstream.ObjectStore
	gets int
}

func (o *countedGets) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	o.gets++
	return o.ObjectStore.Get(ctx, name, opts...)
}
