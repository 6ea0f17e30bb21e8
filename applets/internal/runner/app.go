package runner

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/sandbox"
)

// app reconciles one app on this node, on its own goroutine: downloads,
// rollouts and stops of one app never wait for another.
type app struct {
	r    *Runner
	name string
	log  *slog.Logger
	wake chan struct{}

	mu sync.Mutex
	// raw is the desired spec as stored; nil once the app is deleted.
	raw []byte
	rev uint64
	// current is the last spec that parsed; specErr why the last one was
	// not applied (invalid or refused).
	current *spec.App
	specErr string
	insts   []*instance
	// halted is the new instance a rollout gave up waiting for: nothing
	// else reconciles an unchanged spec, so its turning healthy later must
	// resume the rollout, or the old instance would run beside it for good.
	halted *instance
	// served is the revision of the last instance replace stopped while
	// it was healthy, until an instance of a later one has been healthy
	// for min_healthy: a new instance that fails is replaced by one of
	// it, though what ran in the slot meanwhile (a revision cut short by
	// a newer spec before it turned healthy) never served. specs keeps
	// its binary, files and sealed secrets cached, as no instance may run
	// it meanwhile.
	served *revision
	// rolledBack is the last state of the new instance replace stopped
	// to start served's revision again: failed, saying why, listed in the
	// heartbeats until the next spec. Unlisted, it would be forgotten by
	// ctl's --wait, which would then wait until its --timeout.
	rolledBack *state.Instance
	// rollbacks counts the times replace started served's revision again,
	// for narun_runner_rollbacks_total: rolledBack tells only of the last,
	// and only until the next spec.
	rollbacks uint64

	// warned is the last spec whose outdated rules were logged, so that a
	// reconcile of the same spec does not log them again; only run uses it.
	warned []byte

	// cacheMu orders the writes of the cached spec, so that a retry of
	// one that failed never lands after a newer one.
	cacheMu sync.Mutex
	// uncached is the spec whose caching failed, under mu, with its
	// sequence; nil when the cached spec is the one applied.
	uncached    []byte
	uncachedSeq uint64
}

// revision is a spec an instance ran, with its fingerprint.
type revision struct {
	sp *spec.App
	fp string
}

// instance is one supervised process slot of the app.
type instance struct {
	slot int
	fp   string
	// sp is the spec the instance runs, which a failed replacement on the
	// host network starts again (replace). Only the app's goroutine sets
	// it (start, adopt), holding the app's mu; other goroutines read it
	// holding that mu.
	sp   *spec.App
	dir  string
	sup  *supervisor.Supervisor
	logs *logLimit

	mu         sync.Mutex
	bridge     context.CancelFunc
	bridgeDone chan struct{}
	// service is the subject the bridge serves (bridgeService), which
	// follows the app's current spec; bridgeSpec and bridgeID are what
	// the running bridge was started with, to start it again on another.
	service    string
	bridgeSpec *spec.App
	bridgeID   string
	// healthySince is when the instance turned healthy, zero while it is
	// not; servedBefore says it stayed so for its min_healthy before it
	// stopped being so (noteHealth).
	healthySince time.Time
	servedBefore bool
}

func newApp(r *Runner, name string) *app {
	return &app{r: r, name: name, log: r.log.With("app", name), wake: make(chan struct{}, 1)}
}

func (a *app) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *app) setSpec(raw []byte, rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if raw != nil && bytes.Equal(raw, a.raw) {
		a.rev = max(a.rev, rev)
		return
	}
	a.raw, a.rev = raw, rev
	a.poke()
}

// cacheRefused is why the app's cached spec was not applied while no
// earlier one was, which leaves it nothing to run; nil otherwise. A spec
// refused as narun-apps holds it (revision above 0) is not the cache's:
// nothing of it was cached, on any node.
func (a *app) cacheRefused() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current != nil || a.specErr == "" || a.rev != 0 {
		return nil
	}
	return errors.New(a.specErr)
}

func (a *app) hasSpec() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.raw != nil
}

func (a *app) instanceList() []*instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.insts)
}

// specs are the specs the app may still start or runs: the current one,
// the revision that served, which replace starts again when a new one
// fails, and those of its instances, which an unfinished rollout keeps
// running and restarts. Each needs its binary, files and sealed secrets
// cached, as NATS may be unreachable when it starts. A current spec that
// wants no replica on this node (not selected, replicas = 0) starts
// nothing here: only a new spec, which comes from NATS, can, and kept for
// it, its binary and secrets would stay on the node for as long as the
// app exists.
func (a *app) specs() []*spec.App {
	a.mu.Lock()
	defer a.mu.Unlock()
	var l []*spec.App
	if a.current != nil && a.current.ReplicasOn(a.r.node, a.r.labels) > 0 {
		l = append(l, a.current)
	}
	if a.served != nil {
		l = append(l, a.served.sp)
	}
	for _, in := range a.insts {
		l = append(l, in.sp)
	}
	return l
}

