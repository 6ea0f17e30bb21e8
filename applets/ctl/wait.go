package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

// rollout is how far a deployment got on the nodes.
type rollout struct {
	// Desired counts instances over the selected nodes.
	Desired int      `json:"desired"`
	Ready   []string `json:"ready"`
	// Waiting says, per node, what is still missing.
	Waiting []string `json:"waiting"`
	// Failed holds the reasons reported by nodes for instances that gave up.
	Failed []string `json:"failed"`
	// Down names the selected nodes whose heartbeats have stopped, or
	// that the spec lists and send none: the rollout does not wait for
	// them, since their runners apply the spec only once they are back.
	Down []downNode `json:"down"`
	// settling is how long until the next instance that is healthy, but
	// not yet for min_healthy, counts; 0 when none is.
	settling time.Duration
}

// downNode is a node the rollout did not wait for, and why.
type downNode struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// noHeartbeat is the reason for a node the spec lists that sends no
// heartbeat.
const noHeartbeat = "no heartbeat"

// shownDown lists nodes for a warning or an error: "n2 (no heartbeat), n3
// (...)".
func shownDown(down []downNode) string {
	parts := make([]string, len(down))
	for i, d := range down {
		parts[i] = d.Node + " (" + d.Reason + ")"
	}
	return cli.Shown(strings.Join(parts, ", "))
}

// waiter follows instance events and node heartbeats until a spec runs
// everywhere it should, and the instances it no longer wants (fewer
// replicas, replicas = 0, a node no longer selected, those of the earlier
// spec that a rollout replaces) have stopped.
type waiter struct {
	e      *env
	app    *spec.App
	sub    *nats.Subscription
	events chan *nats.Msg
	// seen holds the latest status of every instance of the app, by node
	// and instance id, from events and heartbeats, whichever is newer.
	seen map[string]map[string]state.Instance
	// heard holds, by "node/id", when what seen has of the instance came,
	// on the NATS server's clock (record).
	heard map[string]time.Time
	// healthy holds, by "node/id", since when each instance's current
	// process has been healthy without a break.
	healthy map[string]healthyRun
	// shown is the last progress line printed per "node/id": events also
	// report changes the line does not show (pid, health, restarts).
	shown map[string]string
	// ended holds, by "node/id", the instances that had already failed or
	// stopped before the spec was written. A changed spec gives such an
	// instance no new life but a new instance with a new id, so what they
	// say is not about this rollout: a heartbeat still listing one that
	// failed under the same spec moments ago (a rollback to a revision
	// just rolled back from) must not fail it. publish forgets them when
	// the spec did not change, since then they are its outcome.
	ended map[string]bool
	// ran says a process of the rollout started: only then can the
	// app's output say why the rollout failed.
	ran bool
	// selected holds the nodes the spec selects, by their labels or in
	// nodes, that a heartbeat read during the rollout listed. A runner
	// that stops removes its heartbeat: one restarted during the rollout
	// (a rolling upgrade) would otherwise drop out of it without a word
	// (or, listed in nodes, be said to send none), and the rollout pass
	// with its instances neither started nor counted. Each holds whether
	// the node was late when last read: the entry of a node killed
	// outright expires (its TTL) rather than being removed, and such a
	// node did not stop during the rollout.
	selected map[string]bool
	// lastHeard holds the last heartbeat read of each node in selected.
	lastHeard map[string]state.Node
	// live holds the nodes the heartbeats last read list: only their
	// events are kept (follows).
	live map[string]bool
	// timeoutHint is what the command knows of why the rollout may not
	// finish, said again in the timeout's error; "" for nothing.
	timeoutHint string
	// deletion says the app was deleted: the waiter follows its instances
	// until they have stopped, as for replicas = 0.
	deletion bool
}

// what is what the waiter follows, for its messages.
func (w *waiter) what() string {
	if w.deletion {
		return "deletion"
	}
	return "rollout"
}

