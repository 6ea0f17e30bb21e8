package ctl

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// openKV opens bucket as it is, for a dry run: it creates no bucket and
// raises no replicas, and stands an empty bucket in for one that does not
// exist, as the deploy would find the one it creates.
func (e *env) openKV(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := e.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return emptyKV{bucket: bucket}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// openObjects is openKV for an object store.
func (e *env) openObjects(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	obs, err := e.js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return emptyObjects{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", bucket, err)
	}
	return obs, nil
}

// emptyKV is a bucket that does not exist, read as empty. It has only the
// methods a deploy's checks read with: any other, a write above all, is
// nil and panics, which a dry run must never reach.
type emptyKV struct {
	jetstream.KeyValue
	bucket string
}

func (kv emptyKV) Bucket() string { return kv.bucket }

func (emptyKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

func (emptyKV) History(context.Context, string, ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

func (emptyKV) ListKeys(context.Context, ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	return noKeys{}, nil
}

func (emptyKV) Status(context.Context) (jetstream.KeyValueStatus, error) {
	return nil, jetstream.ErrBucketNotFound
}

type noKeys struct{}

func (noKeys) Keys() <-chan string {
	c := make(chan string)
	close(c)
	return c
}

func (noKeys) Stop() error { return nil }

// emptyObjects is emptyKV for an object store.
type emptyObjects struct{ jetstream.ObjectStore }

func (emptyObjects) GetInfo(context.Context, string, ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return nil, jetstream.ErrObjectNotFound
}

func (emptyObjects) List(context.Context, ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error) {
	return nil, jetstream.ErrNoObjectsFound
}
