package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	digest := strings.Repeat("a", 64)
	parse := func(extra string) *spec.App {
		t.Helper()
		a, err := spec.Parse("a.toml", []byte("name = \"a\"\nversion = \"2\"\nnodes = [\"n1\"]\nreplicas = 2\n"+extra+
			"[binaries.amd64]\nobject = \"a/2/linux-amd64\"\nsha256 = \""+digest+"\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	checked := parse("[health]\ntype = \"tcp\"\nport = 80\n")
	unchecked := parse("")
	never := parse("[restart]\npolicy = \"never\"\n[health]\ntype = \"tcp\"\nport = 80\n")
	atOnce := parse("[health]\ntype = \"tcp\"\nport = 80\nmin_healthy = 0\n")
	const settled = spec.DefaultMinHealthy
	now := time.Now()
	inst := func(app *spec.App, id string, st state.State) state.Instance {
		slot := 0
		if id == "1" {
			slot = 1
		}
		return state.Instance{App: "a", Node: "n1", ID: id, Slot: slot, State: st, Fingerprint: app.Fingerprint("amd64"), Reason: "r-" + id}
	}
	// The third replica, stopped by its runner when replicas went from 3 to 2.
	scaledAway := state.Instance{App: "a", Node: "n1", ID: "2", Slot: 2, State: state.Stopped, Fingerprint: never.Fingerprint("amd64"), Reason: "stopped"}
	node := []state.Node{{ID: "n1", Arch: "amd64"}, {ID: "n2", Arch: "arm64"}}
	// The third replica, still listed by its node's heartbeat after
	// replicas went from 3 to 2, and still stopping.
	stopping := state.Instance{App: "a", Node: "n1", ID: "2", Slot: 2, State: state.Stopping, Fingerprint: checked.Fingerprint("amd64")}
	listing := []state.Node{{ID: "n1", Arch: "amd64", Instances: []state.Instance{{App: "a", Node: "n1", ID: "2", Slot: 2, State: state.Healthy}}}}
	// The instance of the earlier spec in slot 1, which the rollout
	// replaces, still listed by its node's heartbeat.
	replaced := state.Instance{App: "a", Node: "n1", ID: "old-1", Slot: 1, State: state.Healthy, Fingerprint: "earlier"}
	replacedStopped := replaced
	replacedStopped.State = state.Stopped
	replacing := []state.Node{{ID: "n1", Arch: "amd64", Instances: []state.Instance{replaced}}}
	// The same, by a node whose last heartbeat the server stored an hour ago.
	silent := []state.Node{{ID: "n1", Arch: "amd64", Interval: time.Second, Stored: now.Add(-time.Hour), Instances: listing[0].Instances}}
	tests := []struct {
		name      string
		app       *spec.App
		nodes     []state.Node
		instances []state.Instance
		// healthyFor is how long the instances have been seen healthy.
		healthyFor time.Duration
		ready      int
		waiting    string // "" for none
		failed     string
	}{
		{"healthy", checked, node, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy)}, settled, 2, "", ""},
		{"healthy, not yet for min_healthy", checked, node, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy)}, settled - time.Millisecond, 0, "n1: 0 of 2 ready (0 healthy for less than min_healthy (2s): r-0; 1 healthy", ""},
		{"min_healthy 0", atOnce, node, []state.Instance{inst(atOnce, "0", state.Healthy), inst(atOnce, "1", state.Healthy)}, 0, 2, "", ""},
		{"running is not healthy", checked, node, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Running)}, time.Hour, 1, "n1: 1 of 2 ready (1 running: r-1)", ""},
		{"old fingerprint", checked, node, []state.Instance{inst(checked, "0", state.Healthy), {App: "a", Node: "n1", ID: "1", State: state.Healthy, Fingerprint: "old"}}, settled, 1, "n1: 1 of 2 ready", ""},
		{"failed", checked, node, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Failed)}, settled, 1, "n1: 1 of 2 ready", "r-1"},
		{"no health check, just started", unchecked, node, []state.Instance{inst(unchecked, "0", state.Healthy), inst(unchecked, "1", state.Running)}, 0, 0, "(0 healthy for less than min_healthy (2s): r-0; 1 running: r-1)", ""},
		{"no health check, settled", unchecked, node, []state.Instance{inst(unchecked, "0", state.Healthy), inst(unchecked, "1", state.Healthy)}, settled, 2, "", ""},
		{"exited, policy never", never, node, []state.Instance{inst(never, "0", state.Healthy), inst(never, "1", state.Stopped)}, settled, 1, "n1: 1 of 2 ready", `1 on n1 exited and is not restarted (restart policy "never"): r-1`},
		{"slot scaled away", never, node, []state.Instance{inst(never, "0", state.Healthy), inst(never, "1", state.Healthy), scaledAway}, settled, 2, "", ""},
		{"slot scaled away, still stopping", checked, listing, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy), stopping}, settled, 2, "n1: 1 instance(s) to stop (2 stopping)", ""},
		{"slot scaled away, stopped", checked, listing, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy), scaledAway}, settled, 2, "", ""},
		{"replaced by the rollout, still running", checked, replacing, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy), replaced}, settled, 2, "n1: 1 instance(s) to stop (old-1 healthy (earlier spec))", ""},
		{"replaced by the rollout, stopped", checked, replacing, []state.Instance{inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy), replacedStopped}, settled, 2, "", ""},
		{"no binary for arch", checked, []state.Node{{ID: "n1", Arch: "riscv64"}}, nil, 0, 0, "", "no riscv64 binary"},
	}
	// A silent node is waited for neither to stop what the spec no longer
	// wants nor to start what it wants: it is named as down.
	t.Run("slot scaled away on a silent node", func(t *testing.T) {
		seen := map[string]map[string]state.Instance{"n1": {"0": inst(checked, "0", state.Healthy), "1": inst(checked, "1", state.Healthy), "2": stopping}}
		r := evaluate(checked, silent, seen, map[string]healthyRun{}, now, now)
		if r.Desired != 0 || len(r.Waiting) != 0 || len(r.Down) != 1 || r.Down[0].Node != "n1" {
			t.Errorf("desired %d, waiting %q, down %q; want 0, none, n1", r.Desired, r.Waiting, r.Down)
		}
	})
	// A process seen healthy long ago that has restarted since, the states
	// in between unseen (a heartbeat, no events), starts its count again.
	t.Run("restarted since seen healthy", func(t *testing.T) {
		w := &waiter{app: checked, seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, ended: map[string]bool{}, live: map[string]bool{"n1": true}}
		first, other := inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy)
		first.PID, first.Since = 42, now.Add(-time.Hour)
		w.record(first, time.Time{}, now, true)
		w.record(other, time.Time{}, now, true)
		for key, h := range w.healthy {
			h.since = now.Add(-time.Hour)
			w.healthy[key] = h
		}
		again := first
		again.PID, again.Restarts, again.Since, again.Reason = 43, 1, now, "last exit: exit status 3"
		w.record(again, time.Time{}, now, true)
		r := evaluate(checked, node, w.seen, w.healthy, time.Now(), now)
		if want := "n1: 1 of 2 ready (0 healthy for less than min_healthy (2s), 1 restart(s): last exit: exit status 3)"; len(r.Ready) != 1 || strings.Join(r.Waiting, "; ") != want {
			t.Errorf("ready %v, waiting %q; want 1 ready, waiting %q", r.Ready, r.Waiting, want)
		}
	})
	// How long an instance has been healthy is what its node says, on the
	// node's clock, however far that is from this machine's: one healthy
	// for min_healthy when its heartbeat was written counts at once, one
	// that had just turned healthy does not.
	t.Run("healthy as long as its node says", func(t *testing.T) {
		w := &waiter{app: checked, seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, ended: map[string]bool{}}
		beat := time.Now().Add(-time.Hour)
		long, just := inst(checked, "0", state.Healthy), inst(checked, "1", state.Healthy)
		long.Since, just.Since = beat.Add(-settled), beat
		w.record(long, beat, beat, false)
		w.record(just, beat, beat, false)
		r := evaluate(checked, node, w.seen, w.healthy, time.Now(), now)
		if len(r.Ready) != 1 || r.Ready[0] != "n1/0" || r.settling <= 0 {
			t.Errorf("ready %v, waiting %q, settling %s: want n1/0 ready, n1/1 settling", r.Ready, r.Waiting, r.settling)
		}
	})
	// NTP steps the node's clock back an hour between two changes of an
	// instance: the event of the second is stamped before the first's.
	// The heartbeat that still lists the first, stored before the second
	// event came and read after it, does not undo it; the next one, which
	// lists the second with the stamp of the event, is taken.
	t.Run("events after the node's clock went back", func(t *testing.T) {
		w := &waiter{app: atOnce, seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, ended: map[string]bool{}, live: map[string]bool{"n1": true}}
		running, healthy := inst(atOnce, "0", state.Running), inst(atOnce, "0", state.Healthy)
		running.Since = now
		healthy.Since, healthy.PID = now.Add(-time.Hour), 42
		w.record(running, running.Since, now, true)
		w.record(healthy, healthy.Since, now.Add(2*time.Second), true)
		w.record(running, now.Add(time.Second), now.Add(time.Second), false)
		if got := w.seen["n1"]["0"]; got.State != state.Healthy {
			t.Errorf("instance %s after its healthy event and an earlier heartbeat, want healthy", got.State)
		}
		healthy.PID = 43
		w.record(healthy, healthy.Since.Add(time.Second), now.Add(3*time.Second), false)
		if got := w.seen["n1"]["0"]; got.PID != 43 {
			t.Errorf("pid %d after a heartbeat stored after the event, want 43", got.PID)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]map[string]state.Instance{"n1": {}}
			healthy := map[string]healthyRun{}
			for _, in := range tc.instances {
				seen["n1"][in.ID] = in
				healthy["n1/"+in.ID] = healthyRun{since: now.Add(-tc.healthyFor)}
			}
			r := evaluate(tc.app, tc.nodes, seen, healthy, now, now)
			if r.Desired != 2 {
				t.Errorf("desired %d", r.Desired)
			}
			waiting := strings.Join(r.Waiting, "; ")
			if len(r.Ready) != tc.ready || (waiting == "") != (tc.waiting == "") || !strings.Contains(waiting, tc.waiting) {
				t.Errorf("ready %v waiting %q, want %d ready, waiting %q", r.Ready, waiting, tc.ready, tc.waiting)
			}
			if got := strings.Join(r.Failed, ";"); tc.failed == "" && got != "" || !strings.Contains(got, tc.failed) {
				t.Errorf("failed %q, want %q", got, tc.failed)
			}
		})
	}
}