// maxInstancesPerNode bounds the instances of one node that events alone
// make the waiter keep. A runner reports at most spec.MaxReplicas slots of
// a spec; during a rollout those of the old spec stop beside them, and a
// replaced one may still be listed: four times that leaves room for all.
const maxInstancesPerNode = 4 * spec.MaxReplicas

// healthyRun is since when a process of an instance has been healthy, on
// this machine's clock: a node's clock may differ from it, and the
// heartbeats of a node carry the node's. The process is told by its pid
// and restart count, so that a restart between two looks, whose states in
// between were not seen, starts the count again.
type healthyRun struct {
	since    time.Time
	pid      int
	restarts int
}

// newWaiter subscribes to app's events and reads which of its instances
// have already ended; call it before writing the spec.
func newWaiter(ctx context.Context, e *env, app *spec.App) (*waiter, error) {
	w := &waiter{e: e, app: app, events: make(chan *nats.Msg, 1024), seen: map[string]map[string]state.Instance{}, healthy: map[string]healthyRun{}, shown: map[string]string{}, ended: map[string]bool{}, selected: map[string]bool{}, lastHeard: map[string]state.Node{}}
	sub, err := e.nc.ChanSubscribe(names.EventSubject(app.Name, "*"), w.events)
	if err != nil {
		return nil, fmt.Errorf("subscribe to events of %s: %w", app.Name, err)
	}
	w.sub = sub
	nodes, err := e.nodes(ctx)
	if err != nil {
		// Without them nothing is set aside: an instance that failed
		// before the write may end the wait early, and no more.
		e.log.Debug("read heartbeats before the write", "err", err)
	}
	w.noteSelected(nodes)
	for node, byID := range reported(nodes, app.Name) {
		for id, in := range byID {
			if in.State.Final() {
				w.ended[node+"/"+id] = true
			}
		}
	}
	return w, nil
}

func (w *waiter) stop() { _ = w.sub.Unsubscribe() }

func (w *waiter) noteSelected(nodes []state.Node) {
	now := w.e.serverNow()
	for _, n := range nodes {
		if w.app.ReplicasOn(n.ID, n.Labels) > 0 {
			w.selected[n.ID] = late(n, now)
			w.lastHeard[n.ID] = n
		}
	}
}

// down is evaluate's down nodes with those whose heartbeat was read
// during the rollout and is gone now said to have stopped: a runner that
// stops removes its heartbeat, so evaluate, which sees only the
// heartbeats of now, says "no heartbeat" of one the spec lists, and
// nothing of one its labels select.
func (w *waiter) down(evaluated []downNode, nodes []state.Node) []downNode {
	var gone []string
	for id := range w.selected {
		if !slices.ContainsFunc(nodes, func(n state.Node) bool { return n.ID == id }) {
			gone = append(gone, id)
		}
	}
	out := slices.DeleteFunc(slices.Clone(evaluated), func(d downNode) bool {
		return d.Reason == noHeartbeat && slices.Contains(gone, d.Node)
	})
	slices.Sort(gone)
	for _, id := range gone {
		reason := "its runner stopped during the rollout"
		if w.selected[id] {
			reason = "no heartbeat " + silence(w.lastHeard[id], w.e.serverNow())
		}
		out = append(out, downNode{Node: id, Reason: reason})
	}
	return out
}

// logsHint ends a rollout's error with where the app's output is, once a
// process of it ran: why it exits or never answers is nearly always there.
func (w *waiter) logsHint() string {
	if !w.ran {
		return ""
	}
	return "; its output: narun ctl logs " + w.app.Name
}

