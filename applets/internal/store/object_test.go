package store

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/testutil"
)

// An opening JetStream leaves unanswered is sent again; one it answers
// with an error that lasts (no such object) is not.
func TestOpenObject(t *testing.T) {
	t.Parallel()
	silent := testutil.HoldingUnanswered(t, "app", "the build")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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

	counted := &countedGets{ObjectStore: silent.ObjectStore}
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