// An instance its node's heartbeat no longer lists, though written after
// the instance's last reported change, is gone: an old instance stopped
// before the waiter subscribed to the events that said so must not count
// as ready beside the one that replaced it. One that changed after the
// heartbeat was written is newer than it, and stays.
func TestWaiterForgetsUnlisted(t *testing.T) {
	t.Parallel()
	beat := time.Now()
	w := &waiter{app: &spec.App{Name: "a"}, seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, ended: map[string]bool{}, live: map[string]bool{"n1": true}}
	stale := state.Instance{App: "a", Node: "n1", ID: "1-old", Slot: 1, State: state.Healthy, Since: beat.Add(-time.Second)}
	fresh := state.Instance{App: "a", Node: "n1", ID: "1-new", Slot: 1, State: state.Starting, Since: beat.Add(time.Millisecond)}
	listed := state.Instance{App: "a", Node: "n1", ID: "0-new", State: state.Healthy, Since: beat.Add(-time.Second)}
	// fresh was heard after the heartbeat was stored.
	for _, in := range []state.Instance{stale, fresh, listed} {
		w.record(in, time.Time{}, in.Since, true)
	}
	w.forget([]state.Node{{ID: "n1", Stored: beat, Instances: []state.Instance{listed, {App: "b", ID: "1-old"}}}})
	if _, ok := w.seen["n1"]["1-old"]; ok {
		t.Error("an instance the newer heartbeat no longer lists is still seen")
	}
	if _, ok := w.healthy["n1/1-old"]; ok {
		t.Error("an instance the newer heartbeat no longer lists still counts as healthy")
	}
	for _, id := range []string{"1-new", "0-new"} {
		if _, ok := w.seen["n1"][id]; !ok {
			t.Errorf("instance %s forgotten", id)
		}
	}
}

