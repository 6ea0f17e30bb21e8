package ctl

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// patientKV and patientObjects retry reads that found no responder until
// the operation's deadline: right after a bucket is created, or a server
// joins or restarts, the stream's replicas may not serve direct gets for a
// moment, and a command should not fail for that.
type patientKV struct{ jetstream.KeyValue }

func (kv patientKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return untilAnswered(ctx, func() (jetstream.KeyValueEntry, error) { return kv.KeyValue.Get(ctx, key) })
}

type patientObjects struct{ jetstream.ObjectStore }

func (o patientObjects) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return untilAnswered(ctx, func() (*jetstream.ObjectInfo, error) { return o.ObjectStore.GetInfo(ctx, name, opts...) })
}

func (o patientObjects) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	return untilAnswered(ctx, func() (jetstream.ObjectResult, error) { return o.ObjectStore.Get(ctx, name, opts...) })
}

// untilAnswered calls f until it returns anything but "no responders" or
// ctx ends.
func untilAnswered[T any](ctx context.Context, f func() (T, error)) (T, error) {
	backoff := 20 * time.Millisecond
	for {
		v, err := f()
		if !errors.Is(err, nats.ErrNoResponders) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}
