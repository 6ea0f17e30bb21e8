package ctl

import (
	"bytes"
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/store"
)

// attemptTimeout is how long one JetStream request may go unanswered
// before it is sent again. While a JetStream group elects a leader (seconds
// after its leader is lost), its followers drop requests without a word,
// and one request waiting out the whole --timeout would never see the new
// leader; the same request sent again does.
const attemptTimeout = 2 * time.Second

// patientJS hands out buckets, object stores and streams whose operations,
// like its own, are sent again, until the operation's deadline, while
// JetStream does not answer them: right after a server starts or a leader
// is lost, and right after a bucket is created, while its replicas cannot
// serve yet. Every JetStream request of ctl goes through it.
type patientJS struct{ jetstream.JetStream }

func (js patientJS) AccountInfo(ctx context.Context) (*jetstream.AccountInfo, error) {
	return untilAnswered(ctx, js.JetStream.AccountInfo)
}

func (js patientJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.JetStream.Stream(ctx, name) })
	return wrapStream(s, err)
}

func (js patientJS) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.JetStream.CreateStream(ctx, cfg) })
	return wrapStream(s, err)
}

func (js patientJS) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.JetStream.UpdateStream(ctx, cfg) })
	return wrapStream(s, err)
}

func (js patientJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.JetStream.KeyValue(ctx, bucket) })
	return wrapKV(js.Conn(), kv, err)
}

func (js patientJS) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.JetStream.CreateKeyValue(ctx, cfg) })
	return wrapKV(js.Conn(), kv, err)
}

func (js patientJS) ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	obs, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.JetStream.ObjectStore(ctx, bucket) })
	return wrapObjects(js.Conn(), bucket, obs, err)
}

func (js patientJS) CreateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.ObjectStore, error) {
		return js.JetStream.CreateObjectStore(ctx, cfg)
	})
	return wrapObjects(js.Conn(), cfg.Bucket, obs, err)
}

func wrapKV(nc *nats.Conn, kv jetstream.KeyValue, err error) (jetstream.KeyValue, error) {
	if err != nil {
		return nil, err
	}
	return patientKV{KeyValue: kv, nc: nc}, nil
}

func wrapObjects(nc *nats.Conn, bucket string, obs jetstream.ObjectStore, err error) (jetstream.ObjectStore, error) {
	if err != nil {
		return nil, err
	}
	return patientObjects{ObjectStore: obs, nc: nc, bucket: bucket}, nil
}

func wrapStream(s jetstream.Stream, err error) (jetstream.Stream, error) {
	if err != nil {
		return nil, err
	}
	return patientStream{s}, nil
}

type patientStream struct{ jetstream.Stream }

func (s patientStream) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := untilAnswered(ctx, func(ctx context.Context) (jetstream.Consumer, error) { return s.Stream.OrderedConsumer(ctx, cfg) })
	if err != nil {
		return nil, err
	}
	return patientConsumer{c}, nil
}

type patientConsumer struct{ jetstream.Consumer }

func (c patientConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	return untilAnswered(ctx, c.Consumer.Info)
}

// patientKV is also a bucket whose Get the leader answers: nats.go's is a
// direct get any replica answers, and one behind its leader, in a
// cluster, answers without what was just written. A secret set, or a
// spec deployed, by the command before was then missing.
type patientKV struct {
	jetstream.KeyValue
	nc *nats.Conn
}

func (kv patientKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return untilAnswered(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		return store.GetFromLeader(ctx, kv.nc, kv.Bucket(), key)
	})
}

func (kv patientKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return untilAnswered(ctx, func(ctx context.Context) (uint64, error) { return kv.KeyValue.Put(ctx, key, value) })
}

func (kv patientKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	_, err := untilAnswered(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, kv.KeyValue.Delete(ctx, key, opts...) })
	return err
}

func (kv patientKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	_, err := untilAnswered(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, kv.KeyValue.Purge(ctx, key, opts...) })
	return err
}