// Any NATS client can publish an app's events, with any node and instance
// id: a stream of distinct ids must not grow what the waiter keeps
// without bound. Events are kept only for nodes whose heartbeat was read,
// and only so many instances of a node; what a heartbeat lists is kept
// all the same, and a node whose heartbeat is gone is forgotten whole.
func TestWaiterBoundsSpoofedEvents(t *testing.T) {
	t.Parallel()
	const spoofs = 10000
	beat := time.Now()
	w := &waiter{app: &spec.App{Name: "a"}, seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, shown: map[string]string{}, ended: map[string]bool{}}
	listed := state.Instance{App: "a", Node: "n1", ID: "0-1", State: state.Healthy}
	w.forget([]state.Node{{ID: "n1", Stored: beat, Instances: []state.Instance{listed}}})
	later := beat.Add(time.Second)
	for i := range spoofs {
		w.record(state.Instance{App: "a", Node: fmt.Sprintf("spoof-%d", i), ID: "0-1", State: state.Healthy}, time.Time{}, later, true)
		w.record(state.Instance{App: "a", Node: "n1", ID: fmt.Sprintf("spoof-%d", i), State: state.Healthy}, time.Time{}, later, true)
	}
	if len(w.seen) != 1 || len(w.seen["n1"]) >= spoofs || len(w.heard) >= spoofs || len(w.healthy) >= spoofs {
		t.Fatalf("after %d events of distinct nodes and instances: %d node(s), %d instance(s) of n1, %d heard, %d healthy kept", spoofs, len(w.seen), len(w.seen["n1"]), len(w.heard), len(w.healthy))
	}
	// The node's own report still counts, past the bound, as does a later
	// event of an instance it follows.
	w.record(listed, beat, later, false)
	running := listed
	running.State = state.Running
	w.record(running, time.Time{}, later.Add(time.Second), true)
	if got, ok := w.seen["n1"]["0-1"]; !ok || got.State != state.Running {
		t.Errorf("instance listed by the heartbeat: %v, %v; want it running, as its last event said", got.State, ok)
	}
	w.forget(nil)
	if len(w.seen) != 0 || len(w.heard) != 0 || len(w.healthy) != 0 {
		t.Errorf("after every heartbeat is gone: %d node(s), %d heard, %d healthy kept; want none", len(w.seen), len(w.heard), len(w.healthy))
	}
}

