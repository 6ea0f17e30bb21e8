package ctl

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/embednats/natstest"
)

func TestUntilAnswered(t *testing.T) {
	t.Parallel()
	calls := 0
	v, err := untilAnswered(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, nats.ErrNoResponders
		}
		return 42, nil
	})
	if v != 42 || err != nil || calls != 3 {
		t.Errorf("got %d, %v after %d calls; want 42 after 3", v, err, calls)
	}

	other := errors.New("key not found")
	calls = 0
	if _, err := untilAnswered(context.Background(), func(context.Context) (int, error) { calls++; return 0, other }); err != other || calls != 1 {
		t.Errorf("a lasting error must come back at once: %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := untilAnswered(ctx, func(context.Context) (int, error) { return 0, nats.ErrNoResponders }); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("at the deadline: %v, want no responders", err)
	}
}

// lostAnswers carries out each write but, the first time, reports that no
// answer came, as when a reply is lost or arrives after the deadline; then
// runs meanwhile, if set.
type lostAnswers struct {
	jetstream.KeyValue
	lost      bool
	meanwhile func()
}

func (kv *lostAnswers) lose(err error) error {
	if err == nil && !kv.lost {
		kv.lost = true
		if kv.meanwhile != nil {
			kv.meanwhile()
		}
		return context.DeadlineExceeded
	}
	return err
}

func (kv *lostAnswers) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := kv.KeyValue.Create(ctx, key, value, opts...)
	return rev, kv.lose(err)
}

func (kv *lostAnswers) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := kv.KeyValue.Update(ctx, key, value, last)
	return rev, kv.lose(err)
}

// A conditional write sent again after its answer was lost finds its own
// work done, and succeeds instead of reporting a conflict.
func TestSentAgainAfterALostAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := store.KV(ctx, js, names.AppsBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := patientKV{KeyValue: &lostAnswers{KeyValue: raw}, nc: nc}
	rev, err := kv.Create(ctx, "web", []byte("v1"))
	if err != nil || rev == 0 {
		t.Fatalf("create: revision %d, %v", rev, err)
	}
	kv = patientKV{KeyValue: &lostAnswers{KeyValue: raw}, nc: nc}
	if rev, err = kv.Update(ctx, "web", []byte("v2"), rev); err != nil {
		t.Fatalf("update: %v", err)
	}
	if e, err := raw.Get(ctx, "web"); err != nil || string(e.Value()) != "v2" || e.Revision() != rev {
		t.Fatalf("stored: %v, %v; want v2 at revision %d", e, err, rev)
	}
	// Another client's value found there is a conflict.
	kv = patientKV{KeyValue: &lostAnswers{KeyValue: raw, meanwhile: func() {
		if _, err := raw.Put(ctx, "web", []byte("theirs")); err != nil {
			t.Error(err)
		}
	}}, nc: nc}
	if _, err := kv.Update(ctx, "web", []byte("v3"), rev); !lostRace(err) {
		t.Fatalf("update overwritten meanwhile: %v, want a conflict", err)
	}
}

// leaderless answers the first listing of keys as a member of a group with
// no leader does through nats.go's older API, which key listings use.
type leaderless struct {
	jetstream.KeyValue
	answered bool
}

func (kv *leaderless) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	if !kv.answered {
		kv.answered = true
		return nil, &nats.APIError{Code: 503, ErrorCode: nats.JSErrCodeJetStreamNotAvailable, Description: "JetStream system temporarily unavailable"}
	}
	return kv.KeyValue.ListKeys(ctx, opts...)
}

// A listing that JetStream answers with "temporarily unavailable" (a
// stream electing its leader) is sent again, as every other request is.
func TestListingSentAgainWhileLeaderless(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	raw := bucketWith(t, names.NodesBucket, "edge-1", "{}")
	l, err := patientKV{KeyValue: &leaderless{KeyValue: raw}}.ListKeys(ctx)
	if err != nil {
		t.Fatalf("listing through a leader election: %v", err)
	}
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	if len(keys) != 1 || keys[0] != "edge-1" {
		t.Fatalf("listed %v, want [edge-1]", keys)
	}
}

// stalledHistory loses its first reading of a key's history, as a watch
// does whose consumer JetStream placed on a member that just died: nothing
// comes until the reader gives up.
type stalledHistory struct {
	jetstream.KeyValue
	stalled bool
}

func (kv *stalledHistory) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	if !kv.stalled {
		kv.stalled = true
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return kv.KeyValue.History(ctx, key, opts...)
}

// A reading of a key's history that goes unanswered is started again
// within the operation's time, as a listing is, rather than waiting all of
// it out: a deploy right after a member was lost failed so.
func TestHistoryReadAgainWhenUnanswered(t *testing.T) {
	t.Parallel()
	raw := bucketWith(t, names.AppsBucket, "web", "v1")
	octx, cancel := context.WithTimeout(context.Background(), 4*attemptTimeout)
	defer cancel()
	hist, err := patientKV{KeyValue: &stalledHistory{KeyValue: raw}}.History(octx, "web")
	if err != nil {
		t.Fatalf("history after a lost reading: %v", err)
	}
	if len(hist) != 1 || string(hist[0].Value()) != "v1" {
		t.Fatalf("history has %d entries, want the one of v1", len(hist))
	}
}

// stalledWatch loses its first watch, as one does whose consumer JetStream
// placed on a member that just died: nothing comes until the reader gives
// up.
type stalledWatch struct {
	jetstream.KeyValue
	stalled bool
}

func (kv *stalledWatch) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if !kv.stalled {
		kv.stalled = true
		return kv.KeyValue.WatchFiltered(ctx, []string{"never-written"}, jetstream.UpdatesOnly())
	}
	return kv.KeyValue.WatchFiltered(ctx, keys, opts...)
}

// The deletions app list and app status read through one watch are read
// again when it goes unanswered, as a key's history is, rather than
// waiting out the whole --timeout: right after a member was lost they
// failed so.
func TestDeletionsReadAgainWhenUnanswered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	kv := h.kv(names.AppsBucket)
	if _, err := kv.Put(ctx, "web", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	e := h.env(io.Discard)
	e.timeout = 4 * attemptTimeout
	dels, err := e.deletions(ctx, &stalledWatch{KeyValue: kv}, []string{"web"})
	if err != nil {
		t.Fatalf("deletions after a lost watch: %v", err)
	}
	if dels["web"].revision != 2 {
		t.Fatalf("deletions %v, want web's at revision 2", dels)
	}
}

// bucketWith is KV bucket, on a server of its own, holding key = value.
func bucketWith(t *testing.T, bucket, key, value string) jetstream.KeyValue {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := store.KV(ctx, js, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
		t.Fatal(err)
	}
	return kv
}
