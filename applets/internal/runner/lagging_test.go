package runner

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
)

// specOf is the spec the runner last took for app, nil for none.
func (tr *testRunner) specOf(app string) []byte {
	tr.mu.Lock()
	a := tr.apps[app]
	tr.mu.Unlock()
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raw
}

// A watch's first values and a Get may come from a replica of narun-apps
// that has not caught up since it restarted: applying the earlier spec it
// holds would roll the app back, and forward again once it caught up. On
// one server the leader is that server, and an entry read before the last
// write stands in for what the lagging replica gives.
func TestEarlierEntryFromAReplicaIsNotApplied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	earlier, latest, running := deployTwice(t, c, tr)

	leader := store.NewLeaderCheck(tr.opts.Conn, names.AppsBucket, tr.log)
	tr.applyLatest(ctx, earlier, leader)
	if got := tr.specOf("hello"); !bytes.Equal(got, latest.Value()) {
		t.Fatalf("after an earlier revision came in, the runner holds\n%s\nwant the leader's latest\n%s", got, latest.Value())
	}
	// The replica, catching up, then sends what was written while it was
	// behind, up to the leader's revision: none of it is older than that.
	if !leader.Older(earlier) || leader.Older(latest) {
		t.Errorf("older(revision %d) = %v, older(revision %d) = %v after the leader gave %d; want true, false",
			earlier.Revision(), leader.Older(earlier), latest.Revision(), leader.Older(latest), latest.Revision())
	}
	if now := tr.of("hello"); len(now) != 1 || now[0].ID != running[0].ID {
		t.Errorf("instances %+v, want %s running on", now, running[0].ID)
	}

	// Deleted since: the leader has the delete marker.
	c.deploy(t, "gone", "1.0.0", helloBin, "replicas = 0\n")
	testutil.Eventually(t, 30*time.Second, "the runner taking the spec of gone", func() bool { return tr.specOf("gone") != nil })
	before, err := c.apps.Get(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	c.remove(t, "gone")
	testutil.Eventually(t, 30*time.Second, "the runner dropping gone", func() bool { return tr.specOf("gone") == nil })
	tr.applyLatest(ctx, before, store.NewLeaderCheck(tr.opts.Conn, names.AppsBucket, tr.log))
	if got := tr.specOf("gone"); got != nil {
		t.Errorf("an app deleted on the leader came back from an earlier entry:\n%s", got)
	}
}

// A member that joins on an empty store (a dead device replaced under its
// name) copies narun-apps from its peers after its runner's watch started
// on it: the watch lists no app, then hands over every revision the copy
// takes in, oldest first, as if each were written now. Applying them would
// start each earlier version of an app for a moment (a replaced edge-3
// started hello 1.0.0, two deploys old, beside 1.0.2). The leader has the
// latest revision of each.
func TestCatchUpOfAnEmptyReplicaIsNotApplied(t *testing.T) {
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	earlier, latest, _ := deployTwice(t, c, tr)

	w := heldWatch{ch: make(chan jetstream.KeyValueEntry)}
	done := make(chan struct{})
	go func() { defer close(done); tr.follow(ctx, w, nil, nil, nil) }()
	w.ch <- nil // the empty copy's initial values: none
	if failedRead {
		w.ch <- testutil.UnreadEntry{KeyValueEntry: earlier}
	}
	w.ch <- earlier
	w.ch <- earlier // taken once follow has handled the first
	if got := tr.specOf("hello"); !bytes.Equal(got, latest.Value()) {
		t.Errorf("after the catch-up of an empty replica handed over revision %d, the runner holds\n%s\nwant the leader's revision %d\n%s", earlier.Revision(), got, latest.Revision(), latest.Value())
	}
	cancel()
	<-done
}

// deployTwice deploys hello 1.0.0, then 1.1.0, each once healthy, and
// returns the two entries of narun-apps and the instances of the second.
func deployTwice(t *testing.T, c *cluster, tr *testRunner) (earlier, latest jetstream.KeyValueEntry, running []state.Instance) {
	t.Helper()
	onVersion := func(v string) func([]state.Instance) bool {
		return func(l []state.Instance) bool {
			return allIn(1, state.Healthy)(l) && l[0].Version == v
		}
	}
	get := func() jetstream.KeyValueEntry {
		e, err := c.apps.Get(context.Background(), "hello")
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	tr.wait(t, "hello", "healthy on 1.0.0", onVersion("1.0.0"))
	earlier = get()
	c.deploy(t, "hello", "1.1.0", helloBin, "")
	running = tr.wait(t, "hello", "healthy on 1.1.0", onVersion("1.1.0"))
	return earlier, get(), running
}

// A key the leader of narun-apps holds no record of (every message of it
// purged since a lagging replica took its entry) is the leader's answer,
// not a failed read: the runner still asks the leader about the watch's
// other first values, where it applied them unchecked and rolled hello
// back to a spec replaced since. The app of that key keeps its spec, as
// one whose record the store lost does (removeExcept).
func TestKeyTheLeaderHoldsNothingOfIsAnAnswer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	earlier, latest, _ := deployTwice(t, c, tr)
	c.deploy(t, "lost", "1.0.0", helloBin, "replicas = 0\n")
	testutil.Eventually(t, 30*time.Second, "the runner taking the spec of lost", func() bool { return tr.specOf("lost") != nil })
	lost, err := c.apps.Get(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	s, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := s.Stream(ctx, "KV_"+names.AppsBucket)
	if err != nil {
		t.Fatal(err)
	}
	// A purge of the stream by subject leaves no marker for a watch to
	// hand over.
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+names.AppsBucket+".lost")); err != nil {
		t.Fatal(err)
	}

	w := heldWatch{ch: make(chan jetstream.KeyValueEntry)}
	done := make(chan struct{})
	go func() { defer close(done); tr.follow(ctx, w, nil, nil, nil) }()
	// The first values of a replica that has not caught up.
	w.ch <- lost
	w.ch <- earlier
	w.ch <- lost // taken once follow has handled earlier
	if got := tr.specOf("hello"); !bytes.Equal(got, latest.Value()) {
		t.Errorf("after the leader said it holds nothing of lost, the runner took hello's revision %d unchecked:\n%s\nwant the leader's revision %d\n%s", earlier.Revision(), got, latest.Revision(), latest.Value())
	}
	if got := tr.specOf("lost"); !bytes.Equal(got, lost.Value()) {
		t.Errorf("the runner holds\n%s\nfor lost, whose record the store lost; want the spec it ran\n%s", got, lost.Value())
	}
	cancel()
	<-done
}