// runsHere tells whether the app's current spec wants a replica on this
// node, or an instance of it still runs here.
func (a *app) runsHere() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return (a.current != nil && a.current.ReplicasOn(a.r.node, a.r.labels) > 0) || len(a.insts) > 0
}

// digests are the binaries the app still needs.
func (a *app) digests() []string {
	var d []string
	for _, sp := range a.specs() {
		if b, ok := sp.Binary(runtime.GOARCH); ok {
			d = append(d, b.SHA256)
		}
	}
	return d
}

// rolledBackState is the state of the instance replace last stopped to
// start the revision that served again, if it did since the last spec.
func (a *app) rolledBackState() (state.Instance, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rolledBack == nil {
		return state.Instance{}, false
	}
	return *a.rolledBack, true
}

// rollbackCount is how many times replace started the revision that
// served again.
func (a *app) rollbackCount() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rollbacks
}

func (a *app) specPath() string { return filepath.Join(a.r.specsDir(), a.name+".toml") }
func (a *app) dir() string      { return filepath.Join(a.r.instancesDir(), a.name) }

func (a *app) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			a.stop(a.instanceList())
			// Only an app delete removed it otherwise: each stop of the
			// runner left an empty directory per app, which nothing
			// starts from. One that still holds an instance's directory
			// (a mount that could not be detached) stays, as that does.
			if err := os.Remove(a.dir()); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
				a.log.Warn("remove app directory", "err", err)
			}
			// The runner would remove the links of every app once all
			// stopped, one app after the other: with a thousand apps that
			// took half a second of the stop (docs/PERFORMANCE.md, "Many
			// instances"). Each app removes its own while the others stop.
			if err := a.r.links.prune(a.name, func() []string { return nil }); err != nil {
				a.log.Warn("remove the links binaries were executed by", "err", err)
			}
			return
		case <-a.wake:
		}
		a.mu.Lock()
		raw, rev := a.raw, a.rev
		a.mu.Unlock()
		a.log.Debug("reconcile", "revision", rev, "deleted", raw == nil)
		if raw == nil {
			// Before the stop, which may take the instances' stop_timeout:
			// a runner that dies meanwhile and starts without NATS would
			// run the deleted app again from its cached spec.
			uncached := a.uncache()
			ran := a.instanceList()
			a.stop(ran)
			if err := removeTree(a.dir(), a.log); err != nil {
				a.log.Warn("remove app directory", "err", err)
			}
			a.mu.Lock()
			a.current, a.served, a.rolledBack = nil, nil, nil
			a.mu.Unlock()
			a.pruneLinks()
			if a.r.forget(a) {
				// Every node reads every app's spec: only those that ran
				// it, or kept it to start, have a deletion to tell of.
				if uncached || len(ran) > 0 {
					a.log.Info("app deleted")
				} else {
					a.log.Debug("app deleted; it ran nothing here")
				}
				a.r.collect()
				return
			}
			continue
		}
		sp, seq, outdated, err := a.r.parse(a.name, raw)
		a.mu.Lock()
		if err != nil {
			a.specErr = err.Error()
		} else {
			a.current, a.specErr = sp, ""
		}
		a.mu.Unlock()
		if err != nil {
			// Running instances are left alone: a bad or refused spec
			// must not take a working app down.
			args := []any{"revision", rev, "err", err}
			if rev == 0 {
				// Read from the cache, not from narun-apps: a damaged file
				// reads as unsigned or invalid, and is the thing to look at.
				args = append(args, "cached_spec", a.specPath())
			}
			a.log.Error("spec not applied; instances left as they are", args...)
			continue
		}
		if outdated != nil && !bytes.Equal(raw, a.warned) {
			a.warned = raw
			a.log.Warn("stored spec breaks rules narun ctl deploy now enforces; deploying it again is refused until they are fixed", "revision", rev, "problems", outdated.Error())
		}
		if sp.ReplicasOn(a.r.node, a.r.labels) > 0 {
			a.cache(raw, seq)
		} else {
			// A spec that starts nothing here is none to start from when
			// NATS is away, and the one cached before it, which did,
			// must not start either.
			a.uncache()
			a.accept(raw, seq)
		}
		a.reconcile(ctx, sp)
	}
}