// A node that died keeps its heartbeat until the entry expires: the
// rollout must neither wait for it until then nor pass without naming it,
// nor forget a node the spec lists whose heartbeat has already expired.
func TestEvaluateDownNodes(t *testing.T) {
	t.Parallel()
	digest := strings.Repeat("a", 64)
	app, err := spec.Parse("a.toml", []byte("name = \"a\"\nversion = \"2\"\nnodes = [\"n1\", \"n2\", \"n3\"]\n[health]\ntype = \"tcp\"\nport = 80\n"+
		"[binaries.amd64]\nobject = \"a/2/linux-amd64\"\nsha256 = \""+digest+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fresh := state.Instance{App: "a", Node: "n1", ID: "0", State: state.Healthy, Fingerprint: app.Fingerprint("amd64")}
	old := state.Instance{App: "a", Node: "n2", ID: "0", State: state.Healthy, Fingerprint: "old"}
	nodes := []state.Node{
		{ID: "n1", Arch: "amd64", Interval: time.Second, Stored: now, Instances: []state.Instance{fresh}},
		{ID: "n2", Arch: "amd64", Interval: time.Second, Stored: now.Add(-time.Minute), Instances: []state.Instance{old}},
	}
	seen := map[string]map[string]state.Instance{"n1": {"0": fresh}, "n2": {"0": old}}
	r := evaluate(app, nodes, seen, map[string]healthyRun{"n1/0": {since: now.Add(-time.Hour)}}, now, now)
	if len(r.Waiting) != 0 || len(r.Ready) != 1 || r.Desired != 1 {
		t.Errorf("desired %d, ready %v, waiting %q; want 1, [n1/0], none", r.Desired, r.Ready, r.Waiting)
	}
	if want := []downNode{{"n2", "no heartbeat for 1m"}, {"n3", "no heartbeat"}}; !slices.Equal(r.Down, want) {
		t.Errorf("down %q, want %q", r.Down, want)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	p := &progress{w: &b, name: "obj", total: 200}
	for range 4 {
		p.add(50)
	}
	p.done()
	out := b.String()
	for _, want := range []string{" 25%", " 50%", "100%", "obj ["} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output lacks %q: %q", want, out)
		}
	}
	if !strings.HasSuffix(out, "\n") {
		t.Error("progress does not end its line")
	}
}

func TestIsTerminal(t *testing.T) {
	t.Parallel()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to check against: %v", err)
	}
	defer pty.Close()
	for _, tc := range []struct {
		name string
		f    any
		want bool
	}{
		{"/dev/null, a character device but no terminal", devNull, false},
		{"pipe", w, false},
		{"not a file", &strings.Builder{}, false},
		{"pseudo-terminal", pty, true},
	} {
		if got := isTerminal(tc.f); got != tc.want {
			t.Errorf("%s: isTerminal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A --wait that cannot wait is a usage error before anything is written,
// not a rollout that "selected no node".
func TestWaitNeedsATimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	p := h.file("hello.toml", helloSpec)
	r := h.fails(2, "", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "0")
	if !strings.Contains(r.err, "--wait needs a positive duration") {
		t.Errorf("deploy --wait --timeout 0: %s", r.err)
	}
	if _, ok := h.get(names.AppsBucket, "hello"); ok {
		t.Error("spec stored")
	}
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	h.fails(2, "", "app", "restart", "hello", "--wait", "--timeout", "-1s")
}

// A wait whose server goes away says so as soon as ctl gives up on it,
// instead of running out its --timeout and calling the rollout not done.
// It exits 1, as NATS unreachable does: exit 4 would tell a script that the
// rollout failed, and a restart of narun up says nothing of the rollout.
func TestWaitLosesNATS(t *testing.T) {
	t.Parallel()
	h, done, seen := startWaitingDeploy(t)
	// Only the wait prints events: once one is printed, ctl waits, and a
	// server gone from then on fails the wait, not a write.
	ev, err := json.Marshal(state.Event{Instance: state.Instance{App: "hello", Node: "node-1", ID: "hello-0", State: state.Starting}, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.js.Conn().Publish(names.EventSubject("hello", "node-1"), ev); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "ctl waiting", func() bool {
		return strings.Contains(seen.String(), "node-1 hello-0: starting")
	})
	h.srv.Shutdown()
	r := <-done
	if r.code != 1 || !strings.Contains(r.err, "lost the connection to NATS") {
		t.Errorf("deploy --wait after the server went away: exit %d, %s", r.code, r.err)
	}
}

// TestWaitEscapesEventReasons checks that deploy --wait prints an event's
// reason, which any NATS client can publish, with its control characters
// escaped.
func TestWaitEscapesEventReasons(t *testing.T) {
	t.Parallel()
	h, done, seen := startWaitingDeploy(t)
	ev, err := json.Marshal(state.Event{Instance: state.Instance{App: "hello", Node: "node-1", ID: "hello-0", State: state.Backoff, Reason: "exit status 1\x1b[2J\x1b]0;pwned\x07"}, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.js.Conn().Publish(names.EventSubject("hello", "node-1"), ev); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the event printed", func() bool {
		return strings.Contains(seen.String(), "node-1 hello-0: backoff (exit status 1")
	})
	// The same reason, on the instance failed for good, ends the rollout
	// with an error that quotes it.
	stored, _ := h.get(names.AppsBucket, "hello")
	app, _, err := spec.ParseStored("hello.toml", stored)
	if err != nil {
		t.Fatal(err)
	}
	failed := state.Instance{App: "hello", Node: "node-1", ID: "hello-0", State: state.Failed, Fingerprint: app.Fingerprint(runtime.GOARCH), Reason: "exit status 1\x1b[2J\x1b]0;pwned\x07"}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{failed}})
	if ev, err = json.Marshal(state.Event{Instance: failed, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := h.js.Conn().Publish(names.EventSubject("hello", "node-1"), ev); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != ExitRollout || !strings.Contains(r.err, `hello-0 on node-1: exit status 1\x1b[2J\x1b]0;pwned\x07`) {
		t.Errorf("deploy --wait: exit %d, %q", r.code, r.err)
	}
	if out := seen.String(); strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `(exit status 1\x1b[2J\x1b]0;pwned\x07)`) {
		t.Errorf("deploy --wait printed %q", out)
	}
}

// startWaitingDeploy runs deploy --wait of hello to node-1 and returns
// once ctl has stored the spec and routes. A server gone before the wait
// fails a write, not the wait; the routes, the last write, are stored
// before ctl has the server's acknowledgement, and ctl subscribed to
// events before its writes: an event published from here on is printed
// by the wait.
func startWaitingDeploy(t *testing.T) (*harness, chan result, *testutil.LogBuffer) {
	t.Helper()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	done := make(chan result, 1)
	seen := &testutil.LogBuffer{}
	go func() {
		done <- h.runSeen(seen, "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--wait", "--timeout", "10m")
	}()
	testutil.Eventually(t, 20*time.Second, "spec and routes stored", func() bool {
		_, ok := h.get(names.RoutesBucket, "hello")
		return ok
	})
	return h, done, seen
}

// A runner stopped during a rollout (a rolling restart of the devices)
// removes its heartbeat. The rollout does not wait for it, as for a node
// that is down, but says that the spec did not reach it, instead of
// passing as if that node had never been selected.
// The spec placing it by labels or listing it in nodes, the warning says
// the same, and not that the node is down or cut off: it stopped.
func TestWaitWarnsOfARunnerStoppedDuringTheRollout(t *testing.T) {
	t.Parallel()
	for placement, selects := range map[string]string{
		"labels": `labels = { role = "edge" }`,
		"nodes":  `nodes = ["node-1", "node-2"]`,
	} {
		t.Run(placement, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH, Labels: map[string]string{"role": "edge"}})
			r := rollOutWhileNode2Stops(t, h, selects)
			if r.code != 0 || !strings.Contains(r.err, "not rolled out on node-2 (its runner stopped during the rollout);") || strings.Contains(r.err, "no heartbeat") || strings.Contains(r.err, "down or cut off") {
				t.Errorf("deploy --wait: exit %d, stderr %q", r.code, r.err)
			}
		})
	}
}

