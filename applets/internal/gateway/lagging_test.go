package gateway

import (
	"context"
	"testing"
	"time"

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