// cache writes raw, signed with seq, as the app's cached spec, and only
// then keeps seq as accepted: kept first, a power cut between the two, or
// a write that fails, would leave the sequence ahead of the cached spec,
// and a restart without NATS would refuse that spec and leave the app
// down. A write that fails (a full disk) holds seq in memory only, which
// refuses the specs below it all the same, and is tried again by
// retryCache: the cache would otherwise keep the spec before it for good,
// since an unchanged spec is never applied again, and a restart without
// NATS would run that one. A file that holds raw already, as at every
// start, is left alone (keepFile).
func (a *app) cache(raw []byte, seq uint64) {
	a.cacheMu.Lock()
	defer a.cacheMu.Unlock()
	err := keepFile(a.specPath(), raw, 0o600)
	a.mu.Lock()
	a.uncached, a.uncachedSeq = nil, 0
	if err != nil {
		a.uncached, a.uncachedSeq = raw, seq
	}
	a.mu.Unlock()
	if err != nil {
		a.r.order.Hold(a.name, seq, raw)
		a.log.Warn("cache spec; tried again at the next resync, its sequence kept only then", "err", err)
		return
	}
	a.accept(raw, seq)
}

// accept keeps seq, that of raw, which the cache holds, as accepted.
func (a *app) accept(raw []byte, seq uint64) {
	if err := a.r.order.Accept(a.name, seq, raw); err != nil {
		a.log.Warn("sequence of the spec not kept: after a restart this node would accept an earlier spec stored again", "sequence", seq, "err", err)
	}
}

// retryCache writes the spec whose caching failed, if any, and keeps its
// sequence.
func (a *app) retryCache() {
	a.cacheMu.Lock()
	defer a.cacheMu.Unlock()
	a.mu.Lock()
	raw, seq := a.uncached, a.uncachedSeq
	a.mu.Unlock()
	if raw == nil {
		return
	}
	if err := writeFileAtomic(a.specPath(), raw, 0o600); err != nil {
		a.log.Debug("cache spec again", "err", err)
		return
	}
	a.mu.Lock()
	a.uncached, a.uncachedSeq = nil, 0
	a.mu.Unlock()
	a.log.Info("cached spec written, after an earlier write failed")
	a.accept(raw, seq)
}

// uncache removes the app's cached spec, with any retry due; true if
// there was one.
func (a *app) uncache() bool {
	a.cacheMu.Lock()
	defer a.cacheMu.Unlock()
	a.mu.Lock()
	a.uncached, a.uncachedSeq = nil, 0
	a.mu.Unlock()
	err := os.Remove(a.specPath())
	if err != nil && !os.IsNotExist(err) {
		a.log.Warn("remove cached spec", "err", err)
	}
	return err == nil
}

// parse reads a spec of app name as narun-apps stores it, after checking
// its signature and, if signed, its sequence, which it returns for cache
// to keep: a spec no trusted key signed is never read, let alone cached.
func (r *Runner) parse(name string, raw []byte) (sp *spec.App, seq uint64, outdated, err error) {
	body, err := r.signatures.Verify(raw)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("spec refused: %w", err)
	}
	// The sequence counts only when signed: anyone could set it otherwise.
	if r.signatures.Enabled() {
		if seq, err = signing.Sequence(body); err == nil {
			err = r.order.Check(name, seq, raw)
		}
		if err != nil {
			return nil, 0, nil, fmt.Errorf("spec refused: %w", err)
		}
	}
	// A stored spec ran under the narun that stored it: rules that came
	// later must not stop it here (spec.ParseStored).
	sp, outdated, err = spec.ParseStored(name+".toml", body)
	if err == nil {
		err = sp.StoredUnder(name)
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("invalid spec: %w", err)
	}
	return sp, seq, outdated, nil
}

