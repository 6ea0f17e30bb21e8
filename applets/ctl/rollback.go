package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
)

const (
	flagTo       = "to"
	flagRevision = "revision"
)

func appHistoryCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "history",
		Usage:     "revisions of an app's spec kept in " + names.AppsBucket + ", newest first",
		ArgsUsage: "NAME",
		Description: names.AppsBucket + " keeps the last 10 revisions of each app, deletions included. A revision number\n" +
			"is a sequence of the whole bucket: it orders deploys but does not count one app's.\n" +
			"NOTE says which revision is current, which one only restarted the one before it (app restart:\n" +
			"restarted_at and the file pins changed), which holds the same spec as an earlier one (a rollback),\n" +
			"and which deleted the app.\n" +
			"--revision N prints that revision's spec as stored, without its signature: saved to a file, it\n" +
			"deploys as it is (its [binaries] pin the objects), which brings back an app that was deleted.",
		Flags: []ucli.Flag{
			jsonFlag(),
			&ucli.Uint64Flag{Name: flagRevision, Usage: "print the spec of this revision instead of the list"},
		},
		Action: appAction(stdio, appHistory, func(c *ucli.Context, _ string) error {
			// --revision prints the spec as stored, TOML to deploy as it
			// is: a script asking for JSON must not be handed that.
			if c.IsSet(flagRevision) && c.Bool(flagJSON) {
				return usagef("--%s with --%s: --%s prints the spec as stored (TOML); drop --%s, or --%s for the list in JSON", flagJSON, flagRevision, flagRevision, flagJSON, flagRevision)
			}
			return nil
		}),
	}
}

func appRollbackCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "rollback",
		Usage:     "store an earlier revision of an app's spec again, as a deploy stores one",
		ArgsUsage: "NAME",
		Description: "Without --to, the revision restored is the newest earlier one that differs from the current spec\n" +
			"in more than restarted_at and file pins: the deploy before the current one, not the current one\n" +
			"before an app restart. app history lists the revisions.\n" +
			"The revision is checked as a deploy checks a spec, and nothing is written if a check fails: its\n" +
			"pinned binaries must still be in " + names.BinariesBucket + " (image delete may have removed them), its\n" +
			"secrets and files must exist, with the content it pinned, and its routes must not clash with\n" +
			"another app's. It is signed again with the key deploy signs with; with a key, a revision that\n" +
			"key did not sign is refused, as deploy refuses to build on one. Its routes replace the app's.\n" +
			"As deploy, it refuses a revision that every selected node would refuse for its signature\n" +
			"(--force stores it all the same).\n" +
			"A rollback that finds the spec changed since it read it (a deploy meanwhile) fails and writes\n" +
			"nothing. Restoring the current revision, or one with the same spec, changes nothing (exit 0).\n" +
			"An app deleted with app delete is not brought back: deploy it again from its file.",
		Flags: []ucli.Flag{
			&ucli.Uint64Flag{Name: flagTo, Usage: "revision to restore (app history lists them)", DefaultText: "the previous deploy"},
			&ucli.BoolFlag{Name: flagForce, Usage: "roll back even if every selected node would refuse the spec for its signature"},
			waitFlag(),
			waitTimeoutFlag(),
		},
		Action: appAction(stdio, appRollback, checkRollbackFlags),
	}
}

// revision is one entry of an app's history in narun-apps, as
// `app history --json` prints it.
type revision struct {
	Revision uint64    `json:"revision"`
	Stored   time.Time `json:"stored"`
	// Operation is "put" for a stored spec, "delete" for app delete and
	// "purge" for a purge, which removes every earlier revision.
	Operation string                  `json:"operation"`
	Version   string                  `json:"version"`
	Replicas  int                     `json:"replicas"`
	Binaries  map[string]pinnedBinary `json:"binaries"`
	// SignedBy is the public key of the spec's signature, "" unsigned;
	// SignatureError says why that signature does not hold.
	SignedBy       string `json:"signed_by"`
	SignatureError string `json:"signature_error"`
	Current        bool   `json:"current"`
	// Restart is set on a revision that differs from the spec before it
	// only in restarted_at and file pins: what app restart writes.
	Restart bool `json:"restart"`
	// Files is set on a revision that differs from the spec before it only
	// in file pins: a deploy after files put. Pins are not in the
	// fingerprint, so it restarted nothing and is no restart.
	Files bool `json:"files"`
	// SameAs is the newest earlier revision that holds the same spec (a
	// rollback, or the same file deployed again), 0 when none does.
	SameAs uint64 `json:"same_as"`
	// Error says why the stored spec does not parse.
	Error string `json:"error"`

	raw []byte
	app *spec.App
}