// digestsHint ends a rollout's timeout with its likely cause when the spec
// has the [file_digests] table ctl writes for [[files]] and a node it waits
// for, of another release than ctl's, shows no instance of it: a runner of
// an earlier release refuses the table and keeps its instances as they
// were, and only its own log says why. A runner that took the spec shows
// its new instances from the start (pending, fetching) or its old ones
// stopping, however slow it is; one of ctl's release knows the table.
// Heartbeats say nothing of refused specs, so this stays a hint.
func (w *waiter) digestsHint(nodes []state.Node) string {
	if len(w.app.FileDigests) == 0 {
		return ""
	}
	own := buildinfo.Get().Version
	var silent []string
	for _, n := range nodes {
		if n.Version == own || late(n, w.e.serverNow()) || w.app.ReplicasOn(n.ID, n.Labels) == 0 {
			continue
		}
		if _, ok := w.app.Binary(n.Arch); !ok {
			continue
		}
		fp := w.app.Fingerprint(n.Arch)
		acting := false
		for _, in := range w.seen[n.ID] {
			if in.Fingerprint == fp || in.Fingerprint == "" && in.Version == w.app.Version || in.State == state.Stopping {
				acting = true
				break
			}
		}
		if !acting {
			silent = append(silent, cli.Shown(n.ID))
		}
	}
	if len(silent) == 0 {
		return ""
	}
	slices.Sort(silent)
	// Another release may be a later one, or a build from source ("dev"):
	// the cause is likely, not sure.
	return fmt.Sprintf("; %s, of another release than this ctl, reported nothing of this spec: a runner of a release before [file_digests] refuses it; if so, upgrade runners before ctl (docs/UPGRADING.md)", strings.Join(silent, ", "))
}

// record keeps in, as its node reported it at its time at (zero when it did
// not say), heard on the NATS server's clock: when the event came, or when
// the server stored the heartbeat. An event is kept as it comes, its
// runner having published them in order; a heartbeat unless what the
// waiter has of the instance came after the server stored it, as events
// received before the heartbeat was read may have. Not by the node's
// stamps: a change made after NTP stepped its clock back looked older
// than the one before, and the wait missed it until --timeout. It returns
// false when it ignored an event that the waiter does not follow.
func (w *waiter) record(in state.Instance, at, heard time.Time, event bool) bool {
	if event && !w.follows(in) {
		return false
	}
	key := in.Node + "/" + in.ID
	if w.ended[key] {
		return true
	}
	if w.heard == nil {
		w.heard = map[string]time.Time{}
	}
	if !event && heard.Before(w.heard[key]) {
		return true
	}
	w.heard[key] = heard
	m := w.seen[in.Node]
	if m == nil {
		m = map[string]state.Instance{}
		w.seen[in.Node] = m
	}
	m[in.ID] = in
	if in.State.Up() || in.Restarts > 0 || in.ExitCode != nil {
		w.ran = true
	}
	if in.State != state.Healthy {
		delete(w.healthy, key)
	} else if h, ok := w.healthy[key]; !ok || h.pid != in.PID || h.restarts != in.Restarts {
		// The node said at at that the process had been healthy since
		// in.Since, both on its clock: the difference holds on this one's
		// whatever the offset, and an instance healthy for long (a deploy
		// that changes nothing, more replicas) counts at once, as the
		// runner counts it. The time the report took to arrive is not
		// credited, which errs on the side of waiting.
		since := time.Now()
		if !in.Since.IsZero() && at.After(in.Since) {
			since = since.Add(-at.Sub(in.Since))
		}
		w.healthy[key] = healthyRun{since: since, pid: in.PID, restarts: in.Restarts}
	}
	return true
}

// follows says whether an event of in is kept. Any NATS client can
// publish the app's events, with any node and instance id, and each
// distinct one would otherwise be kept until ctl exits: only events of
// nodes whose heartbeat was last read are, as evaluate looks at no other,
// and of a new instance only while its node has fewer than
// maxInstancesPerNode. What was dropped is not lost: the node's next
// heartbeat lists its instances, and record keeps those past the bound.
func (w *waiter) follows(in state.Instance) bool {
	if !w.live[in.Node] {
		return false
	}
	_, known := w.seen[in.Node][in.ID]
	return known || len(w.seen[in.Node]) < maxInstancesPerNode
}