// reconcile converges the instances to sp: the ones of slots no longer
// wanted stop, missing ones start, and the ones whose fingerprint changed
// are replaced, one slot at a time, by a new instance that is healthy
// before the old one stops, but for an [http] port app on the host network
// (replace). An old one that does not serve (hasServed) stops even when
// the new one does not turn healthy.
func (a *app) reconcile(ctx context.Context, sp *spec.App) {
	a.mu.Lock()
	dropped := a.rolledBack != nil
	a.halted, a.rolledBack = nil, nil
	a.mu.Unlock()
	if dropped {
		// The heartbeats list it; its going changes no instance's state,
		// which is what otherwise asks for one.
		a.r.poke()
	}
	want := sp.ReplicasOn(a.r.node, a.r.labels)
	fp := sp.Fingerprint(runtime.GOARCH)
	a.mu.Lock()
	if a.served != nil && a.served.fp == fp {
		// The revision that served, stopped by a replace still
		// unfinished, gets what adopt gives its instances: a failed
		// replace starts it again as the last spec of it says.
		a.served = &revision{sp: adopted(a.served.sp, sp), fp: fp}
	}
	a.mu.Unlock()
	var extra []*instance
	for _, in := range a.instanceList() {
		// The route is the app's, whatever build an instance runs: the
		// gateway sends its requests to the service sp names.
		in.moveBridge(a.r, bridgeService(sp))
		// stop_signal, stop_timeout and [restart] are not in the
		// fingerprint: the instances keep running, and stop and restart
		// as the spec now says. One that sp replaces (its fingerprint
		// differs: another build, other args) stops and restarts as the
		// spec of its build said, as Kubernetes and Nomad stop an old pod
		// or allocation with its own grace period and signal: the new
		// build's would cut short an old one that needs longer to drain,
		// or send it a signal it does not handle, and its [restart],
		// written for the new build, would give up an old one that a
		// halted rollout keeps serving at its first crash.
		if in.fp == fp {
			a.adopt(in, sp)
		}
		if in.slot >= want {
			extra = append(extra, in)
		}
	}
	a.stop(extra)
	// A slot with nothing running gets its instance at once: only the
	// replacement of a running one waits for the slot before, so a halted
	// rollout holds back no replica added or ended meanwhile.
	for slot := range want {
		var running, ended []*instance
		for _, in := range a.instanceList() {
			switch {
			case in.slot != slot:
			case in.sup.Status().State.Final():
				ended = append(ended, in)
			default:
				running = append(running, in)
			}
		}
		if len(running) == 0 {
			a.stop(ended)
			a.start(ctx, sp, slot, fp, "")
		}
	}
	for slot := range want {
		var cur, old, failed []*instance
		for _, in := range a.instanceList() {
			switch {
			case in.slot != slot:
			case in.sup.Status().State.Final():
				// Any change of the spec gives a failed or exited instance
				// a new start, with the restart policy it now says.
				failed = append(failed, in)
			case in.fp == fp:
				cur = append(cur, in)
			default:
				old = append(old, in)
			}
		}
		a.stop(failed)
		old = a.stopUnfinished(old)
		if len(cur) == 0 && len(old) > 0 && sharePort(old[0].sp, sp) {
			if !a.replace(ctx, old[0], sp, slot, fp) {
				return
			}
			continue
		}
		if len(cur) == 0 {
			cur = append(cur, a.start(ctx, sp, slot, fp, ""))
		}
		if len(old) == 0 {
			// A newer spec of the same fingerprint, or one that found the
			// slot empty, cut short a replace: its instance is still the
			// one whose failure must start the revision that served again.
			if a.replacing(sp, fp) && !a.settle(ctx, cur[len(cur)-1], sp, slot) {
				return
			}
			continue
		}
		healthy, interrupted := a.waitHealthy(ctx, cur[len(cur)-1], sp)
		if interrupted {
			return
		}
		if !healthy && !old[0].hasServed() {
			// Kept, it would serve no more than it did, restarting beside
			// the new one until that one turned healthy, or for good.
			a.stop(old)
			a.halt(cur[len(cur)-1], "rollout halted: new instance not healthy; the old one, which did not serve either, stopped")
			return
		}
		if !healthy {
			a.halt(cur[len(cur)-1], "rollout halted: new instance not healthy, old one kept until it is")
			return
		}
		a.mu.Lock()
		a.served = nil
		a.mu.Unlock()
		a.stop(old)
	}
}

// adopt gives an instance of sp's fingerprint what sp says that is not in
// the fingerprint and applies to a running instance: its stop values, its
// [restart], and the files it pins. A start after an exit places what the
// store holds now: with the pins it started with, that start would be
// refused for good, the store holding only the new content. Its spec
// keeps them too, as a failed replace starts the revision that served
// again from it (settle): that copy must stop and restart as the instance
// it stands for did. The rest of its spec stays as it started: its health
// check, and the sandbox's bridges for it, follow the [health] of its
// first start.
func (a *app) adopt(in *instance, sp *spec.App) {
	in.sup.SetStop(sp.StopSig(), sp.StopTimeout.D())
	in.sup.SetPolicy(restartPolicy(sp))
	a.mu.Lock()
	in.sp = adopted(in.sp, sp)
	a.mu.Unlock()
}

// adopted is prev, a spec of sp's fingerprint, with what adopt gives an
// instance of sp.
func adopted(prev, sp *spec.App) *spec.App {
	kept := *prev
	kept.FileDigests = sp.FileDigests
	kept.StopSignal, kept.StopTimeout, kept.Restart = sp.StopSignal, sp.StopTimeout, sp.Restart
	return &kept
}

// launchSpec is the spec in starts with now: the one it was started with,
// with what adopt gave it since.
func (a *app) launchSpec(in *instance) *spec.App {
	a.mu.Lock()
	defer a.mu.Unlock()
	return in.sp
}