func (r revision) isSpec() bool { return r.Operation == "put" }

func operation(op jetstream.KeyValueOp) string {
	switch op {
	case jetstream.KeyValueDelete:
		return "delete"
	case jetstream.KeyValuePurge:
		return "purge"
	}
	return "put"
}

// history reads the revisions of app that narun-apps keeps, oldest first.
func (e *env) history(ctx context.Context, kv jetstream.KeyValue, app string) ([]revision, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	entries, err := kv.History(octx, app)
	if isNotFound(err) {
		return nil, notFound("app %q has no revisions in %s", app, names.AppsBucket)
	}
	if err != nil {
		return nil, majorityHint(e.nc, fmt.Errorf("read history of %s: %w", app, err))
	}
	revs := make([]revision, 0, len(entries))
	for _, en := range entries {
		// Every key in every revision, a deletion's too: --json prints them.
		r := revision{Revision: en.Revision(), Stored: en.Created(), Operation: operation(en.Operation()), Binaries: map[string]pinnedBinary{}, raw: en.Value()}
		if r.isSpec() {
			// Read as nodes read it, like app status: a spec an earlier
			// ctl stored is shown as it runs.
			a, _, perr := spec.ParseStored(fmt.Sprintf("%s/%s@%d", names.AppsBucket, app, r.Revision), r.raw)
			if perr == nil {
				perr = a.StoredUnder(app)
			}
			if perr != nil {
				r.Error = perr.Error()
			} else {
				r.app, r.Version, r.Replicas, r.Binaries = a, a.Version, a.Replicas, pinnedOf(a.Binaries)
			}
			if pub, serr := signing.SignedBy(r.raw); pub != "" {
				r.SignedBy = pub
				if serr != nil {
					r.SignatureError = serr.Error()
				}
			}
		}
		revs = append(revs, r)
	}
	last := &revs[len(revs)-1]
	last.Current = last.isSpec()
	for i := range revs {
		if !revs[i].isSpec() {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if revs[j].isSpec() && bytes.Equal(signing.StripSequence(signing.Strip(revs[j].raw)), signing.StripSequence(signing.Strip(revs[i].raw))) {
				revs[i].SameAs = revs[j].Revision
				break
			}
		}
		if i > 0 && revs[i].SameAs == 0 && revs[i-1].isSpec() && sameSpec(revs[i-1].app, revs[i].app) {
			prev, cur := revs[i-1].app, revs[i].app
			revs[i].Restart = prev.RestartedAt != cur.RestartedAt
			revs[i].Files = !revs[i].Restart && !maps.Equal(prev.FileDigests, cur.FileDigests)
		}
	}
	return revs, nil
}

// sameSpec reports whether a and b differ at most in what app restart
// changes: restarted_at and the file pins.
func sameSpec(a, b *spec.App) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := *a, *b
	x.RestartedAt, y.RestartedAt = "", ""
	x.FileDigests, y.FileDigests = nil, nil
	return reflect.DeepEqual(x, y)
}