// A node killed outright before the rollout is late from its first read;
// its entry then expires during the rollout (its TTL). That is no runner
// stopping during the rollout: the warning says how long the node has been
// silent, as for a node still listed late.
func TestWaitSaysAnExpiredHeartbeatIsNoStoppedRunner(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH, Labels: map[string]string{"role": "edge"}, Interval: time.Millisecond})
	testutil.Eventually(t, 20*time.Second, "node-2 late", func() bool {
		return strings.Contains(h.ok("", "node", "list").out, "late: down?")
	})
	r := rollOutWhileNode2Stops(t, h, `nodes = ["node-1", "node-2"]`)
	if r.code != 0 || !strings.Contains(r.err, "not rolled out on node-2 (no heartbeat for ") || strings.Contains(r.err, "stopped during the rollout") {
		t.Errorf("deploy --wait: exit %d, stderr %q", r.code, r.err)
	}
}

// The nodes a rollout did not reach are named from their heartbeats, which
// any NATS client can write, with any id: the warning must not act on the
// terminal.
func TestWaitEscapesNodesItDidNotReach(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const esc = "\x1b]0;owned\x07\u202e"
	spoofed, err := json.Marshal(state.Node{ID: "node-2" + esc, OS: "linux", Arch: runtime.GOARCH, Labels: map[string]string{"role": "edge"}, Time: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.NodesBucket).Put(context.Background(), "node-2", spoofed); err != nil {
		t.Fatal(err)
	}
	r := rollOutWhileNode2Stops(t, h, `labels = { role = "edge" }`)
	if r.code != 0 || !strings.Contains(r.err, "not rolled out on node-2") || strings.ContainsAny(r.err, "\x1b\x07\u202e") {
		t.Errorf("deploy --wait: exit %d, stderr %q", r.code, r.err)
	}
}

// rollOutWhileNode2Stops deploys an app with --wait to node-1 and the
// node-2 whose heartbeat the caller wrote, both of role=edge, selected by
// selects (the spec's labels or nodes line), removes node-2's heartbeat
// once the spec is stored, and reports node-1 healthy.
func rollOutWhileNode2Stops(t *testing.T, h *harness, selects string) result {
	t.Helper()
	edge := map[string]string{"role": "edge"}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Labels: edge})
	done := make(chan result, 1)
	go func() {
		done <- h.run("", "deploy", h.file("edge.toml", "name = \"edge\"\nversion = \"1.0.0\"\n"+selects+"\nhealth = { min_healthy = \"100ms\" }\n"), "--binary", elfBinary(t), "--wait", "--timeout", "10m")
	}()
	var stored []byte
	testutil.Eventually(t, 20*time.Second, "spec stored", func() bool {
		var ok bool
		stored, ok = h.get(names.AppsBucket, "edge")
		return ok
	})
	app, _, err := spec.ParseStored("edge.toml", stored)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.kv(names.NodesBucket).Delete(context.Background(), "node-2"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	healthy := state.Instance{App: "edge", Node: "node-1", ID: "0-a", State: state.Healthy, PID: 1, Fingerprint: app.Fingerprint(runtime.GOARCH), Version: "1.0.0", Since: now.Add(-time.Minute)}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Labels: edge, Time: now, Instances: []state.Instance{healthy}})
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("deploy --wait still waiting with node-1 healthy and node-2 stopped")
		return result{}
	}
}