// sharePort says whether an instance of sp would listen on the port one
// of prev listens on: both on the host's network with the same [http]
// port. Each in a network namespace of its own, they never clash. Only
// [http] port counts, the one port the runner knows of: an app that
// listens on a port its args name rolls as any other, and a new instance
// that finds its port held crashes or never turns healthy, which halts
// the rollout with the old one serving on.
func sharePort(prev, sp *spec.App) bool {
	return sp.HTTP.Port > 0 && sp.HTTP.Port == prev.HTTP.Port && !ownNetwork(prev) && !ownNetwork(sp)
}

// ownNetwork says whether each instance of sp has a network namespace of
// its own, reached from the runner through the sandbox's bridges.
func ownNetwork(sp *spec.App) bool {
	return sp.Mode == spec.ModeSandbox && sp.Sandbox.Network != "" && sp.Sandbox.Network != sandbox.NetworkHost
}

// replace stops prev and only then starts the slot's instance of sp, as
// both would listen on one port (sharePort): the slot serves nothing from
// prev's stop until the new one is healthy. The new one must stay healthy
// for min_healthy as in a rollout; one that does not halts the rollout,
// and the last revision that served (served: prev's, if it was healthy)
// starts again, for a version that fails must not take the app down. It
// reports whether the rollout goes on to the next slot.
func (a *app) replace(ctx context.Context, prev *instance, sp *spec.App, slot int, fp string) bool {
	if prev.sup.Status().State == state.Healthy {
		// Set before the stop, so that digests always names its binary.
		a.mu.Lock()
		a.served = &revision{sp: prev.sp, fp: prev.fp}
		a.mu.Unlock()
	}
	a.stop([]*instance{prev})
	return a.settle(ctx, a.start(ctx, sp, slot, fp, ""), sp, slot)
}

// replacing says whether a replace towards sp is unfinished: a revision
// that served was stopped for it (served), and no instance of sp or of a
// spec after it has been healthy for min_healthy since.
func (a *app) replacing(sp *spec.App, fp string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served != nil && a.served.fp != fp && sharePort(a.served.sp, sp)
}

// settle waits for in, the slot's new instance of sp started by replace,
// to be healthy for min_healthy; one that is not halts the rollout and
// the revision that served starts again in its place. It reports whether
// the rollout goes on to the next slot.
func (a *app) settle(ctx context.Context, in *instance, sp *spec.App, slot int) bool {
	healthy, interrupted := a.waitHealthy(ctx, in, sp)
	a.mu.Lock()
	served := a.served
	if healthy {
		a.served = nil
	}
	a.mu.Unlock()
	switch {
	case interrupted:
		return false
	case healthy:
		return true
	case served == nil:
		a.halt(in, "rollout halted: new instance not healthy, and the old one, stopped first as both listen on the [http] port on the host network, did not serve either, nor did any revision since one last did: the app is down until the new one turns healthy")
		return false
	}
	st := in.sup.Status()
	a.stop([]*instance{in})
	why := fmt.Sprintf("rollout of %s halted: instance %s not healthy (%s", sp.Version, st.ID, st.State)
	if st.Reason != "" {
		why += ": " + st.Reason
	}
	why += fmt.Sprintf("); %s, the last revision that served, started again, stopped for it as both listen on [http] port %d on the host network", served.sp.Version, sp.HTTP.Port)
	failed := in.sup.Status()
	failed.State, failed.Reason, failed.Since = state.Failed, why, time.Now()
	a.mu.Lock()
	a.rolledBack = &failed
	// Counted before the start, so that whoever sees the revision started
	// again sees it counted.
	a.rollbacks++
	a.mu.Unlock()
	a.r.publishEvent(failed)
	a.start(ctx, served.sp, slot, served.fp, why)
	a.log.Warn("rollout halted: new instance not healthy; the last revision that served, stopped first as both listen on the [http] port on the host network, started again: the new one is tried again at the next deploy or narun ctl app restart",
		"instance", st.ID, "state", st.State, "restarts", st.Restarts, "reason", st.Reason, "version", sp.Version, "restored_version", served.sp.Version)
	return false
}

// stopUnfinished stops the instances of a slot's old ones that an
// unfinished rollout started (halted, or cut short by this spec) and
// returns the one left: the one serving, healthy, else the first started,
// which the slot had before. Kept, each deploy of a version that never
// turns healthy would add one more instance to the slot, restarting for
// ever beside the others; Kubernetes scales such a rollout's pods down
// first too.
func (a *app) stopUnfinished(old []*instance) []*instance {
	if len(old) < 2 {
		return old
	}
	keep := old[0]
	for _, in := range old {
		if in.sup.Status().State == state.Healthy {
			keep = in
			break
		}
	}
	a.stop(slices.DeleteFunc(slices.Clone(old), func(in *instance) bool { return in == keep }))
	return []*instance{keep}
}