// errInterrupted ends a wait that ctl was asked to stop, and errLostNATS
// one whose connection ctl gave up on (narun up restarted): neither says
// anything of the rollout, which goes on.
var (
	errInterrupted = errors.New("interrupted")
	errLostNATS    = errors.New("lost the connection to NATS")
)

// rolloutError is the error a command that waited for a rollout exits
// with: ExitRollout, which tells a script that the rollout failed or is
// not done, unless the wait ended without learning that.
func rolloutError(err error) error {
	if errors.Is(err, errInterrupted) || errors.Is(err, errLostNATS) {
		return err
	}
	return &cli.ExitError{Code: ExitRollout, Err: err}
}

// wait returns when every desired instance is ready, when one fails, or
// after timeout.
func (w *waiter) wait(ctx context.Context, timeout time.Duration, verbose bool) (*rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var nodes []state.Node
	// readErr is why the heartbeats could not be read, until they could:
	// without them no node is known, which is not "none selected".
	var readErr error
	read := false
	refresh := func() {
		ns, err := w.e.nodes(ctx)
		if err != nil {
			w.e.log.Debug("read heartbeats", "err", err)
			if !read {
				readErr = err
			}
			return
		}
		nodes, read, readErr = ns, true, nil
		w.forget(ns)
		w.noteSelected(ns)
		for _, n := range ns {
			for _, in := range n.Instances {
				if in.App == w.app.Name {
					w.record(in, n.Time, n.Stored, false)
				}
			}
		}
	}
	refresh()
	// A runner publishes events at once but coalesces its heartbeats, which
	// `app status` shows: lagging is set while the events tell the outcome
	// and the heartbeats do not yet, so that status run right after --wait
	// agrees with it. failedAt bounds that wait for a failure, which is
	// reported either way.
	var lagging <-chan time.Time
	var failedAt time.Time
	for {
		// The events a runner sent before the heartbeat just read are
		// queued by now: taken first, they are shown even when that
		// heartbeat ends the wait (an app whose instances stopped before
		// the first look).
		for queued := true; queued; {
			select {
			case m := <-w.events:
				w.event(m, verbose)
			default:
				queued = false
			}
		}
		now := time.Now()
		r := evaluate(w.app, nodes, w.seen, w.healthy, now, w.e.serverNow())
		switch {
		case len(r.Failed) > 0:
			if failedAt.IsZero() {
				failedAt = now
			}
			hb := evaluate(w.app, nodes, w.reported(nodes), w.healthy, now, w.e.serverNow())
			if len(hb.Failed) > 0 || now.Sub(failedAt) >= time.Second {
				// The reasons come from heartbeats and events, which any
				// NATS client can write.
				return r, fmt.Errorf("%s of %s failed: %s%s", w.what(), w.app.Name, cli.Shown(strings.Join(r.Failed, "; ")), w.logsHint())
			}
			if lagging == nil {
				lagging = time.After(100 * time.Millisecond)
			}
		case (r.Desired > 0 || w.app.Replicas == 0 && read) && len(r.Waiting) == 0:
			// With replicas = 0 nothing is desired anywhere, and the
			// rollout is done once the heartbeats show nothing stopping.
			hb := evaluate(w.app, nodes, w.reported(nodes), w.healthy, now, w.e.serverNow())
			if len(hb.Waiting) == 0 {
				r.Down = w.down(r.Down, nodes)
				if len(r.Down) > 0 {
					w.e.warnf("%s not rolled out on %s; each applies it when its runner is back (narun ctl app status %s)", w.app.Name, shownDown(r.Down), w.app.Name)
				}
				return r, nil
			}
			for _, lag := range hb.Waiting {
				r.Waiting = append(r.Waiting, lag+" (per its heartbeat)")
			}
			if lagging == nil {
				lagging = time.After(100 * time.Millisecond)
			}
		}
		// Nothing else may happen when an instance completes its
		// min_healthy: look again then.
		var settled <-chan time.Time
		if r.settling > 0 {
			settled = time.After(r.settling)
		}
		select {
		case <-settled:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if r.Desired == 0 && readErr != nil {
					return r, fmt.Errorf("%s of %s not followed: read node heartbeats in %s: %w", w.what(), w.app.Name, timeout, readErr)
				}
				if r.Desired == 0 && len(r.Waiting) == 0 {
					// Every selected runner may have stopped during the
					// rollout (the one device of narun up, restarted).
					r.Down = w.down(r.Down, nodes)
					if len(r.Down) > 0 {
						return r, fmt.Errorf("no node selected by %s is up within %s: %s", w.app.Name, timeout, shownDown(r.Down))
					}
					return r, fmt.Errorf("no node selected by %s within %s (node list shows what is connected)", w.app.Name, timeout)
				}
				hint := ""
				if w.timeoutHint != "" {
					hint = "; " + w.timeoutHint
				}
				return r, fmt.Errorf("%s of %s not done after %s: %s%s%s%s", w.what(), w.app.Name, timeout, cli.Shown(strings.Join(r.Waiting, "; ")), w.logsHint(), w.digestsHint(nodes), hint)
			}
			// Interrupted (Ctrl-C, SIGTERM): the spec is stored and the
			// runners go on rolling it out, whatever becomes of ctl.
			if w.deletion {
				return r, fmt.Errorf("stopped following the deletion of %s (%w): the deletion is stored and its nodes stop its instances; narun ctl app status %s shows how far", w.app.Name, errInterrupted, w.app.Name)
			}
			return r, fmt.Errorf("stopped following the rollout of %s (%w): the spec is stored and its nodes roll it out; narun ctl app status %s shows how far", w.app.Name, errInterrupted, w.app.Name)
		case m := <-w.events:
			w.event(m, verbose)
		case <-tick.C:
			if w.e.nc.IsClosed() {
				// ctl gave up reconnecting: nothing more can be learnt,
				// and "not done" at the timeout would not say why.
				return r, fmt.Errorf("%s of %s not followed to its end: %w: %w", w.what(), w.app.Name, errLostNATS, cmp.Or(w.e.nc.LastError(), nats.ErrConnectionClosed))
			}
			refresh()
		case <-lagging:
			lagging = nil
			refresh()
		}
	}
}

