package ctl

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

// release is a checked and signed spec that is to replace the stored one
// of its app: deploy and rollback store theirs the same way, through
// publish.
type release struct {
	apps jetstream.KeyValue
	// cur is what was stored when the checks read it: the write is
	// conditional on its revision.
	cur current
	// stored is the value to store, signed as nodes read it; final is
	// stored parsed.
	stored []byte
	final  *spec.App
	key    *signing.Key
	// nodes are the heartbeats, read once by the caller; heartbeats says
	// whether they could be read, without which nothing is warned of.
	nodes      []state.Node
	heartbeats bool
	// prune deletes the app's builds that nothing pins any more (deploy);
	// a rollback keeps them, to roll forward again.
	prune bool
	// verb names the command in the error of a lost race.
	verb string
	// again says how to write the routes when only they failed: the
	// command that does it, run again.
	again string
}

// published is what publish stored.
type published struct {
	changed  bool
	revision uint64
	// w follows the rollout when asked to wait: subscribed before the
	// write, so no event is missed. The caller stops it.
	w *waiter
}

// publish stores r.stored, then the app's routes, and warns of the nodes
// that will not run it. With wait, it fails (exit 4) when a selected node
// refuses the spec for its signature: that node reports nothing of it, and
// waiting would only end in the timeout.
func (e *env) publish(ctx context.Context, r release, wait bool) (published, error) {
	name := r.final.Name
	var p published
	if wait {
		w, err := newWaiter(ctx, e, r.final)
		if err != nil {
			return p, err
		}
		p.w = w
	}
	stop := func() {
		if p.w != nil {
			p.w.stop()
		}
	}
	var refusing []string
	if r.heartbeats {
		refusing = e.warnSignedOnly(r.nodes, r.final, r.key)
	}
	// seal keeps the stored value when it holds the same spec signed by
	// the same key; a spec signed by no key or another one changes.
	p.changed, p.revision = !bytes.Equal(r.cur.raw, r.stored), r.cur.rev
	if p.w != nil && !p.changed {
		p.w.ended = map[string]bool{}
	}
	if p.changed {
		octx, cancel := e.op(ctx)
		var err error
		// Conditional writes: a concurrent deploy or rollback of the same
		// app makes one of the two fail instead of silently overwriting
		// the other.
		if r.cur.rev == 0 {
			p.revision, err = r.apps.Create(octx, name, r.stored)
		} else {
			p.revision, err = r.apps.Update(octx, name, r.stored, r.cur.rev)
		}
		cancel()
		if err != nil {
			stop()
			return p, storeSpecError(name, r.verb, err)
		}
	}
	if err := e.putRoutes(ctx, r.final, r.key); err != nil {
		stop()
		return p, routesNotWritten(name, p, r.again, err)
	}
	if err := e.dropRoutesOfDeleted(ctx, r.apps, name); err != nil {
		stop()
		return p, err
	}
	if p.changed && r.prune {
		e.pruneSuperseded(ctx, r.cur, r.final)
	}
	if r.heartbeats {
		e.warnAbsentNodes(r.nodes, r.final)
		e.warnMissingArch(r.nodes, r.final)
		e.warnNoSandbox(r.nodes, r.final)
	}
	if p.w != nil && len(refusing) > 0 {
		stop()
		why := "ctl has no signing key"
		if r.key != nil {
			why = "do not trust ctl's key " + r.key.Public()
		}
		return p, &cli.ExitError{Code: ExitRollout, Err: fmt.Errorf("rollout of %s cannot complete: node(s) %s run only signed specs and %s", name, shown(strings.Join(refusing, ", ")), why)}
	}
	return p, nil
}

// routesNotWritten says that the routes of app failed after its spec was
// stored: the spec rolls out regardless, and an error that named only the
// routes would read as a command that changed nothing.
func routesNotWritten(app string, p published, again string, err error) error {
	what := fmt.Sprintf("spec of %s stored (revision %d), its instances roll out", app, p.revision)
	if !p.changed {
		what = fmt.Sprintf("spec of %s unchanged (revision %d)", app, p.revision)
	}
	return fmt.Errorf("%s, but its routes are not written (gateways keep the earlier ones): %w; %s", what, err, again)
}

// storeSpecError says why a conditional write of app's spec by the command
// verb failed: when another writer got there first, that the command is to
// be run again, since nothing it checked still holds.
func storeSpecError(app, verb string, err error) error {
	if lostRace(err) {
		return fmt.Errorf("store spec of %s: it changed during this %s (another deploy, restart or rollback?); run it again: %w", app, verb, err)
	}
	return fmt.Errorf("store spec of %s: %w", app, err)
}