// halt leaves a rollout waiting for in to turn healthy; msg says what
// serves meanwhile.
func (a *app) halt(in *instance, msg string) {
	a.mu.Lock()
	a.halted = in
	a.mu.Unlock()
	st := in.sup.Status()
	a.log.Warn(msg, "instance", st.ID, "state", st.State, "restarts", st.Restarts, "reason", st.Reason)
	// It may have turned healthy before it was marked halted, unseen by
	// observe.
	if st.State == state.Healthy {
		a.poke()
	}
}

// waitHealthy waits for a new instance to have been healthy for
// [health] min_healthy; interrupted is set when a newer spec or a shutdown
// cut the wait. Healthy once is not enough: an app that passes its first
// check and crashes a moment later would take its slot from one that
// serves. Each state change restarts Since, so a restart or a turn
// unhealthy starts the wait again, as ctl's --wait counts it.
func (a *app) waitHealthy(ctx context.Context, in *instance, sp *spec.App) (healthy, interrupted bool) {
	minHealthy := sp.Health.MinHealthy.D()
	deadline := time.NewTimer(sp.Health.StartGrace.D() + minHealthy + a.r.rolloutSlack)
	defer deadline.Stop()
	for {
		ch := in.sup.Changed()
		st := in.sup.Status()
		var settled <-chan time.Time
		switch {
		case st.State == state.Healthy:
			left := minHealthy - time.Since(st.Since)
			if left <= 0 {
				return true, false
			}
			settled = time.After(left)
		case st.State.Final():
			return false, false
		}
		select {
		case <-ch:
		case <-settled:
		case <-deadline.C:
			return false, false
		case <-a.wake:
			a.poke()
			return false, true
		case <-ctx.Done():
			return false, true
		}
	}
}

// start creates and runs a new instance in slot; why, if not empty, is
// the reason its first event gives for the start.
func (a *app) start(ctx context.Context, sp *spec.App, slot int, fp, why string) *instance {
	id := fmt.Sprintf("%d-%s", slot, randomHex(3))
	// The route is the current spec's, also for a revision that served
	// started again (settle).
	a.mu.Lock()
	route := cmp.Or(a.current, sp)
	a.mu.Unlock()
	in := &instance{slot: slot, fp: fp, sp: sp, dir: filepath.Join(a.dir(), id), logs: newLogLimit(a.r.publishLog, a.r.logTimer, a.log), service: bridgeService(route)}
	known := &microResponders{}
	in.sup = supervisor.New(supervisor.Config{
		Instance: state.Instance{App: a.name, Node: a.r.node, ID: id, Slot: slot, Version: sp.Version, Fingerprint: fp, Reason: why},
		Prepare: func(ctx context.Context) (supervisor.InstanceLaunch, error) {
			// Who answers before this process starts is not it: a service
			// that does not name its instance in its metadata cannot be
			// told from the other replicas otherwise. Taken at every start,
			// the first of a scale-up included, as replicas that came up
			// since the last start (on this node or another) answer too,
			// but for the restart of an instance that named itself: the
			// same binary and spec name it again, and a crash restart
			// need not wait for the listing. The listing runs beside the
			// fetch and placement, which it would otherwise lengthen by
			// its 300 ms.
			pinned := a.launchSpec(in)
			if sp.Health.Type != spec.HealthMicro || known.named.Load() {
				return a.r.prepare(ctx, pinned, id, in.dir)
			}
			listed := make(chan map[string]bool, 1)
			go func() { listed <- a.r.responders(ctx, sp.Health.Service) }()
			launch, err := a.r.prepare(ctx, pinned, id, in.dir)
			known.setBaseline(<-listed)
			return launch, err
		},
		Command: a.r.opts.Command,
		Policy:  restartPolicy(sp),
		Health: supervisor.Health{
			Check:        a.r.healthCheck(sp, id, known),
			Interval:     sp.Health.Interval.D(),
			Timeout:      sp.Health.Timeout.D(),
			Failures:     sp.Health.Failures,
			StartGrace:   sp.Health.StartGrace.D(),
			RestartAfter: sp.Health.RestartAfter,
		},
		StopSignal:  sp.StopSig(),
		StopTimeout: sp.StopTimeout.D(),
		OnChange: func(st state.Instance) {
			a.r.publishEvent(st)
			a.observe(in, sp, st)
		},
		OnLog: in.logs.line,
		// The admin page shows lastLines; NARUN_LOGS has the rest. Kept
		// lines are up to 8 KiB each, for every instance of the node.
		KeepLines: lastLines,
		Logger:    a.log,
	})
	a.mu.Lock()
	a.insts = append(a.insts, in)
	a.mu.Unlock()
	a.r.publishEvent(in.sup.Status())
	go in.sup.Run(ctx)
	return in
}