// event records an instance event and, verbose, shows it once per change.
func (w *waiter) event(m *nats.Msg, verbose bool) {
	var ev state.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	if !w.record(ev.Instance, ev.Time, w.e.serverNow(), true) {
		w.e.log.Debug("ignore event: no heartbeat of its node read, or its node has too many instances", "node", cli.Shown(ev.Node), "instance", cli.Shown(ev.ID))
		return
	}
	if !verbose {
		return
	}
	line := fmt.Sprintf("%s %s: %s", ev.Node, ev.ID, ev.State)
	if ev.Reason != "" && ev.Reason != string(ev.State) {
		line += " (" + ev.Reason + ")"
	}
	if key := ev.Node + "/" + ev.ID; w.shown[key] != line {
		w.shown[key] = line
		if w.e.jsonLogs() {
			w.e.log.Info("instance event", "node", ev.Node, "instance", ev.ID, "state", ev.State, "reason", ev.Reason)
		} else {
			// Any NATS client can publish an event: its reason must not
			// act on the terminal.
			fmt.Fprintln(w.e.stdio.Stderr, cli.Shown(line))
		}
	}
}

// forget drops the instances that a node's heartbeat no longer lists,
// though the server stored it after what the waiter has of them came
// (record): its runner removed them (replaced, stopped), maybe before this
// waiter subscribed to the events that said so. Kept, one last seen
// healthy would count as ready for good, beside the instance that took its
// slot. It drops every instance of a node nodes does not list, which
// evaluate no longer looks at, and notes the nodes listed as live.
func (w *waiter) forget(nodes []state.Node) {
	w.live = map[string]bool{}
	for _, n := range nodes {
		w.live[n.ID] = true
	}
	for node, byID := range w.seen {
		if !w.live[node] {
			for id := range byID {
				w.drop(node, id)
			}
		}
	}
	for _, n := range nodes {
		if n.Stored.IsZero() {
			continue
		}
		listed := map[string]bool{}
		for _, in := range n.Instances {
			if in.App == w.app.Name {
				listed[in.ID] = true
			}
		}
		for id := range w.seen[n.ID] {
			if !listed[id] && w.heard[n.ID+"/"+id].Before(n.Stored) {
				w.drop(n.ID, id)
			}
		}
	}
}