// The only selected runner stopped during the rollout (narun up on a
// single device, restarted): at --timeout the error names it, as the
// warning does when other nodes took the rollout.
func TestWaitNamesTheOnlyRunnerStoppedDuringTheRollout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Labels: map[string]string{"role": "solo"}})
	done := make(chan result, 1)
	go func() {
		done <- h.run("", "deploy", h.file("solo.toml", "name = \"solo\"\nversion = \"1.0.0\"\nlabels = { role = \"solo\" }\n"), "--binary", elfBinary(t), "--wait", "--timeout", "10s")
	}()
	testutil.Eventually(t, 20*time.Second, "spec stored", func() bool {
		select {
		case r := <-done:
			t.Fatalf("deploy --wait ended before the runner stopped: exit %d, %q", r.code, r.err)
		default:
		}
		_, ok := h.get(names.AppsBucket, "solo")
		return ok
	})
	if err := h.kv(names.NodesBucket).Delete(context.Background(), "node-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != 4 || !strings.Contains(r.err, "node-1 (its runner stopped during the rollout)") {
			t.Errorf("deploy --wait: exit %d, stderr %q; want 4 naming node-1", r.code, r.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("deploy --wait still waiting a minute after its --timeout of 10s")
	}
}

// When the NATS server's clock goes back (NTP steps a device whose clock
// ran ahead, or a member whose clock is behind becomes the stream's
// leader, as when the device that led it fails), heartbeats stored before
// are stamped ahead of it. A live node writes one on the clock as it is
// within its interval; a dead one's would look fresh, and outlive its TTL,
// for as long as the step: it is late.
func TestLateAfterServerClockWentBack(t *testing.T) {
	t.Parallel()
	digest := strings.Repeat("a", 64)
	app, err := spec.Parse("a.toml", []byte("name = \"a\"\nversion = \"2\"\nnodes = [\"n1\", \"n2\"]\n[health]\ntype = \"tcp\"\nport = 80\nmin_healthy = 0\n"+
		"[binaries.amd64]\nobject = \"a/2/linux-amd64\"\nsha256 = \""+digest+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := func(node string) state.Instance {
		return state.Instance{App: "a", Node: node, ID: "0", State: state.Healthy, Fingerprint: app.Fingerprint("amd64")}
	}
	nodes := []state.Node{
		// Stored a moment ahead of the server's clock as ctl reckons it.
		{ID: "n1", Arch: "amd64", Interval: time.Second, Stored: now.Add(500 * time.Millisecond), Instances: []state.Instance{in("n1")}},
		{ID: "n2", Arch: "amd64", Interval: time.Second, Stored: now.Add(time.Hour), Instances: []state.Instance{in("n2")}},
	}
	seen := map[string]map[string]state.Instance{"n1": {"0": in("n1")}, "n2": {"0": in("n2")}}
	r := evaluate(app, nodes, seen, map[string]healthyRun{}, now, now)
	if want := []downNode{{"n2", "no heartbeat since one stamped 1h ahead of the NATS server's clock, which went back since"}}; !slices.Equal(r.Down, want) || r.Desired != 1 {
		t.Errorf("desired %d, down %q; want 1, %q", r.Desired, r.Down, want)
	}
	s := statusOf(deployed{name: "a", app: app}, "a", nodes, now)
	if s.Ready != 1 || len(s.Instances) != 2 || s.Instances[0].State != state.Healthy || s.Instances[1].State != stateUnknown {
		t.Errorf("status: ready %d, instances %+v; want n1's healthy, n2's unknown", s.Ready, s.Instances)
	}
}

// A runner of an earlier release refuses a spec with [file_digests], the
// table ctl writes for [[files]], and says so only in its own log: it
// keeps its instances as they were and reports nothing of the new spec.
// deploy --wait then runs out its --timeout, and the error names the
// likely cause, but only when the spec has the table and a node shows
// nothing of it.
func TestWaitTimeoutHintsAtFileDigests(t *testing.T) {
	t.Parallel()
	const withFiles = "name = \"hello\"\nversion = \"1.0.0\"\nnodes = [\"dev1\"]\nreplicas = 2\n[[files]]\nobject = \"conf\"\npath = \"conf.toml\"\n"
	const withoutFiles = "name = \"hello\"\nversion = \"1.0.0\"\nnodes = [\"dev1\"]\nreplicas = 2\n"
	const hint = "upgrade runners before ctl"
	for _, tt := range []struct {
		name    string
		spec    string
		version string
		old     state.State
		slow    bool
		hint    bool
	}{
		{"earlier runner silent on a spec with [file_digests]", withFiles, "v0.9.0", state.Healthy, false, true},
		{"earlier runner silent on a spec without them", withoutFiles, "v0.9.0", state.Healthy, false, false},
		{"runner of ctl's release", withFiles, buildinfo.Get().Version, state.Healthy, false, false},
		{"runner still fetching the new spec", withFiles, "v0.9.0", state.Healthy, true, false},
		{"runner still stopping the old instance", withFiles, "v0.9.0", state.Stopping, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.ok("", "files", "put", "conf", h.file("conf.toml", "x = 1\n"))
			h.heartbeat(state.Node{ID: "dev1", Arch: runtime.GOARCH, Version: tt.version, Instances: []state.Instance{
				{App: "hello", Node: "dev1", ID: "hello-0.old", State: tt.old, Version: "0.9.0", Fingerprint: "of-the-spec-before"},
			}})
			if tt.slow {
				fakeRunner(t, h, "dev1", state.Fetching, "", 0)
			}
			r := h.fails(ExitRollout, "", "deploy", h.file("hello.toml", tt.spec), "--binary", elfBinary(t), "--wait", "--timeout", "1s")
			if !strings.Contains(r.err, "dev1: 0 of 2 ready") {
				t.Fatalf("not the timeout: %s", r.err)
			}
			if got := strings.Contains(r.err, hint); got != tt.hint {
				t.Errorf("hint given %v, want %v: %s", got, tt.hint, r.err)
			}
			if tt.hint && !strings.Contains(r.err, "dev1") || tt.hint && !strings.Contains(r.err, "docs/UPGRADING.md") {
				t.Errorf("hint names no node or no doc: %s", r.err)
			}
		})
	}
}

// A deploy that changes [health] and nothing the runner replaces an
// instance for says that the running instances keep the check they
// started with, and how to apply it; --wait, which can only time out
// while they fail that check, says it in its error. A change that
// replaces them says nothing of it.
func TestDeploySaysHealthChangeKeepsRunningInstances(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	app := h.storedApp("hello")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Running, Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH), Reason: "waiting for health check: no responder"},
	}})
	const want = "running instances keep the previous health check; narun ctl app restart hello applies it"

	h.file("hello.toml", strings.Replace(helloSpec, `min_healthy = "100ms"`, `min_healthy = "150ms"`, 1))
	r := h.fails(ExitRollout, "", "deploy", p, "--wait", "--timeout", "1s")
	if !strings.Contains(r.err, "rollout of hello not done after 1s") {
		t.Fatalf("not the timeout: %s", r.err)
	}
	if strings.Count(r.err, want) != 2 {
		t.Errorf("deploy --wait of a new [health]: stderr\n%s\nwant %q in the warning and in the error", r.err, want)
	}

	h.file("hello.toml", strings.Replace(helloSpec, `min_healthy = "100ms"`, `min_healthy = "200ms"`, 1)+"[env]\nX = \"1\"\n")
	if r := h.ok("", "deploy", p); strings.Contains(r.err, "health check") {
		t.Errorf("deploy that replaces the instances: stderr\n%s", r.err)
	}
}