func appHistory(ctx context.Context, c *ucli.Context, e *env, name string) error {
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	revs, err := e.history(ctx, kv, name)
	if err != nil {
		return err
	}
	if c.IsSet(flagRevision) {
		r, err := findRevision(name, revs, c.Uint64(flagRevision))
		if err != nil {
			return err
		}
		raw := signing.StripSequence(signing.Strip(r.raw))
		if isTerminal(e.out()) {
			// Any client that may write narun-apps wrote it: on a
			// terminal its control characters and escape sequences
			// are shown, as logs and tables show them, not acted on.
			// Into a file it stays byte for byte, to deploy as it is.
			lines := strings.Split(string(raw), "\n")
			for i, l := range lines {
				lines[i] = cli.Shown(l)
			}
			raw = []byte(strings.Join(lines, "\n"))
		}
		_, err = e.out().Write(raw)
		return err
	}
	slices.Reverse(revs)
	if c.Bool(flagJSON) {
		return e.printJSON(revs)
	}
	t := e.table("REVISION", "STORED", "VERSION", "REPLICAS", "BINARIES", "SIGNED BY", "NOTE")
	for _, r := range revs {
		stored := r.Stored.Local().Format("2006-01-02 15:04:05 MST")
		if !r.isSpec() {
			note := "app deleted"
			if r.Operation == "purge" {
				note = "purged: earlier revisions removed"
			}
			t.row(strconv.FormatUint(r.Revision, 10), stored, "-", "-", "-", "-", note)
			continue
		}
		var notes []string
		if r.Current {
			notes = append(notes, "current")
		}
		if r.Restart {
			notes = append(notes, "restart")
		}
		if r.Files {
			notes = append(notes, "files")
		}
		if r.SameAs != 0 {
			notes = append(notes, fmt.Sprintf("same as %d", r.SameAs))
		}
		if r.Error != "" {
			notes = append(notes, "invalid: "+firstLine(r.Error))
			t.row(strconv.FormatUint(r.Revision, 10), stored, "-", "-", "-", signer(r), strings.Join(notes, ", "))
			continue
		}
		var bins []string
		for _, arch := range slices.Sorted(maps.Keys(r.Binaries)) {
			bins = append(bins, arch+":"+prefix(r.Binaries[arch].SHA256))
		}
		t.row(strconv.FormatUint(r.Revision, 10), stored, r.Version, strconv.Itoa(r.Replicas), strings.Join(bins, ","), signer(r), strings.Join(notes, ", "))
	}
	return t.flush()
}

// signer says briefly who signed a revision, for a column.
func signer(r revision) string {
	switch {
	case r.SignedBy == "":
		return "unsigned"
	case r.SignatureError != "":
		return "bad signature"
	}
	// The key is long; its first characters tell an operator's few apart.
	pub := strings.TrimPrefix(r.SignedBy, "narun-ed25519:")
	return pub[:min(12, len(pub))] + "…"
}

// findRevision returns the spec revision n of app.
func findRevision(app string, revs []revision, n uint64) (revision, error) {
	i := slices.IndexFunc(revs, func(r revision) bool { return r.Revision == n })
	if i < 0 {
		return revision{}, notFound("revision %d is not in the history of %s (narun ctl app history %s lists the %d kept)", n, app, app, len(revs))
	}
	if !revs[i].isSpec() {
		return revision{}, fmt.Errorf("revision %d of %s is its deletion, not a spec (narun ctl app history %s)", n, app, app)
	}
	return revs[i], nil
}

// rollbackTarget picks the revision to restore from revs (oldest first):
// to, else the newest earlier spec that differs from the current one in
// more than app restart changes.
func rollbackTarget(app string, revs []revision, to uint64) (revision, error) {
	cur := revs[len(revs)-1]
	if !cur.isSpec() {
		return revision{}, notFound("app %q was deleted (revision %d): rollback restores a revision over a deployed spec; deploy the app again from its file, or from a kept revision (narun ctl app history %s --revision N > %s.toml; narun ctl deploy %s.toml)", app, cur.Revision, app, app, app)
	}
	if to != 0 {
		return findRevision(app, revs, to)
	}
	for i := len(revs) - 2; i >= 0; i-- {
		if revs[i].isSpec() && !sameSpec(revs[i].app, cur.app) {
			return revs[i], nil
		}
	}
	return revision{}, notFound("%s has no earlier revision that differs from the current one (%d) in more than a restart (narun ctl app history %s)", app, cur.Revision, app)
}

// passedOver says why each revision between t and the current one, newest
// first, is not what a rollback without --to restores: app history lists
// a restart or a re-pin just below the current revision, and a rollback
// that goes further back than that without a word looks like a wrong pick.
func passedOver(revs []revision, t revision) []string {
	cur := revs[len(revs)-1]
	var why []string
	for i := len(revs) - 2; i >= 0 && revs[i].Revision != t.Revision; i-- {
		why = append(why, fmt.Sprintf("%d (%s)", revs[i].Revision, differsFrom(revs[i], cur)))
	}
	return why
}