// drop forgets all the waiter has of instance id of node.
func (w *waiter) drop(node, id string) {
	delete(w.seen[node], id)
	if len(w.seen[node]) == 0 {
		delete(w.seen, node)
	}
	key := node + "/" + id
	delete(w.heard, key)
	delete(w.healthy, key)
	delete(w.shown, key)
}

// reported is what the heartbeats in nodes say of the app's instances, by
// node and instance id, but for those that had ended before the write.
func (w *waiter) reported(nodes []state.Node) map[string]map[string]state.Instance {
	seen := reported(nodes, w.app.Name)
	for node, byID := range seen {
		for id := range byID {
			if w.ended[node+"/"+id] {
				delete(byID, id)
			}
		}
	}
	return seen
}

// reported is what the heartbeats in nodes say of app's instances, by node
// and instance id.
func reported(nodes []state.Node, app string) map[string]map[string]state.Instance {
	seen := map[string]map[string]state.Instance{}
	for _, n := range nodes {
		for _, in := range n.Instances {
			if in.App != app {
				continue
			}
			if seen[n.ID] == nil {
				seen[n.ID] = map[string]state.Instance{}
			}
			seen[n.ID][in.ID] = in
		}
	}
	return seen
}

// evaluate compares what nodes report with what app wants. An instance is
// ready once its process has been healthy (since healthy[node/id]) for
// [health] min_healthy, as the runner's rolling update counts it: one that
// crashes right after its first passed check must fail the rollout, not
// pass it. One of a slot app no longer wants on its node, or of an
// earlier spec that a rollout replaces, is waited for until it has
// stopped, or its node's heartbeat no longer lists it, as the runner's
// does once it stopped it: until then it may still answer requests, as
// the old spec would. Nothing is
// waited for on a node whose heartbeats have stopped (late by serverNow,
// the NATS server's clock), nor on one the spec lists that sends none:
// their runners roll out when they are back, and waiting for a stopped
// heartbeat to expire would only hold the rollout up to its TTL and then
// pass it without a word about that node.
func evaluate(app *spec.App, nodes []state.Node, seen map[string]map[string]state.Instance, healthy map[string]healthyRun, now, serverNow time.Time) *rollout {
	// Lists even when empty: deploy --json prints them.
	r := &rollout{Ready: []string{}, Waiting: []string{}, Failed: []string{}, Down: []downNode{}}
	for _, n := range nodes {
		want := app.ReplicasOn(n.ID, n.Labels)
		fp := app.Fingerprint(n.Arch)
		var going []string
		for _, in := range n.Instances {
			if in.App != app.Name || late(n, serverNow) {
				continue
			}
			if latest, ok := seen[n.ID][in.ID]; ok {
				in = latest
			}
			replaced := in.Slot < want
			if replaced && runsSpec(in, app, fp) {
				continue
			}
			if !in.State.Final() {
				line := in.ID + " " + string(in.State)
				if replaced {
					// The runner stops it only once its successor has been
					// healthy for min_healthy.
					line += " (earlier spec)"
				}
				going = append(going, line)
			}
		}
		if len(going) > 0 {
			sort.Strings(going)
			r.Waiting = append(r.Waiting, fmt.Sprintf("%s: %d instance(s) to stop (%s)", n.ID, len(going), strings.Join(going, "; ")))
		}
		if want == 0 {
			continue
		}
		if late(n, serverNow) {
			r.Down = append(r.Down, downNode{Node: n.ID, Reason: "no heartbeat " + silence(n, serverNow)})
			continue
		}
		r.Desired += want
		if _, ok := app.Binary(n.Arch); !ok {
			r.Failed = append(r.Failed, fmt.Sprintf("node %s is linux/%s but no %s binary was deployed", n.ID, n.Arch, n.Arch))
			continue
		}
		ready := 0
		var ids, notReady []string
		for id := range seen[n.ID] {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			in := seen[n.ID][id]
			if in.Slot >= want || !runsSpec(in, app, fp) {
				continue
			}
			switch {
			case in.State == state.Failed:
				r.Failed = append(r.Failed, fmt.Sprintf("%s on %s: %s", in.ID, n.ID, in.Reason))
			case in.State == state.Stopped && in.Slot < want && app.Restart.Policy != spec.RestartAlways:
				// It exited and its policy does not start it again: it
				// can never be ready, so waiting would only time out.
				r.Failed = append(r.Failed, fmt.Sprintf("%s on %s exited and is not restarted (restart policy %q): %s", in.ID, n.ID, app.Restart.Policy, in.Reason))
			default:
				left, ok := settling(app, in, healthy, now)
				if ok && left <= 0 {
					ready++
					r.Ready = append(r.Ready, n.ID+"/"+in.ID)
					continue
				}
				why := in.ID + " " + string(in.State)
				if ok {
					why += fmt.Sprintf(" for less than min_healthy (%s)", app.Health.MinHealthy.D())
					if r.settling == 0 || left < r.settling {
						r.settling = left
					}
				}
				if in.Restarts > 0 {
					why += fmt.Sprintf(", %d restart(s)", in.Restarts)
				}
				if in.Reason != "" {
					why += ": " + in.Reason
				}
				notReady = append(notReady, why)
			}
		}
		if ready < want {
			line := fmt.Sprintf("%s: %d of %d ready", n.ID, ready, want)
			if len(notReady) > 0 {
				line += " (" + strings.Join(notReady, "; ") + ")"
			}
			r.Waiting = append(r.Waiting, line)
		}
	}
	for _, id := range app.Nodes {
		if !slices.ContainsFunc(nodes, func(n state.Node) bool { return n.ID == id }) {
			r.Down = append(r.Down, downNode{Node: id, Reason: noHeartbeat})
		}
	}
	return r
}