// A rollback to a revision that differs only in [health] says, as deploy
// does, that the running instances keep the check they started with, in
// its warning and in the error of --wait at its timeout.
func TestRollbackSaysHealthChangeKeepsRunningInstances(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	h.file("hello.toml", strings.Replace(helloSpec, `min_healthy = "100ms"`, `min_healthy = "150ms"`, 1))
	h.ok("", "deploy", p)
	app := h.storedApp("hello")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Running, Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH), Reason: "waiting for health check: no responder"},
	}})
	const want = "running instances keep the previous health check; narun ctl app restart hello applies it"

	r := h.fails(ExitRollout, "", "app", "rollback", "hello", "--wait", "--timeout", "1s")
	if !strings.Contains(r.err, "rollout of hello not done after 1s") {
		t.Fatalf("not the timeout: %s", r.err)
	}
	if strings.Count(r.err, want) != 2 {
		t.Errorf("rollback --wait to another [health]: stderr\n%s\nwant %q in the warning and in the error", r.err, want)
	}
}

// Any NATS client can write narun-nodes: one garbled heartbeat was warned
// of at every poll of --wait, twice a second for as long as it waited.
func TestUnreadableHeartbeatWarnedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if _, err := h.kv(names.NodesBucket).Put(context.Background(), "garbled", []byte("x")); err != nil {
		t.Fatal(err)
	}
	e := h.env(io.Discard)
	var logged bytes.Buffer
	e.log = slog.New(slog.NewTextHandler(&logged, nil))
	for range 3 {
		if _, err := e.nodes(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logged.String(), "unreadable heartbeat"); n != 1 {
		t.Errorf("warned %d times of one unreadable heartbeat read 3 times, want once:\n%s", n, logged.String())
	}
}