// restartPolicy is the supervisor's form of sp's [restart].
func restartPolicy(sp *spec.App) supervisor.Policy {
	return supervisor.Policy{
		Mode:       sp.Restart.Policy,
		Initial:    sp.Restart.InitialBackoff.D(),
		Max:        sp.Restart.MaxBackoff.D(),
		Jitter:     sp.Restart.Jitter,
		ResetAfter: sp.Restart.ResetAfter.D(),
		GiveUp:     sp.Restart.MaxFailures,
	}
}

// observe reacts to an instance's state changes: it records the process
// group for the next runner to clean up after a crash of this one, resumes
// a rollout halted for it, and bridges a plain-HTTP app while it is healthy.
func (a *app) observe(in *instance, sp *spec.App, st state.Instance) {
	switch {
	case st.State == state.Running && st.PID > 0:
		if err := writePIDFile(in.dir, st.PID); err != nil {
			a.log.Warn("record process group", "err", err)
		}
	case !st.State.Up():
		// The supervisor killed the group before it said so. Kept, the
		// record would name a process group id that another program may
		// be given meanwhile, which the next runner, after a crash of
		// this one, would kill as this instance's leftovers.
		if err := os.Remove(filepath.Join(in.dir, "pid")); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("remove the record of an ended process group", "err", err)
		}
	}
	in.noteHealth(st, sp.Health.MinHealthy.D())
	if st.State == state.Healthy {
		a.mu.Lock()
		resume := a.halted == in
		if resume {
			a.halted = nil
		}
		a.mu.Unlock()
		if resume {
			a.log.Info("halted rollout resumes: new instance healthy", "instance", st.ID)
			a.poke()
		}
	}
	if sp.HTTP.Port == 0 {
		return
	}
	switch {
	case st.State == state.Healthy:
		in.startBridge(a.r, sp, st.ID)
	case st.State != state.Running:
		in.stopBridge()
	}
}

// noteHealth records, from the instance's state changes, whether it was
// healthy for minHealthy, its spec's min_healthy: the time a rollout waits
// for before it takes a new instance for one that serves.
func (in *instance) noteHealth(st state.Instance, minHealthy time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case st.State == state.Healthy:
		if in.healthySince.IsZero() {
			in.healthySince = st.Since
		}
	case !in.healthySince.IsZero():
		if st.Since.Sub(in.healthySince) >= minHealthy {
			in.servedBefore = true
		}
		in.healthySince = time.Time{}
	}
}

// hasServed says whether the instance serves, healthy now, or served
// before, healthy then for its spec's min_healthy: only then is it worth
// keeping beside a new one that is not healthy. A crash loop without a
// check is healthy for a moment at each start, which counts only for its
// moment.
func (in *instance) hasServed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.servedBefore || !in.healthySince.IsZero()
}

// stop stops instances in parallel, waits for them and removes their
// directories.
func (a *app) stop(list []*instance) {
	if len(list) == 0 {
		return
	}
	var bridges []<-chan struct{}
	for _, in := range list {
		bridges = append(bridges, in.stopBridge())
	}
	for _, done := range bridges {
		waitBridge(done)
	}
	for _, in := range list {
		in.sup.Stop()
	}
	for _, in := range list {
		<-in.sup.Done()
		st := in.sup.Status()
		a.r.sandboxes.forget(st.App, st.ID)
		a.r.cpu.forget(st.App, st.ID)
		if err := removeTree(in.dir, a.log); err != nil {
			a.log.Warn("remove instance directory", "dir", in.dir, "err", err)
		}
	}
	a.mu.Lock()
	a.insts = slices.DeleteFunc(a.insts, func(in *instance) bool { return slices.Contains(list, in) })
	a.mu.Unlock()
	// One that had ended (failed, stopped) changed no state here, yet the
	// heartbeats list it until the next one: app status would show it
	// beside the instances that replaced it for a heartbeat_interval.
	a.r.poke()
	a.pruneLinks()
}