// runsSpec says whether in runs app, whose fingerprint on in's node is fp:
// a runner of a release before fingerprints reports only the version.
func runsSpec(in state.Instance, app *spec.App, fp string) bool {
	return in.Fingerprint == fp || in.Fingerprint == "" && in.Version == app.Version
}

// settling says whether in is healthy in the process healthy holds for
// it, and how long until it has been so for min_healthy (0 or less: it
// has).
func settling(app *spec.App, in state.Instance, healthy map[string]healthyRun, now time.Time) (time.Duration, bool) {
	h, ok := healthy[in.Node+"/"+in.ID]
	if in.State != state.Healthy || !ok || h.pid != in.PID || h.restarts != in.Restarts {
		return 0, false
	}
	return app.Health.MinHealthy.D() - now.Sub(h.since), true
}

// nodes reads every live heartbeat, with when the NATS server stored it,
// and sets serverAhead from the server's clock: a heartbeat's age is
// counted on the clock that stamped Stored, neither the node's nor this
// machine's, which may both be wrong.
func (e *env) nodes(ctx context.Context) ([]state.Node, error) {
	kv, err := e.kv(ctx, names.NodesBucket)
	if err != nil {
		return nil, err
	}
	var out []state.Node
	err = e.eachEntry(ctx, kv, "heartbeat", func(entry jetstream.KeyValueEntry) {
		var n state.Node
		if err := json.Unmarshal(entry.Value(), &n); err != nil {
			if !e.unreadableNodes[entry.Key()] {
				e.log.Warn("unreadable heartbeat", "node", entry.Key(), "err", err)
				if e.unreadableNodes == nil {
					e.unreadableNodes = map[string]bool{}
				}
				e.unreadableNodes[entry.Key()] = true
			}
			return
		}
		if n.ID == "" {
			n.ID = entry.Key()
		}
		n.Stored = entry.Created()
		out = append(out, n)
	})
	if err != nil {
		return nil, err
	}
	e.readServerClock(ctx, kv)
	return out, nil
}

