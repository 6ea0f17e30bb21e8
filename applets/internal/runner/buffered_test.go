package runner

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// heldWatch is a watch whose entries the test hands over one by one: what
// a real watch's channel holds when a resync tick is picked first by
// follow's select.
type heldWatch struct{ ch chan jetstream.KeyValueEntry }

func (w heldWatch) Updates() <-chan jetstream.KeyValueEntry { return w.ch }
func (w heldWatch) Stop() error                             { return nil }

// followHeld runs follow on a held watch past its initial values, those a
// watch of c's narun-apps starts with now, has a resync picked first,
// then hands over the entries the watch held, and returns once follow has
// handled them.
func followHeld(t *testing.T, c *cluster, tr *testRunner, held ...jetstream.KeyValueEntry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	initial, err := c.apps.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer initial.Stop()
	w := heldWatch{ch: make(chan jetstream.KeyValueEntry)}
	resync := make(chan time.Time)
	done := make(chan struct{})
	go func() { defer close(done); tr.follow(ctx, w, resync, nil, nil) }()
	for e := range initial.Updates() {
		w.ch <- e
		if e == nil { // initial values done
			break
		}
	}
	resync <- time.Now()
	for _, e := range held {
		w.ch <- e
	}
	w.ch <- nil // taken once follow has handled the last held entry
	cancel()
	<-done
}

// Two deploys in quick succession leave revisions N and N+1 in the
// watch's channel; when the resync tick is picked first and applies N+1,
// N, handed over after it, must not roll the app back (and forward again
// at the next resync, restarting it twice).
func TestBufferedOlderEntryAfterResyncIsSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	on := func(v string) func([]state.Instance) bool {
		return func(l []state.Instance) bool { return allIn(1, state.Healthy)(l) && l[0].Version == v }
	}
	c.deploy(t, "hello", "1.0.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy on 1.0.0", on("1.0.0"))
	older, err := c.apps.Get(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	c.deploy(t, "hello", "1.1.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy on 1.1.0", on("1.1.0"))
	latest, err := c.apps.Get(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	followHeld(t, c, tr, older)
	if got := tr.specOf("hello"); !bytes.Equal(got, latest.Value()) {
		t.Errorf("after a resync applied revision %d, the watch's buffered revision %d was applied over it: the runner rolls hello back to 1.0.0", latest.Revision(), older.Revision())
	}

	// A later deploy, the watch's next entry, still applies.
	c.deploy(t, "hello", "1.2.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy on 1.2.0", on("1.2.0"))
}

// The same for a deletion: the spec the watch held from before it must
// not bring the deleted app back, while a deploy after the deletion does.
func TestBufferedEntryBeforeDeletionIsSkipped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	c.deploy(t, "hello", "1.0.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	older, err := c.apps.Get(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	c.remove(t, "hello")
	tr.wait(t, "hello", "removed", func(l []state.Instance) bool { return len(l) == 0 })
	testutil.Eventually(t, 10*time.Second, "hello forgotten", func() bool { return tr.specOf("hello") == nil })
	followHeld(t, c, tr, older)
	if got := tr.specOf("hello"); got != nil {
		t.Errorf("after hello was deleted, the watch's buffered revision %d brought it back", older.Revision())
	}

	c.deploy(t, "hello", "1.1.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy on 1.1.0", func(l []state.Instance) bool { return allIn(1, state.Healthy)(l) && l[0].Version == "1.1.0" })
}

// An app deleted, then deployed again after narun-apps was replaced by an
// empty bucket, is numbered from 1 again, below the revision its deletion
// had in the old bucket: the new watch must not hold it back for that.
func TestRedeployAfterBucketRecreated(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2", "1.0.3"} {
		c.deploy(t, "b", v, helloBin, "")
	}
	tr.wait(t, "b", "healthy", allIn(1, state.Healthy))
	c.remove(t, "b")
	tr.wait(t, "b", "gone", func(l []state.Instance) bool { return len(l) == 0 })
	c.recreateApps(t)
	if err := tr.opts.Conn.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "reconnected", func() bool {
		return tr.opts.Conn.Stats().Reconnects > 0 && tr.opts.Conn.IsConnected()
	})
	c.deploy(t, "a", "1.0.0", helloBin, "")
	tr.wait(t, "a", "a healthy from the new bucket", allIn(1, state.Healthy))
	c.deploy(t, "b", "2.0.0", helloBin, "")
	testutil.Eventually(t, 20*time.Second, "b deployed again to run", func() bool {
		l := tr.of("b")
		return len(l) == 1 && l[0].State == state.Healthy
	})
}

// narun-apps deleted and created again while the runner stays connected
// (kv rm, then a deploy that creates it; a restored backup): nats.go's
// ordered consumer under the watch resumes after the last stream sequence
// it saw, which the new stream, numbered from 1, reaches only after as many
// writes. An app deployed to the new bucket must start without waiting for
// a resync, an hour here.
func TestDeployToRecreatedBucketWhileConnected(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(time.Hour) })
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		c.deploy(t, "b", v, helloBin, "")
	}
	tr.wait(t, "b", "healthy", allIn(1, state.Healthy))
	c.recreateApps(t)
	c.deploy(t, "a", "1.0.0", helloBin, "")
	tr.wait(t, "a", "a healthy from the new bucket", allIn(1, state.Healthy))
	if tr.opts.Conn.Stats().Reconnects != 0 {
		t.Fatal("the runner reconnected: the test shows nothing of a watch on a replaced bucket")
	}
}