// pruneLinks removes the links to builds the app no longer runs.
func (a *app) pruneLinks() {
	if err := a.r.links.prune(a.name, a.digests); err != nil {
		a.log.Warn("remove the links of builds no longer run", "err", err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writePIDFile records pid, its start time and the machine's boot in
// dir/pid.
func writePIDFile(dir string, pid int) error {
	start, err := procStartTime(pid)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "pid"), fmt.Appendf(nil, "%d %d %s\n", pid, start, bootID()), 0o600)
}

// bootID names this boot of the machine, "" where the kernel does not say.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// killStale kills the process groups recorded by instances of an earlier
// runner process and removes their directories: instance ids are new for
// every runner, so whatever is in dir now is left over. Pdeathsig already
// killed each instance's first process; this catches what it forked.
func killStale(dir string, log *slog.Logger) {
	for _, pgid := range killGroups(dir) {
		log.Info("killed process group left by an earlier runner", "pgid", pgid)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if err := removeTree(filepath.Join(dir, e.Name()), log); err != nil {
			log.Warn("remove stale instance directory", "err", err)
		}
	}
}

// killGroups kills the process groups recorded in the pid files of the
// instance directories under dir and returns their ids.
func killGroups(dir string) []int {
	boot := bootID()
	var killed []int
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "*", "*", "pid"))
	for _, f := range pidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid, start time and, from files of this release on, the boot.
		fields := strings.Fields(string(b))
		if len(fields) < 2 {
			continue
		}
		pid, err := strconv.Atoi(fields[0])
		if err != nil || pid <= 1 {
			continue
		}
		start, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		// After a reboot (a power cut) nothing of the earlier runner's
		// is left, and the id is another program's now: a daemon's
		// double fork leaves a group whose id no process has, which the
		// kill below would take for what is left of the instance's.
		if len(fields) > 2 && boot != "" && fields[2] != boot {
			continue
		}
		// A live process under that pid must be ours (same start time);
		// with none, the id can only name what is left of our group.
		if got, err := procStartTime(pid); err == nil && got != start {
			continue
		}
		if syscall.Kill(-pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	return killed
}

// removeTree removes dir and all it holds, but never what is mounted in
// it: an exec app runs as root in the runner's mount namespace, and one
// that stopped with a mount left in its directory (a host directory bound
// there, a tmpfs) would otherwise have os.RemoveAll delete the files of
// that mount, the host's own. Each mount at or below dir is detached
// first; a tree with one that cannot be is left as it is, and one the
// mount table missed is left where it is (removeOnMount).
func removeTree(dir string, log *slog.Logger) error {
	mounts, err := sandbox.MountsUnder(dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w; not removed, in case a mount is in it", dir, err)
	}
	for _, m := range mounts {
		err := unix.Unmount(m, unix.MNT_DETACH)
		switch {
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			// No longer a mount (gone with one detached before it), or
			// gone: nothing to descend into there.
			continue
		case err != nil:
			return fmt.Errorf("remove %s: unmount %s, left mounted there: %w; not removed", dir, m, err)
		}
		log.Warn("unmounted what an instance left mounted in its directory, before removing it", "mount", m)
	}
	return removeOnMount(dir)
}

// removeOnMount removes dir and what it holds on dir's parent's mount, and
// leaves in place each directory on another mount, with what leads to it:
// the mount table read before (sandbox.MountsUnder) is the first guard,
// this the last, as a table that misses a mount is all it takes to delete
// the host's files through it. Directories are opened relative to their
// parent without following links, so no path leads the removal elsewhere.
func removeOnMount(dir string) error {
	parent, err := unix.Open(filepath.Dir(dir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: open its parent: %w", dir, err)
	}
	defer unix.Close(parent)
	mnt, err := mountOf(parent)
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return removeEntry(parent, filepath.Base(dir), dir, mnt)
}

// removeEntry removes name in the directory at fd, path, unless it is a
// directory on a mount other than mnt.
func removeEntry(fd int, name, path string, mnt mountKey) error {
	err := unix.Unlinkat(fd, name, 0)
	switch {
	case err == nil || errors.Is(err, unix.ENOENT):
		return nil
	case !errors.Is(err, unix.EISDIR):
		return fmt.Errorf("remove %s: %w", path, err)
	}
	sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	f := os.NewFile(uintptr(sub), path)
	defer f.Close()
	m, err := mountOf(sub)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if m != mnt {
		return fmt.Errorf("remove %s: another mount is there, not in the mount table when it was read: left in place with what it holds", path)
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("remove %s: list it: %w", path, err)
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, removeEntry(sub, n, filepath.Join(path, n), mnt))
	}
	if err := errors.Join(errs...); err != nil {
		// What is left keeps the directory; its removal would say no
		// more than that.
		return err
	}
	if err := unix.Unlinkat(fd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// mountKey names the mount a file is on: by its id where the kernel gives
// one, else by its device, which tells a bind mount of the same
// filesystem from its source no more than a plain directory.
type mountKey struct {
	id, dev uint64
	byDev   bool
}

// mountOf is the mount of the file open at fd: its id from statx (Linux
// 5.8) or name_to_handle_at (2.6.39, where the filesystem gives handles),
// else its device.
func mountOf(fd int) (mountKey, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx)
	if err == nil && stx.Mask&unix.STATX_MNT_ID != 0 {
		return mountKey{id: stx.Mnt_id}, nil
	}
	if _, id, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err == nil {
		return mountKey{id: uint64(id)}, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return mountKey{}, fmt.Errorf("find the mount it is on: %w", err)
	}
	return mountKey{dev: st.Dev, byDev: true}, nil
}