// readServerClock sets serverAhead from the time at which the server that
// holds kv's stream (its leader, in a cluster) answers for it: the clock
// that stamps its entries. When it does not answer, the last offset, or
// none, stays.
func (e *env) readServerClock(ctx context.Context, kv jetstream.KeyValue) {
	if ahead, ok := e.serverOffset(ctx, kv.Bucket(), bucketInfo(kv)); ok {
		e.serverAhead = ahead
	}
}

// bucketNow is the clock of the server that holds kv's stream, or, when
// it does not answer, the NATS server's as last read (serverNow).
func (e *env) bucketNow(ctx context.Context, kv jetstream.KeyValue) time.Time {
	ahead, ok := e.serverOffset(ctx, kv.Bucket(), bucketInfo(kv))
	if !ok {
		return e.serverNow()
	}
	return e.clock().Add(ahead)
}

// bucketInfo asks for the info of kv's stream, until it is answered.
func bucketInfo(kv jetstream.KeyValue) func(context.Context) (*jetstream.StreamInfo, error) {
	return func(ctx context.Context) (*jetstream.StreamInfo, error) {
		st, err := untilAnswered(ctx, kv.Status)
		if err != nil {
			return nil, err
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return nil, fmt.Errorf("status of bucket %s: not a KV bucket's", kv.Bucket())
		}
		return bs.StreamInfo(), nil
	}
}

// serverOffset is how far the clock of the server that answers info (a
// stream's leader) is ahead of this machine's; false when it does not
// answer, or gives no time.
func (e *env) serverOffset(ctx context.Context, stream string, info func(context.Context) (*jetstream.StreamInfo, error)) (time.Duration, bool) {
	octx, cancel := e.op(ctx)
	defer cancel()
	asked := e.clock()
	si, err := info(octx)
	if err != nil {
		e.log.Debug("read the NATS server's clock", "stream", stream, "err", err)
		return 0, false
	}
	if si.TimeStamp.IsZero() {
		return 0, false
	}
	// The server read its clock between the request and the answer.
	local := asked.Add(e.clock().Sub(asked) / 2)
	return si.TimeStamp.Sub(local), true
}

// startAgo has cfg start with the messages stream stored since ago, counted
// on the clock of the server that stamped them: a ctl an hour behind it
// would otherwise ask for an hour too many, or one ahead for lines from
// the future.
func (e *env) startAgo(ctx context.Context, stream jetstream.Stream, name string, cfg *jetstream.OrderedConsumerConfig, since time.Duration) {
	if ahead, ok := e.serverOffset(ctx, name, func(ctx context.Context) (*jetstream.StreamInfo, error) { return stream.Info(ctx) }); ok {
		e.serverAhead = ahead
	}
	start := e.serverNow().Add(-since)
	cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
}

// clock is this machine's time.
func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// serverNow is the NATS server's clock, as of the last heartbeats read.
func (e *env) serverNow() time.Time { return e.clock().Add(e.serverAhead) }