// differsFrom says how r, which rollbackTarget passed over, differs from
// cur: it is no spec, or sameSpec holds of the two.
func differsFrom(r, cur revision) string {
	switch {
	case r.Operation == "delete":
		return "the app's deletion"
	case !r.isSpec():
		return "a purge"
	}
	restarted := r.app.RestartedAt != cur.app.RestartedAt
	pins := !maps.Equal(r.app.FileDigests, cur.app.FileDigests)
	switch {
	case restarted && pins:
		return "only restarted_at and file pins differ"
	case restarted:
		return "only restarted_at differs"
	case pins:
		return "only file pins differ"
	}
	return "the same spec"
}

// checkRollbackFlags refuses what no rollback could do, before ctl
// connects (appAction).
func checkRollbackFlags(c *ucli.Context, name string) error {
	if err := checkWaitTimeout(c); err != nil {
		return err
	}
	if c.IsSet(flagTo) && c.Uint64(flagTo) == 0 {
		return usagef("--to 0: revisions start at 1 (narun ctl app history %s lists them)", name)
	}
	return nil
}

func appRollback(ctx context.Context, c *ucli.Context, e *env, name string) error {
	// Read once, as deploy does: the node key, and the warnings about
	// nodes that will not run what is stored.
	nodes, err := e.nodes(ctx)
	heartbeats := err == nil
	if err != nil {
		e.log.Debug("read heartbeats", "err", err)
	}
	key, err := e.signer()
	if err != nil {
		return err
	}
	key = e.nodeSigner(key, nodes)
	apps, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	revs, err := e.history(ctx, apps, name)
	if err != nil {
		return err
	}
	target, err := rollbackTarget(name, revs, c.Uint64(flagTo))
	if err != nil {
		return err
	}
	// --to names the revision: nothing was passed over for it.
	if !c.IsSet(flagTo) {
		if why := passedOver(revs, target); len(why) > 0 {
			e.infof("%s: rolling back to revision %d, the newest earlier one that differs from the current spec (%d) in more than restarted_at and file pins, which app restart and a deploy after files put change; passed over: %s; --to N restores one of them (narun ctl app history %s)",
				name, target.Revision, revs[len(revs)-1].Revision, strings.Join(why, ", "), name)
		}
	}
	// The current spec as the history read it: the write is conditional
	// on its revision, so a deploy since is not overwritten.
	cur := revs[len(revs)-1]
	if target.Revision == cur.Revision {
		// As for a revision that holds the same spec (below): the routes
		// become the spec's, which is how a rollback whose routes failed
		// after its spec was stored writes them.
		if cur.app != nil {
			if err := e.settleRoutes(ctx, cur.app, cur.Revision, key, "rollback", keep); err != nil {
				return err
			}
		}
		fmt.Fprintf(e.out(), "%s: revision %d is the current one; nothing to roll back\n", name, cur.Revision)
		return nil
	}
	var order signedOrder
	if key != nil {
		values := make([][]byte, len(revs))
		for i, r := range revs {
			if r.isSpec() {
				values[i] = append([]byte{}, r.raw...)
			}
		}
		order = e.orderOf(names.AppsBucket, name, key, values, specSequence)
		order.now = e.bucketNow(ctx, apps)
	}
	stored, final, err := e.restorable(ctx, name, target, cur, key, order)
	if err != nil {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("rollback of %s to revision %d refused, nothing written: %w", name, target.Revision, err)}
	}
	if bytes.Equal(stored, cur.raw) {
		// Running a rollback again is how one whose routes failed after
		// its spec was stored writes them; an unchanged entry is left.
		if err := e.settleRoutes(ctx, final, cur.Revision, key, "rollback", keep); err != nil {
			return err
		}
		fmt.Fprintf(e.out(), "%s: revision %d holds the same spec as the current one (%d); nothing to roll back\n", name, target.Revision, cur.Revision)
		return nil
	}
	if err := e.refuseUnrunnable(nodes, heartbeats, final, key, c.Bool(flagForce)); err != nil {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("rollback of %s to revision %d refused, nothing written: %w", name, target.Revision, err)}
	}
	p, err := e.publish(ctx, release{
		apps: apps, cur: current{app: cur.app, raw: cur.raw, rev: cur.Revision, last: cur.Revision},
		stored: stored, final: final, key: key, nodes: nodes, heartbeats: heartbeats, verb: "rollback",
		again: fmt.Sprintf("narun ctl app rollback %s --to %d writes them", name, target.Revision),
	}, c.Bool("wait"))
	if err != nil {
		return err
	}
	// The stored spec changed: one that did not returned above.
	kept := e.warnHealthKept(cur.app, final)
	if p.w == nil {
		fmt.Fprintf(e.out(), "%s %s: rolled back to revision %d, stored as revision %d; runners roll its instances\n", name, final.Version, target.Revision, p.revision)
		return nil
	}
	defer p.w.stop()
	p.w.timeoutHint = kept
	r, err := p.w.wait(ctx, c.Duration(flagTimeout), true)
	if err != nil {
		return rolloutError(err)
	}
	fmt.Fprintf(e.out(), "%s %s: rolled back to revision %d, stored as revision %d; %d instance(s) ready\n", name, final.Version, target.Revision, p.revision, len(r.Ready))
	return nil
}