// Create and Update are conditional: sent again after an attempt that got
// no answer but did write, they would fail as if another client had won.
// Finding the value they write there, newer than the revision they expect,
// means that attempt did.
func (kv patientKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return kv.conditional(ctx, key, value, 0, func(ctx context.Context) (uint64, error) { return kv.KeyValue.Create(ctx, key, value, opts...) })
}

func (kv patientKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	return kv.conditional(ctx, key, value, last, func(ctx context.Context) (uint64, error) { return kv.KeyValue.Update(ctx, key, value, last) })
}

func (kv patientKV) conditional(ctx context.Context, key string, value []byte, last uint64, write func(context.Context) (uint64, error)) (uint64, error) {
	mayHaveWritten := false
	return untilAnswered(ctx, func(ctx context.Context) (uint64, error) {
		rev, err := write(ctx)
		if mayHaveWritten && lostRace(err) {
			if e, gerr := store.GetFromLeader(ctx, kv.nc, kv.Bucket(), key); gerr == nil && e.Revision() > last && bytes.Equal(e.Value(), value) {
				return e.Revision(), nil
			}
		}
		mayHaveWritten = mayHaveWritten || store.Unsure(err)
		return rev, err
	})
}

// ListKeys lists every key before it returns: a listing cut short by an
// attempt's deadline is started again, not handed out incomplete.
func (kv patientKV) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	keys, err := untilListed(ctx, func(ctx context.Context) ([]string, error) {
		l, err := kv.KeyValue.ListKeys(ctx, opts...)
		if err != nil {
			return nil, err
		}
		var keys []string
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		// The lister ends its channel as quietly when ctx ends as when
		// every key is listed.
		return keys, ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	ch := make(chan string, len(keys))
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	return listed(ch), nil
}

// History reads a key's history through a watch, whose consumer JetStream
// may place on a member that died a moment ago and still counts as up:
// such a watch gives nothing, and a reading that waited out the whole
// --timeout failed deploys and rollbacks right after a member was lost.
// Read again, the consumer lands on a live member.
func (kv patientKV) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	return untilListed(ctx, func(ctx context.Context) ([]jetstream.KeyValueEntry, error) {
		return kv.KeyValue.History(ctx, key, opts...)
	})
}

// listed is a KeyLister over keys already listed.
type listed chan string

func (l listed) Keys() <-chan string { return l }
func (l listed) Stop() error         { return nil }

// patientObjects is also an object store whose GetInfo the leader answers
// (store.ObjectInfoFromLeader), as patientKV's Get: a files put or an
// upload by the command before was missing otherwise.
type patientObjects struct {
	jetstream.ObjectStore
	nc     *nats.Conn
	bucket string
}

// GetInfo with options (deleted objects shown) is nats.go's: its options
// are opaque.
func (o patientObjects) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return untilAnswered(ctx, func(ctx context.Context) (*jetstream.ObjectInfo, error) {
		if len(opts) > 0 {
			return o.ObjectStore.GetInfo(ctx, name, opts...)
		}
		return store.ObjectInfoFromLeader(ctx, o.nc, o.bucket, name, false)
	})
}

// Delete needs no more care than Put: deleting a deleted object succeeds.
func (o patientObjects) Delete(ctx context.Context, name string) error {
	_, err := untilAnswered(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, o.ObjectStore.Delete(ctx, name) })
	return err
}

// untilAnswered calls f, with attemptTimeout for each attempt, until it
// returns anything but an error that sending the request again may cure,
// or ctx ends.
func untilAnswered[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	return retry(ctx, false, f)
}

// untilListed is untilAnswered for listings, which take longer the more
// there is to list: each attempt gets twice the time of the one before.
func untilListed[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	return retry(ctx, true, f)
}

func retry[T any](ctx context.Context, grow bool, f func(context.Context) (T, error)) (T, error) {
	attempt, backoff := attemptTimeout, 20*time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		v, err := f(actx)
		cancel()
		if err == nil || !store.Unanswered(err) || ctx.Err() != nil {
			return v, store.Tidy(err)
		}
		select {
		case <-ctx.Done():
			return v, store.Tidy(err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
		if grow {
			attempt *= 2
		}
	}
}
