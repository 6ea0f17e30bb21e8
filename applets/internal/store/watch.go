package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchHeartbeat is how often JetStream tells a watch it is alive while no
// key changes. A watch's consumer lives on one cluster member, and nats.go
// makes it again elsewhere once two heartbeats are missed: with the 5 s
// heartbeats of nats.go's own watches, a runner or gateway whose watch the
// lost member held applied deploys and route changes stored right after
// the loss 10 to 15 s after it (the stores' own elections take 4 to 9 s).
// One a second costs each watch a message a second.
const WatchHeartbeat = time.Second

// watchCreateWait is how long a watch waits for its consumer to be made
// before it asks again, at its next check of the heartbeats. Right after a
// member is lost, the requests sent before the cluster has a new leader go
// unanswered: with nats.go's 5 s, the first made after the election could
// come 5 s late.
const watchCreateWait = 2 * time.Second

// Watch watches every key of bucket, as nats.go's WatchAll does (the
// latest entry of each key, then nil once those are in, then each change),
// with heartbeats every WatchHeartbeat, until it is stopped or ctx ends.
func Watch(ctx context.Context, nc *nats.Conn, bucket string) (jetstream.KeyWatcher, error) {
	js, err := nc.JetStream(nats.MaxWait(watchCreateWait))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	}
	w := &watcher{bucket: bucket, prefix: "$KV." + bucket + ".", updates: make(chan jetstream.KeyValueEntry, 256)}
	// Entries wait for the count of initial ones, which the subscription
	// knows once made.
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, err := js.Subscribe(w.prefix+">", w.deliver,
		nats.BindStream("KV_"+bucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject(),
		nats.IdleHeartbeat(WatchHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	}
	sub.SetClosedHandler(func(string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		close(w.updates)
	})
	w.sub = sub
	w.stopOnEnd = context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	initial, err := sub.InitialConsumerPending()
	switch {
	case err != nil:
		_ = w.Stop()
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	case initial == 0:
		w.listed = true
		w.updates <- nil
	default:
		w.initial = initial
	}
	return w, nil
}

// Keys lists the keys of bucket that hold a value, through a Watch.
// nats.go's ListKeys makes its consumer under ctx, and a request of that
// left unanswered (a cluster that has just lost a member elects new
// leaders) held the listing for all of ctx; and one whose member is lost
// during the listing waited two of its 5 s heartbeats.
func Keys(ctx context.Context, nc *nats.Conn, bucket string) ([]string, error) {
	w, err := Watch(ctx, nc, bucket)
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var keys []string
	for {
		select {
		case e, open := <-w.Updates():
			switch {
			case !open:
				return nil, fmt.Errorf("list %s: the watch ended before the listing did", bucket)
			case e == nil:
				return keys, nil
			case e.Operation() == jetstream.KeyValuePut:
				keys = append(keys, e.Key())
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: %w", bucket, ctx.Err())
		}
	}
}

// Heartbeating is kv whose WatchAll, asked for no options, is Watch's.
func Heartbeating(kv jetstream.KeyValue, nc *nats.Conn) jetstream.KeyValue {
	return heartbeating{KeyValue: kv, nc: nc}
}

type heartbeating struct {
	jetstream.KeyValue
	nc *nats.Conn
}

func (kv heartbeating) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if len(opts) > 0 {
		return kv.KeyValue.WatchAll(ctx, opts...)
	}
	return Watch(ctx, kv.nc, kv.Bucket())
}

type watcher struct {
	bucket, prefix string
	sub            *nats.Subscription
	stopOnEnd      func() bool

	mu       sync.Mutex
	updates  chan jetstream.KeyValueEntry
	initial  uint64
	received uint64
	listed   bool
}

func (w *watcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

func (w *watcher) Stop() error {
	w.stopOnEnd()
	return w.sub.Unsubscribe()
}

// deliver hands on one entry; it blocks while updates is full, as
// nats.go's watch does, so that no entry is dropped.
func (w *watcher) deliver(m *nats.Msg) {
	meta, err := m.Metadata()
	if err != nil || len(m.Subject) <= len(w.prefix) {
		return
	}
	e := &entry{
		bucket:   w.bucket,
		key:      strings.TrimPrefix(m.Subject, w.prefix),
		value:    m.Data,
		revision: meta.Sequence.Stream,
		created:  meta.Timestamp,
		delta:    meta.NumPending,
		op:       entryOp(m.Header),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.updates <- e
	if !w.listed {
		w.received++
		if w.received >= w.initial || meta.NumPending == 0 {
			w.listed = true
			w.updates <- nil
		}
	}
}

// entryOp is what a KV message records: nats.go marks a delete or purge
// with KV-Operation, JetStream a key removed by its TTL or a purge with
// Nats-Marker-Reason.
func entryOp(h nats.Header) jetstream.KeyValueOp {
	switch h.Get(kvOperation) {
	case "DEL":
		return jetstream.KeyValueDelete
	case "PURGE":
		return jetstream.KeyValuePurge
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge":
		return jetstream.KeyValuePurge
	case "Remove":
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

type entry struct {
	bucket, key     string
	value           []byte
	revision, delta uint64
	created         time.Time
	op              jetstream.KeyValueOp
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.revision }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return e.delta }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }
