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

// followHeld runs follow on a held watch past its initial values, has a
// resync picked first, then hands over the entries the watch held, and
// returns once follow has handled them.
func followHeld(tr *testRunner, held ...jetstream.KeyValueEntry) {
	w := heldWatch{ch: make(chan jetstream.KeyValueEntry)}
	resync := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.follow(ctx, w, resync, nil) }()
	w.ch <- nil // initial values done
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
	followHeld(tr, older)
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
	followHeld(tr, older)
	if got := tr.specOf("hello"); got != nil {
		t.Errorf("after hello was deleted, the watch's buffered revision %d brought it back", older.Revision())
	}

	c.deploy(t, "hello", "1.1.0", helloBin, takeOverAtOnce)
	tr.wait(t, "hello", "healthy on 1.1.0", func(l []state.Instance) bool { return allIn(1, state.Healthy)(l) && l[0].Version == "1.1.0" })
}
