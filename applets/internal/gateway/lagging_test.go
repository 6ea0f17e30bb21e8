package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A watch's first values may come from a replica of narun-routes that has
// not caught up since it restarted: serving the earlier routes it holds
// would bring back routes replaced or removed meanwhile. On one server the
// leader is that server, and an entry read before the last write stands in
// for what the lagging replica gives.
func TestEarlierRoutesFromAReplicaAreNotServed(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(), "")
	base := "http://" + r.addrs["http"]
	kv := routesKV(t, nc)
	ctx := context.Background()
	// No service answers: a route gives 503, a missing one 404.
	served := func(path string) bool {
		code, _ := get(t, base+path)
		return code != 404
	}
	put := func(app, value string) {
		t.Helper()
		if _, err := kv.PutString(ctx, app, value); err != nil {
			t.Fatal(err)
		}
	}
	put("web", `[{"path":"/old/"}]`)
	testutil.Eventually(t, 15*time.Second, "/old/ served", func() bool { return served("/old/x") })
	earlier, err := kv.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	put("web", `[{"path":"/new/"}]`)
	testutil.Eventually(t, 15*time.Second, "/new/ served", func() bool { return served("/new/x") && !served("/old/x") })
	latest, err := kv.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}

	leader := store.NewLeaderCheck(nc, names.RoutesBucket, r.gw.log)
	r.gw.setAppEntry(r.gw.latest(ctx, leader, earlier))
	if served("/old/x") || !served("/new/x") {
		t.Fatal("after an earlier revision came in, the gateway serves the replaced routes")
	}
	if !leader.Older(earlier) || leader.Older(latest) {
		t.Errorf("Older(revision %d) = %v, Older(revision %d) = %v after the leader gave %d; want true, false",
			earlier.Revision(), leader.Older(earlier), latest.Revision(), leader.Older(latest), latest.Revision())
	}

	// Removed since: the leader has the delete marker.
	put("gone", `[{"path":"/gone/"}]`)
	testutil.Eventually(t, 15*time.Second, "/gone/ served", func() bool { return served("/gone/x") })
	before, err := kv.Get(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/gone/ removed", func() bool { return !served("/gone/x") })
	r.gw.setAppEntry(r.gw.latest(ctx, store.NewLeaderCheck(nc, names.RoutesBucket, r.gw.log), before))
	if served("/gone/x") {
		t.Error("routes removed on the leader came back from an earlier entry")
	}
}

// heldKV is narun-routes whose watch is the test's.
type heldKV struct {
	jetstream.KeyValue
	w heldWatch
}

func (k heldKV) WatchAll(context.Context, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return k.w, nil
}

// heldWatch is a watch whose entries the test hands over one by one.
type heldWatch struct{ ch chan jetstream.KeyValueEntry }

func (w heldWatch) Updates() <-chan jetstream.KeyValueEntry { return w.ch }
func (w heldWatch) Stop() error                             { return nil }

// A member that joins on an empty store (a dead device replaced under its
// name) copies narun-routes from its peers after its gateway's watch
// started on it: the watch lists no entry, then hands over every revision
// the copy takes in, oldest first, as if each were written now. Serving
// them would bring back, for a moment, routes replaced long ago.
func TestCatchUpOfAnEmptyReplicaIsNotServed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// failedRead comes first: an entry whose read from the leader
		// fails, as in an election or a slow answer.
		failedRead bool
	}{
		{"first entry", false},
		{"after a failed read from the leader", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			catchUpOfAnEmptyReplica(t, tc.failedRead)
		})
	}
}

func catchUpOfAnEmptyReplica(t *testing.T, failedRead bool) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(), "")
	base := "http://" + r.addrs["http"]
	kv := routesKV(t, nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := func(path string) bool {
		code, _ := get(t, base+path)
		return code != 404
	}
	if _, err := kv.PutString(ctx, "web", `[{"path":"/old/"}]`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/old/ served", func() bool { return served("/old/x") })
	earlier, err := kv.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "web", `[{"path":"/new/"}]`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/new/ served", func() bool { return served("/new/x") && !served("/old/x") })

	w := heldWatch{ch: make(chan jetstream.KeyValueEntry)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.gw.followBucket(ctx, heldKV{kv, w}, nil, r.gw.reconnects())
	}()
	w.ch <- nil // the empty copy's initial values: none
	if failedRead {
		w.ch <- testutil.UnreadEntry{KeyValueEntry: earlier}
		// Served once the batch of the failed read is applied: the
		// entries after it come in a batch of their own, whichever
		// readReady would otherwise have taken with it.
		w.ch <- markerEntry{earlier}
		testutil.Eventually(t, 15*time.Second, "/marker/ served", func() bool { return served("/marker/x") })
	}
	w.ch <- earlier
	w.ch <- earlier // taken once followBucket has applied the first
	// Within a deadline: under -race on a slow machine a probe right
	// after the hand-over found neither route served. Routes applied
	// unchecked stay until another entry comes, which none does, so the
	// wait keeps the check.
	what := fmt.Sprintf("after the catch-up of an empty replica handed over revision %d, the leader's routes, /new/ only", earlier.Revision())
	testutil.Eventually(t, 15*time.Second, what, func() bool { return !served("/old/x") && served("/new/x") })
	cancel()
	<-done
}

// markerEntry is an app's routes entry that the leader holds nothing of,
// applied as read: its route shows that the batch it came in is applied.
type markerEntry struct{ jetstream.KeyValueEntry }

func (markerEntry) Key() string                     { return "marker" }
func (markerEntry) Value() []byte                   { return []byte(`[{"path":"/marker/"}]`) }
func (markerEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
