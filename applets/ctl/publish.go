package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
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
	// sealedWith is the key id of each secret final uses, as the checks
	// before the write read it, for the warnings about nodes that lack
	// it; a spec that changes is read again after its write (usesAll),
	// and warned of by that read. nil warns of nothing unless the spec
	// changes.
	sealedWith map[string]string
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
		// Conditional writes: a concurrent deploy or rollback of the same
		// app makes one of the two fail instead of silently overwriting
		// the other. Over a deletion too, whose revision the leader gave:
		// nats.go's Create looks for one with a direct get, which a
		// replica behind answers without it.
		err := e.write(ctx, names.AppsBucket, func(ctx context.Context) (err error) {
			p.revision, err = r.apps.Update(ctx, name, r.stored, r.cur.last)
			return err
		})
		if err != nil {
			stop()
			return p, storeSpecError(name, r.verb, err)
		}
	}
	notWritten := func(err error) error { return routesNotWritten(name, p, r.again, err) }
	if err := e.settleRoutes(ctx, r.final, p.revision, r.key, r.verb, notWritten); err != nil {
		stop()
		return p, err
	}
	sealedWith := r.sealedWith
	if p.changed {
		var err error
		if sealedWith, err = e.usesAll(ctx, r.final); err != nil {
			stop()
			return p, notFound("spec of %s stored (revision %d), but what it uses was deleted while this %s ran (image delete --force, files delete or secret delete?), so its instances cannot start: %w; put it back and run the %s again", name, p.revision, r.verb, err, r.verb)
		}
	}
	if p.changed && r.prune {
		e.pruneSuperseded(ctx, r.cur, r.final)
	}
	if r.heartbeats {
		e.warnAbsentNodes(r.nodes, r.final)
		e.warnMissingArch(r.nodes, r.final)
		e.warnNoSandbox(r.nodes, r.final)
		e.warnSecretKeys(r.nodes, r.final, sealedWith)
	}
	if p.w != nil && len(refusing) > 0 {
		stop()
		why := "ctl has no signing key"
		if r.key != nil {
			why = "do not trust ctl's key " + r.key.Public()
		}
		return p, &cli.ExitError{Code: ExitRollout, Err: fmt.Errorf("rollout of %s cannot complete: node(s) %s run only signed specs and %s", name, cli.Shown(strings.Join(refusing, ", ")), why)}
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

// usesAll reads again, once a's spec is stored, what it pins and uses. A
// delete that ran between the checks and the write saw no spec using it:
// image delete --force, files delete past prune_grace, or secret delete,
// which nothing stamps (a deploy does not write secrets). Each of the two
// writes before it reads, so one of them sees the other: secret delete
// looks at the specs again after its own write (secretDelete). One read of
// metadata per object and secret; it returns the key id of each secret,
// as it read them.
func (e *env) usesAll(ctx context.Context, a *spec.App) (sealedWith map[string]string, err error) {
	u, err := e.references(ctx, a)
	if err != nil {
		return nil, err
	}
	problems := u.missing
	for obj, pin := range a.FileDigests {
		if now, ok := u.digests[obj]; ok && now != pin {
			problems = append(problems, fmt.Errorf("file %q now holds sha256 %s…, the spec pins %s…", obj, prefix(now), prefix(pin)))
		}
	}
	if err := e.checkPinned(ctx, names.AppsBucket+"/"+a.Name, nil, a.Binaries); err != nil {
		problems = append(problems, err)
	}
	return u.sealedWith, errors.Join(problems...)
}

// settleRoutes writes the routes of a, the spec of its app stored as
// revision rev, then reads the spec again, until the routes written are
// those of the spec stored. The spec and its routes are two writes: a
// deploy or rollback of the same app that runs whole between them would
// otherwise be left with this command's routes, both reporting success.
// Whichever writes the routes last reads the spec after, so the entry ends
// as the stored spec's without an operator; a write conditional on the
// entry read before would fail one of the two instead, and converge no
// sooner. A spec deleted meanwhile (app delete) has its routes removed, and
// one this ctl does not vouch for (unparsable, or not signed by its key)
// gets no routes from it: the command fails, saying so. A look that fails
// (NATS gone) is only reported: what was written stands, and --wait says
// what became of it. notWritten phrases the failure of a write.
func (e *env) settleRoutes(ctx context.Context, a *spec.App, rev uint64, key *signing.Key, verb string, notWritten func(error) error) error {
	name := a.Name
	// Each turn follows a spec stored by another command meanwhile; that
	// many in a row is churn the operator should hear about.
	for range 5 {
		if err := e.putRoutes(ctx, a, key); err != nil {
			return notWritten(err)
		}
		cur, err := currentSpec(ctx, e, name)
		switch {
		case err != nil:
			e.warnf("could not check that %s did not change meanwhile: %v", name, err)
			return nil
		case cur.rev == 0:
			return e.dropRoutesOfDeleted(ctx, name)
		case cur.rev == rev:
			return nil
		}
		if why := unvouched(key, cur); why != "" {
			return fmt.Errorf("%s changed during this %s: revision %d, stored meanwhile, is %s, so its routes are not written and the routes entry holds this %s's; run the deploy or rollback that should stand again", name, verb, cur.rev, why, verb)
		}
		a, rev = cur.app, cur.rev
	}
	return fmt.Errorf("%s changed during this %s, again each time its routes were written; run it again", name, verb)
}

// unvouched says why the routes of cur, a stored spec, are not for this
// ctl to write, signed with key: "" when they are.
func unvouched(key *signing.Key, cur current) string {
	if cur.app == nil {
		return "not a spec this ctl can parse"
	}
	if key == nil {
		if pub, _ := signing.SignedBy(cur.raw); pub != "" {
			return "signed by " + pub + " and this ctl has no signing key"
		}
	}
	if why := notOurs(key, cur.raw); why != "" {
		return "not signed by this ctl's key (" + why + ")"
	}
	return ""
}