// restorable checks revision t of app as deploy checks a spec before it
// writes, and returns it as deploy would store it, signed with key, and
// parsed; or why not, naming everything that is missing. cur is the
// stored spec, order what key signed for app before.
func (e *env) restorable(ctx context.Context, app string, t, cur revision, key *signing.Key, order signedOrder) ([]byte, *spec.App, error) {
	if err := refuseUnsigned(key, cur.raw, "the deployed spec of "+app); err != nil {
		return nil, nil, err
	}
	if err := refuseUnsigned(key, t.raw, fmt.Sprintf("revision %d", t.Revision)); err != nil {
		return nil, nil, err
	}
	// Any app may write narun-apps on a default device: signing a revision
	// this key did not sign would vouch for what something else wrote.
	if reason := notOurs(key, t.raw); reason != "" {
		who := "it may have been written by something other than narun ctl"
		if reason == "unsigned" {
			// The usual unsigned revision is one of before an upgrade
			// brought signing, or narun up its node key.
			who = "it was stored before this key signed the app's specs (by a ctl of a release before signing, or before the node had its key) or by something other than narun ctl"
		}
		return nil, nil, fmt.Errorf("revision %d is not signed by this ctl's key (%s): %s; if it is yours, read it (narun ctl app history %s --revision %d > %s.toml) and deploy that file, which signs it", t.Revision, reason, who, app, t.Revision, app)
	}
	file := fmt.Sprintf("%s/%s@%d", names.AppsBucket, app, t.Revision)
	body := signing.StripSequence(signing.Strip(t.raw))
	a, err := spec.Parse(file, body)
	if err == nil {
		err = a.StoredUnder(app)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("revision %d is not a spec deploy accepts now (deploy a fixed one from its file):\n%w", t.Revision, err)
	}
	if len(a.Binaries) == 0 {
		return nil, nil, fmt.Errorf("revision %d pins no binary", t.Revision)
	}
	used, err := e.references(ctx, a)
	if err != nil {
		return nil, nil, err
	}
	problems, digests := used.missing, used.digests
	if err := e.checkPinned(ctx, file, body, a.Binaries); err != nil {
		problems = append(problems, fmt.Errorf("%w: deploy %s %s again from its file with --binary instead", err, a.Name, a.Version))
	}
	for _, obj := range slices.Sorted(maps.Keys(a.FileDigests)) {
		if now, ok := digests[obj]; ok && now != a.FileDigests[obj] {
			problems = append(problems, fmt.Errorf("file %q changed since revision %d was stored (sha256 %s…, it pins %s…): put its earlier content back with narun ctl files put", obj, t.Revision, prefix(now), prefix(a.FileDigests[obj])))
		}
	}
	if err := e.checkRoutes(ctx, a, key); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, nil, errors.Join(problems...)
	}
	// A revision an earlier ctl stored without pins gets them, as deploy
	// pins what narun-files holds now.
	if len(a.FileDigests) == 0 {
		if body, err = spec.SetFileDigests(file, body, digests); err != nil {
			return nil, nil, err
		}
	}
	stored := e.seal(key, body, cur.raw, order)
	final, err := spec.Parse(file, stored)
	if err != nil {
		return nil, nil, err
	}
	return stored, final, nil
}

// keep is an error as it is.
func keep(err error) error { return err }
