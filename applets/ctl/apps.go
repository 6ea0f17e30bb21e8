package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

func appCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "app",
		Usage: "list, inspect, follow, delete, restart and roll back deployed apps",
		Subcommands: []*ucli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "deployed apps and their instances", Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, appList)},
			{Name: "status", Usage: "instances of an app on every node", ArgsUsage: "NAME", Flags: []ucli.Flag{jsonFlag()}, Action: appAction(stdio, appStatus)},
			appEventsCommand(stdio),
			{Name: "delete", Aliases: []string{"rm"}, Usage: "stop an app everywhere and remove its spec and routes", ArgsUsage: "NAME", Flags: []ucli.Flag{
				&ucli.BoolFlag{Name: "wait", Aliases: []string{"w"}, Usage: "wait until every instance of the app has stopped"},
				&ucli.DurationFlag{Name: flagTimeout, Value: 2 * time.Minute, Usage: "how long --wait waits for the instances to stop (only with --wait)"},
			}, Action: appAction(stdio, appDelete, func(c *ucli.Context, _ string) error { return checkWaitTimeout(c) })},
			{Name: "restart", Usage: "roll every instance of an app, one new instance healthy before each old one stops (an [http] port app on the host network: old one stopped first, a gap)", ArgsUsage: "NAME", Flags: []ucli.Flag{waitFlag(), waitTimeoutFlag()}, Action: appAction(stdio, appRestart, func(c *ucli.Context, _ string) error { return checkWaitTimeout(c) })},
			appHistoryCommand(stdio),
			appRollbackCommand(stdio),
		},
	}
}

// appAction is action for a command on the app its one argument names. The
// name, and the flags by checks, are checked before anything connects: one
// NATS cannot take as a key is a usage error saying the rule, not "nats:
// invalid key", and a bad flag is a usage error whether NATS is up or not.
func appAction(stdio cli.IO, body func(ctx context.Context, c *ucli.Context, e *env, app string) error, checks ...func(c *ucli.Context, app string) error) ucli.ActionFunc {
	connected := withEnv(stdio, true, func(ctx context.Context, c *ucli.Context, e *env) error {
		return body(ctx, c, e, c.Args().First())
	})
	return func(c *ucli.Context) error {
		if err := requiredArgs(c); err != nil {
			return err
		}
		name, err := oneArg(c, "app name")
		if err != nil {
			return err
		}
		if err := validAppName(name); err != nil {
			return err
		}
		for _, check := range checks {
			if err := check(c, name); err != nil {
				return err
			}
		}
		return connected(c)
	}
}

func validAppName(name string) error {
	if err := spec.ValidName(name); err != nil {
		return usagef("app name %q: %v", name, err)
	}
	return nil
}

// deployed is a spec as stored in narun-apps.
type deployed struct {
	name     string
	app      *spec.App
	raw      []byte
	revision uint64
	created  time.Time
	err      error
	// outdated is what a deploy of the spec would now be refused for,
	// though nodes run it (spec.ParseStored).
	outdated error
}

func (e *env) deployedApps(ctx context.Context) ([]deployed, error) {
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return nil, err
	}
	return e.deployedIn(ctx, kv)
}

// deployedIn is deployedApps of kv, narun-apps opened already.
func (e *env) deployedIn(ctx context.Context, kv jetstream.KeyValue) ([]deployed, error) {
	keys, err := e.keys(ctx, kv)
	if err != nil {
		return nil, err
	}
	var out []deployed
	for _, k := range keys {
		d, err := e.deployedApp(ctx, kv, k)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// namedApp reads the deployed app name. The bucket it read is returned
// with the error that name is not deployed too: app status reads the
// app's deletion from it.
func (e *env) namedApp(ctx context.Context, name string) (jetstream.KeyValue, deployed, error) {
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return nil, deployed{}, err
	}
	d, err := e.deployedApp(ctx, kv, name)
	if isNotFound(err) {
		return kv, deployed{}, notFound("app %q is not deployed", name)
	}
	if err != nil {
		return nil, deployed{}, fmt.Errorf("read spec of %s: %w", name, err)
	}
	return kv, d, nil
}

func (e *env) deployedApp(ctx context.Context, kv jetstream.KeyValue, name string) (deployed, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	entry, err := kv.Get(octx, name)
	if err != nil {
		return deployed{}, err
	}
	d := deployed{name: name, raw: entry.Value(), revision: entry.Revision(), created: entry.Created()}
	// Read as nodes read it: a spec an earlier ctl stored runs, and pins
	// its objects, whatever rules a deploy has gained since.
	d.app, d.outdated, d.err = spec.ParseStored(names.AppsBucket+"/"+name, entry.Value())
	if d.err == nil {
		// Nodes refuse a spec of another app: ctl neither shows nor
		// builds on it as this one's.
		if d.err = d.app.StoredUnder(name); d.err != nil {
			d.app, d.outdated = nil, nil
		}
	}
	return d, nil
}

// instanceStatus is one instance as `app status --json` prints it.
type instanceStatus struct {
	Node     string      `json:"node"`
	ID       string      `json:"id"`
	State    state.State `json:"state"`
	PID      int         `json:"pid"`
	Restarts int         `json:"restarts"`
	Reason   string      `json:"reason"`
	Version  string      `json:"version"`
	Healthy  bool        `json:"healthy"`
	Current  bool        `json:"current"`
	// Started is null until the node starts a process (pending, fetching).
	Started *time.Time `json:"started"`
	// uptime is how long the process had run when status was read,
	// counted on the node's clock up to its heartbeat and on the NATS
	// server's since: Started is the node's stamp, which a node whose
	// clock is wrong (at 1970 before NTP, or stepped since) puts years
	// away from this machine's.
	uptime time.Duration
}

// stateUnknown is the state app status gives the instances of a node that
// stopped sending heartbeats.
const stateUnknown state.State = "unknown"

// appStatusJSON is the object `app status NAME --json` prints.
type appStatusJSON struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Revision uint64 `json:"revision"`
	// Updated is when the spec, or a deleted app's deletion, was stored;
	// null for an app that nodes run from a cached spec that narun-apps
	// has no record of.
	Updated  *time.Time `json:"updated"`
	Mode     string     `json:"mode"`
	Replicas int        `json:"replicas"`
	Desired  int        `json:"desired"`
	Ready    int        `json:"ready"`
	Nodes    []string   `json:"nodes"`
	// Deleted says that narun-apps holds no spec of the app, whose
	// instances nodes still report: they stop them (each for up to its
	// stop_timeout), or run them from a cached spec after the store lost
	// it (Updated null).
	Deleted bool `json:"deleted"`
	// Missing are nodes the spec names in nodes that send no heartbeat:
	// their replicas count as desired and not ready.
	Missing []string `json:"missing_nodes"`
	// Refused are the selected nodes that run only specs a key they trust
	// signed, and not this one, each with why: they leave the app's
	// instances as they were and start none of this spec.
	Refused []refusal `json:"refused_nodes"`
	// Starting are the selected nodes whose runner has started and not
	// yet read the app specs: the instances they list are not all yet.
	Starting  []string         `json:"starting_nodes"`
	Error     string           `json:"error"`
	Outdated  string           `json:"outdated"`
	Instances []instanceStatus `json:"instances"`
	// SignedBy is the public key whose signature the stored spec carries,
	// "" when unsigned; SignatureError says why that signature does not
	// hold, and nodes that trust the key refuse the spec.
	SignedBy       string `json:"signed_by"`
	SignatureError string `json:"signature_error"`
}

// refusal is a node that will not run the stored spec.
type refusal struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// refusedBy says why node n refuses a spec signed by pub ("" when
// unsigned; sigErr when that signature does not hold); "" when it runs it.
func refusedBy(n state.Node, pub, sigErr string) string {
	switch {
	case !n.SignaturesRequired:
		return ""
	case pub == "":
		return "the node runs only signed specs and this one is unsigned"
	case sigErr != "":
		return "the node runs only signed specs and this one's signature does not hold: " + sigErr
	case !slices.Contains(n.TrustedKeys, pub):
		return "the node runs only signed specs and does not trust the key that signed this one, " + pub
	}
	return ""
}

// statusOf is the status of the deployed app d from the heartbeats in
// nodes; now is the NATS server's clock (env.serverNow), by which their
// ages count.
func statusOf(d deployed, name string, nodes []state.Node, now time.Time) appStatusJSON {
	s := appStatusJSON{Name: name, Revision: d.revision, Instances: []instanceStatus{}, Nodes: []string{}, Missing: []string{}, Refused: []refusal{}, Starting: []string{}}
	if !d.created.IsZero() {
		s.Updated = &d.created
	}
	switch {
	case d.err != nil:
		s.Error = d.err.Error()
	case d.app != nil:
		s.Version, s.Mode, s.Replicas = d.app.Version, d.app.Mode, d.app.Replicas
	}
	if d.outdated != nil {
		s.Outdated = d.outdated.Error()
	}
	if pub, err := signing.SignedBy(d.raw); pub != "" {
		s.SignedBy = pub
		if err != nil {
			s.SignatureError = err.Error()
		}
	}
	for _, n := range nodes {
		fp := ""
		if d.app != nil {
			if want := d.app.ReplicasOn(n.ID, n.Labels); want > 0 {
				s.Desired += want
				s.Nodes = append(s.Nodes, n.ID)
				if why := refusedBy(n, s.SignedBy, s.SignatureError); why != "" {
					s.Refused = append(s.Refused, refusal{Node: n.ID, Reason: why})
				}
				if n.AwaitingSpecs && !late(n, now) && !slices.ContainsFunc(n.Instances, func(in state.Instance) bool { return in.App == name }) {
					s.Starting = append(s.Starting, n.ID)
				}
			}
			fp = d.app.Fingerprint(n.Arch)
		}
		for _, in := range n.Instances {
			if in.App != name {
				continue
			}
			is := instanceStatus{
				Node: n.ID, ID: in.ID, State: in.State, PID: in.PID, Restarts: in.Restarts, Reason: in.Reason,
				Version: in.Version, Healthy: in.Healthy, Current: fp != "" && in.Fingerprint == fp,
			}
			if !in.Started.IsZero() {
				t := in.Started
				is.Started = &t
				is.uptime = now.Sub(in.Started)
				if !n.Time.IsZero() && !n.Stored.IsZero() {
					is.uptime = n.Time.Sub(in.Started) + now.Sub(n.Stored)
				}
			}
			if late(n, now) {
				// What a silent node last said is no longer known to hold.
				is.Reason = fmt.Sprintf("node not heard from %s (it said %s)", silence(n, now), in.State)
				is.State = stateUnknown
			}
			if is.Current && (is.State == state.Healthy || is.State == state.Running && d.app.Health.Type == spec.HealthNone) {
				s.Ready++
			}
			s.Instances = append(s.Instances, is)
		}
	}
	// A node named in the spec that stopped sending heartbeats drops out
	// of narun-nodes when its entry expires; without this its replicas
	// would vanish from the desired count, and an app meant for two nodes
	// would look whole on one.
	if d.app != nil {
		for _, id := range d.app.Nodes {
			if !slices.ContainsFunc(nodes, func(n state.Node) bool { return n.ID == id }) {
				s.Missing = append(s.Missing, id)
				s.Desired += d.app.Replicas
			}
		}
	}
	sort.Slice(s.Instances, func(i, j int) bool {
		a, b := s.Instances[i], s.Instances[j]
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.ID < b.ID
	})
	return s
}

func appList(ctx context.Context, c *ucli.Context, e *env) error {
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	apps, err := e.deployedIn(ctx, kv)
	if err != nil {
		return err
	}
	nodes, err := e.nodes(ctx)
	if err != nil {
		return err
	}
	// The times of specs are the NATS server's stamps, as those of
	// heartbeats are: counted on its clock, not this machine's.
	now := e.serverNow()
	all := []appStatusJSON{}
	listed := map[string]bool{}
	for _, d := range apps {
		all = append(all, statusOf(d, d.name, nodes, now))
		listed[d.name] = true
	}
	// A deleted app whose instances nodes still stop is listed until they
	// are gone: left out, it would seem stopped at once.
	var gone []string
	for _, name := range reportedApps(nodes) {
		if !listed[name] {
			gone = append(gone, name)
		}
	}
	dels, err := e.deletions(ctx, kv, gone)
	if err != nil {
		return err
	}
	for _, name := range gone {
		all = append(all, deletedStatus(name, dels[name], nodes, now))
	}
	slices.SortFunc(all, func(a, b appStatusJSON) int { return strings.Compare(a.Name, b.Name) })
	if c.Bool(flagJSON) {
		return e.printJSON(all)
	}
	t := e.table("NAME", "VERSION", "MODE", "READY", "NODES", "UPDATED")
	for _, s := range all {
		if s.Deleted {
			t.row(s.Name, "-", "-", "-", orDash(strings.Join(instanceNodes(s), ",")), deletedNote(s, now))
			continue
		}
		if s.Error != "" {
			t.row(s.Name, "-", "-", "-", "-", "invalid: "+firstLine(s.Error))
			continue
		}
		// A missing node's replicas are in the desired count: without it
		// here, 2/4 on one node would not say where the other two are.
		nodes := slices.Clone(s.Nodes)
		for _, id := range s.Missing {
			nodes = append(nodes, id+"(missing)")
		}
		t.row(s.Name, s.Version, s.Mode, fmt.Sprintf("%d/%d", s.Ready, s.Desired), orDash(strings.Join(nodes, ",")), ago(*s.Updated, now))
	}
	return t.flush()
}

// reportedApps are the names of the apps whose instances the heartbeats
// of nodes list, sorted.
func reportedApps(nodes []state.Node) []string {
	var apps []string
	for _, n := range nodes {
		for _, in := range n.Instances {
			apps = append(apps, in.App)
		}
	}
	slices.Sort(apps)
	return slices.Compact(apps)
}

// deletedStatus is the status of app name, which narun-apps holds no spec
// of, from its deletion there (none when the store lost the app) and what
// the heartbeats in nodes still report of it.
func deletedStatus(name string, del deletion, nodes []state.Node, now time.Time) appStatusJSON {
	s := statusOf(deployed{name: name, revision: del.revision, created: del.at}, name, nodes, now)
	s.Deleted = true
	return s
}

// deletedNote says, for a table, what became of the spec of a deleted app.
func deletedNote(s appStatusJSON, now time.Time) string {
	if s.Updated == nil {
		return "no spec (nodes run a cached one)"
	}
	return "deleted " + ago(*s.Updated, now) + " ago"
}

// instanceNodes are the nodes that report instances in s, in order.
func instanceNodes(s appStatusJSON) []string {
	var ids []string
	for _, in := range s.Instances {
		ids = append(ids, in.Node)
	}
	return slices.Compact(ids)
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func appStatus(ctx context.Context, c *ucli.Context, e *env, name string) error {
	kv, d, err := e.namedApp(ctx, name)
	// Not deployed is still exit 3, as app delete says of an app deleted
	// already, but with the instances nodes still report: they stop them
	// for up to their stop_timeout, and the operator wants to see them go.
	var notDeployed error
	if cli.ExitCode(err) == ExitNotFound {
		notDeployed, err = err, nil
	}
	if err != nil {
		return err
	}
	nodes, err := e.nodes(ctx)
	if err != nil {
		return err
	}
	now := e.serverNow()
	var s appStatusJSON
	switch {
	case notDeployed == nil:
		s = statusOf(d, name, nodes, now)
	case !slices.Contains(reportedApps(nodes), name):
		return notDeployed
	default:
		dels, err := e.deletions(ctx, kv, []string{name})
		if err != nil {
			return err
		}
		s = deletedStatus(name, dels[name], nodes, now)
	}
	if c.Bool(flagJSON) {
		if err := e.printJSON(s); err != nil {
			return err
		}
		return notDeployed
	}
	rows := len(s.Instances) + len(s.Missing) + len(s.Refused) + len(s.Starting)
	scaledToZero := !s.Deleted && s.Error == "" && s.Replicas == 0
	switch {
	case s.Deleted && s.Updated == nil:
		fmt.Fprintf(e.out(), "%s: not deployed (%s has no record of it), but nodes run instances of it from a cached spec: narun ctl app delete %s stops them\n\n", s.Name, names.AppsBucket, s.Name)
	case s.Deleted:
		fmt.Fprintf(e.out(), "%s: deleted (revision %d, %s ago); nodes still report these instances, which they stop:\n\n", s.Name, s.Revision, ago(*s.Updated, now))
	case s.Error != "":
		fmt.Fprintf(e.out(), "%s: stored spec is invalid: %s\n", s.Name, s.Error)
	case scaledToZero:
		// "0/0 ready" over an empty table would read as instances lost.
		fmt.Fprintf(e.out(), "%s %s (%s), revision %d, updated %s ago, %s: scaled to 0 (replicas = 0): no instances wanted\n", s.Name, s.Version, s.Mode, s.Revision, ago(*s.Updated, now), signature(s))
		if rows > 0 {
			fmt.Fprintln(e.out())
		}
	default:
		fmt.Fprintf(e.out(), "%s %s (%s), revision %d, updated %s ago, %s: %d/%d ready\n\n", s.Name, s.Version, s.Mode, s.Revision, ago(*s.Updated, now), signature(s), s.Ready, s.Desired)
	}
	if s.Outdated != "" {
		e.warnf("the stored spec of %s breaks rules added to deploy since it was stored; deploying it again is refused until this is fixed:\n%s", s.Name, s.Outdated)
	}
	if scaledToZero && rows == 0 {
		return nil
	}
	t := e.table("NODE", "INSTANCE", "STATE", "PID", "RESTARTS", "VERSION", "UPTIME", "REASON")
	for _, in := range s.Instances {
		pid, up := "-", "-"
		if in.PID > 0 {
			pid = strconv.Itoa(in.PID)
		}
		// A silent node's process may be long gone: an uptime that keeps
		// growing would say it runs.
		if in.Started != nil && in.State != stateUnknown {
			up = shortDuration(in.uptime)
		}
		version := in.Version
		// A deleted app has no spec for an instance to be current with.
		if !in.Current && !s.Deleted {
			version += " (old)"
		}
		t.row(in.Node, in.ID, string(in.State), pid, strconv.Itoa(in.Restarts), version, up, in.Reason)
	}
	for _, id := range s.Missing {
		t.row(id, "-", "missing", "-", "-", "-", "-", "no heartbeat from this node: down, or its runner is not started")
	}
	for _, r := range s.Refused {
		t.row(r.Node, "-", "refused", "-", "-", "-", "-", r.Reason)
	}
	for _, id := range s.Starting {
		t.row(id, "-", "starting", "-", "-", "-", "-", "the runner has just started and has not read the app specs yet: its instances follow")
	}
	if err := t.flush(); err != nil {
		return err
	}
	return notDeployed
}

// signature says who signed a stored spec, briefly, for the status line.
func signature(s appStatusJSON) string {
	switch {
	case s.SignedBy == "":
		return "unsigned"
	case s.SignatureError != "":
		return "bad signature: " + s.SignatureError
	}
	return "signed by " + s.SignedBy
}

func appDelete(ctx context.Context, c *ucli.Context, e *env, name string) error {
	// Subscribed before the deletion is stored, so that no stop is missed.
	var w *waiter
	if c.Bool("wait") {
		var err error
		if w, err = newWaiter(ctx, e, &spec.App{Name: name}); err != nil {
			return err
		}
		w.deletion = true
		defer w.stop()
	}
	ok, err := e.deployed(ctx, name)
	if err != nil {
		return err
	}
	routes, err := e.kv(ctx, names.RoutesBucket)
	if err != nil {
		return err
	}
	// Each write gets the whole --timeout (write): one deadline for all
	// ran out partway on a slow link, the routes removed and the spec
	// still stored.
	op := func(bucket string, f func(ctx context.Context) error) error { return e.write(ctx, bucket, f) }
	if !ok {
		// Routes left by a delete cut short, or by one that raced a deploy,
		// would hold their paths for good: this is how they go.
		leftover := false
		if e.within(ctx, func(ctx context.Context) error { _, err := routes.Get(ctx, name); return err }) == nil {
			if err := op(names.RoutesBucket, func(ctx context.Context) error { return routes.Delete(ctx, name) }); err != nil {
				return fmt.Errorf("remove leftover routes of %s: %w", name, err)
			}
			leftover = true
		}
		// A node keeps running, from its cached spec, an app that its
		// store lost without a deletion; a delete marker is what stops it.
		// Looked for with leftover routes too: a store that lost
		// narun-apps may have kept narun-routes.
		running, err := e.nodesRunning(ctx, name)
		if err != nil {
			if leftover {
				return fmt.Errorf("%s is not deployed and its leftover routes are removed, but whether a node still runs it from a cached spec is not known: %w; narun ctl app delete %s again stops it if one does", name, err, name)
			}
			return err
		}
		if len(running) == 0 {
			if leftover {
				fmt.Fprintf(e.out(), "%s is not deployed; its leftover routes are removed\n", name)
				return nil
			}
			return notFound("app %q is not deployed", name)
		}
		kv, err := e.kv(ctx, names.AppsBucket)
		if err != nil {
			return err
		}
		// Nodes still list an app deleted moments ago while they stop it:
		// the deletion they stop it for is stored, and it is no app run
		// from a cached spec.
		dels, err := e.deletions(ctx, kv, []string{name})
		if err != nil {
			if leftover {
				return fmt.Errorf("%s is not deployed and its leftover routes are removed, but whether its deletion is stored, which stops it on %s, is not known: %w; narun ctl app delete %s again stores it if it is not", name, cli.Shown(strings.Join(running, ", ")), err, name)
			}
			return err
		}
		if rev := dels[name].revision; rev > 0 {
			nodes := cli.Shown(strings.Join(running, ", "))
			if leftover {
				fmt.Fprintf(e.out(), "%s is already deleted (revision %d of %s); its leftover routes are removed; nodes still stopping its instances: %s\n", name, rev, names.AppsBucket, nodes)
				return nil
			}
			return notFound("app %q is already deleted (revision %d of %s); nodes still stopping its instances: %s", name, rev, names.AppsBucket, nodes)
		}
		if err := op(names.AppsBucket, func(ctx context.Context) error { return kv.Delete(ctx, name) }); err != nil {
			return fmt.Errorf("store the deletion of %s: %w", name, err)
		}
		// Gateways keep serving routes that their store lost too, until
		// their removal is stored.
		if err := op(names.RoutesBucket, func(ctx context.Context) error { return routes.Delete(ctx, name) }); err != nil {
			return fmt.Errorf("store the removal of the routes of %s: %w", name, err)
		}
		fmt.Fprintf(e.out(), "%s is not in %s but runs on %s from a cached spec; its deletion is stored: they stop it\n", name, names.AppsBucket, cli.Shown(strings.Join(running, ", ")))
		return e.followDeletion(ctx, c, w, name)
	}
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	// Routes go first so gateways stop sending requests before instances
	// stop, and again after the spec, for a deploy's routes written in
	// between (dropRoutesOfDeleted).
	if err := op(names.RoutesBucket, func(ctx context.Context) error { return routes.Delete(ctx, name) }); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove routes of %s: %w", name, err)
	}
	if err := op(names.AppsBucket, func(ctx context.Context) error { return kv.Delete(ctx, name) }); err != nil {
		return fmt.Errorf("delete spec of %s: %w; its routes are removed already, so gateways no longer send it requests while its instances run: narun ctl app delete %s again finishes, narun ctl deploy of its file keeps it", name, err, name)
	}
	if err := op(names.RoutesBucket, func(ctx context.Context) error { return routes.Delete(ctx, name) }); err != nil && !isNotFound(err) {
		return fmt.Errorf("%s deleted, but removing its routes again (for a deploy in between) failed: %w; narun ctl app delete %s again removes them", name, err, name)
	}
	fmt.Fprintf(e.out(), "%s deleted: runners stop its instances\n", name)
	if err := e.followDeletion(ctx, c, w, name); err != nil {
		return err
	}
	// Its binaries stay, for a deploy again, and nothing else removes them:
	// on a device with little disk the operator must know they are there.
	left, stamped, err := e.unpinnedImagesOf(ctx, name)
	if err != nil {
		e.log.Debug("list the binaries the app leaves", "err", err)
		return nil
	}
	if len(left) == 0 {
		return nil
	}
	objs := strings.Join(left, " ")
	// Right after a deploy image delete refuses them (deleteObjects): a
	// hint that is refused would send the operator looking for why.
	now, err := e.objectsNow(ctx, names.BinariesBucket)
	if err != nil {
		e.log.Debug("read the time of the binaries' stream", "err", err)
	} else if age, wait := e.deployWait(now, stamped); wait > 0 {
		fmt.Fprintf(e.out(), "its binaries stay in %s; a deploy stamped them %s ago, so image delete refuses them for %s more, in case a deploy is storing a spec that pins them: then narun ctl image delete %s; or now, as no stored spec pins them: narun ctl image delete --force %s\n", names.BinariesBucket, age.Round(time.Second), wait.Round(time.Second), objs, objs)
		return nil
	}
	fmt.Fprintf(e.out(), "its binaries stay in %s; to remove them: narun ctl image delete %s\n", names.BinariesBucket, objs)
	return nil
}

// followDeletion waits, when w follows the deletion of app (--wait), until
// its instances have stopped on every node that sends heartbeats, and
// names the nodes that send none but still list some: their runners stop
// them once they are back.
func (e *env) followDeletion(ctx context.Context, c *ucli.Context, w *waiter, app string) error {
	if w == nil {
		return nil
	}
	if _, err := w.wait(ctx, c.Duration(flagTimeout), true); err != nil {
		return rolloutError(err)
	}
	nodes, err := e.nodes(ctx)
	if err != nil {
		return fmt.Errorf("read the node heartbeats: %w", err)
	}
	var silent []string
	for _, n := range nodes {
		if late(n, e.serverNow()) && slices.ContainsFunc(n.Instances, func(in state.Instance) bool { return in.App == app && !in.State.Final() }) {
			silent = append(silent, n.ID+" (no heartbeat "+silence(n, e.serverNow())+")")
		}
	}
	if len(silent) > 0 {
		slices.Sort(silent)
		e.warnf("%s may still run on %s: each stops it once its runner is back", app, cli.Shown(strings.Join(silent, ", ")))
		fmt.Fprintf(e.out(), "%s: every instance stopped on the nodes that send heartbeats\n", app)
		return nil
	}
	fmt.Fprintf(e.out(), "%s: every instance stopped\n", app)
	return nil
}

// unpinnedImagesOf names the objects of app's binaries that no stored spec
// pins, and when the newest of them was uploaded or stamped. It finds them
// as deploy's prune does (buildsOf) and reads the metadata of those alone,
// to leave out the ones image delete removed (their deletion marker
// stays): ObjectStore.List would read every block of the store, and its
// server hold them in memory for seconds.
func (e *env) unpinnedImagesOf(ctx context.Context, app string) (left []string, stamped time.Time, err error) {
	builds, _, err := e.buildsOf(ctx, app)
	if err != nil || len(builds) == 0 {
		return nil, time.Time{}, err
	}
	used, _, err := e.users(ctx, builds, binaryRefs)
	if err != nil {
		return nil, time.Time{}, err
	}
	for _, name := range builds {
		if len(used[name]) > 0 {
			continue
		}
		m, info, err := e.objectMeta(ctx, names.BinariesBucket, name)
		if errors.Is(err, errNoObject) {
			continue
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		if !info.Deleted {
			left = append(left, name)
			if m.Time.After(stamped) {
				stamped = m.Time
			}
		}
	}
	return left, stamped, nil
}

// nodesRunning lists the nodes whose heartbeat shows an instance of app.
func (e *env) nodesRunning(ctx context.Context, app string) ([]string, error) {
	nodes, err := e.nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the node heartbeats: %w", err)
	}
	var running []string
	for _, n := range nodes {
		if slices.ContainsFunc(n.Instances, func(in state.Instance) bool { return in.App == app }) {
			running = append(running, n.ID)
		}
	}
	slices.Sort(running)
	return running, nil
}

// deployed reports whether narun-apps has a spec of app.
func (e *env) deployed(ctx context.Context, app string) (bool, error) {
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return false, err
	}
	octx, cancel := e.op(ctx)
	defer cancel()
	if _, err := kv.Get(octx, app); isNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read spec of %s: %w", app, err)
	}
	return true, nil
}

// deletion is the revision of an app's deletion in narun-apps, and when
// it was stored.
type deletion struct {
	revision uint64
	at       time.Time
}

// deletions are the deletions in kv (narun-apps) that the histories of
// apps end with; an app whose history ends with a spec, or that has no
// entry at all (a store that lost its data), has none. The last entries
// of all are read by one watch: app list reads them for every deleted app
// whose instances nodes still stop, and a read each made a listing after
// the delete of many apps ask the bucket as many times again.
func (e *env) deletions(ctx context.Context, kv jetstream.KeyValue, apps []string) (map[string]deletion, error) {
	// A watch of no key at all would read every key.
	if len(apps) == 0 {
		return map[string]deletion{}, nil
	}
	what := fmt.Sprintf("read the history of %s in %s", strings.Join(apps, ", "), names.AppsBucket)
	octx, cancel := e.op(ctx)
	defer cancel()
	// Read again when unanswered, as History is (patientKV): the watch's
	// consumer may sit on a member that died a moment ago.
	dels, err := untilListed(octx, func(ctx context.Context) (map[string]deletion, error) {
		// WatchFiltered writes the bucket's prefix into the keys it is
		// given.
		w, err := kv.WatchFiltered(ctx, slices.Clone(apps), jetstream.MetaOnly())
		if err != nil {
			return nil, err
		}
		defer w.Stop()
		dels := map[string]deletion{}
		for {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case last, ok := <-w.Updates():
				if !ok {
					return nil, errors.New("the watch ended before the last entry")
				}
				// nil follows the last entry of every key there is.
				if last == nil {
					return dels, nil
				}
				// A name a heartbeat reported may hold wildcards, which
				// match the keys of other apps.
				if last.Operation() != jetstream.KeyValuePut && slices.Contains(apps, last.Key()) {
					dels[last.Key()] = deletion{revision: last.Revision(), at: last.Created()}
				}
			}
		}
	})
	if err != nil {
		return nil, majorityHint(e.nc, fmt.Errorf("%s: %w", what, err))
	}
	return dels, nil
}

// storeRestart writes the restarted spec of app over revision rev, which
// the restart read: conditional, so a deploy, restart or rollback in
// between is not undone.
func (e *env) storeRestart(ctx context.Context, kv jetstream.KeyValue, app string, restarted []byte, rev uint64) error {
	if err := e.write(ctx, names.AppsBucket, func(ctx context.Context) error { _, err := kv.Update(ctx, app, restarted, rev); return err }); err != nil {
		return storeSpecError(app, "restart", err)
	}
	return nil
}

func appRestart(ctx context.Context, c *ucli.Context, e *env, name string) error {
	kv, d, err := e.namedApp(ctx, name)
	if err != nil {
		return err
	}
	if d.err != nil {
		return fmt.Errorf("stored spec of %s is invalid, deploy a fixed one: %w", name, d.err)
	}
	key, err := e.signer()
	if err != nil {
		return err
	}
	if key == nil {
		nodes, err := e.nodes(ctx)
		if err != nil {
			e.log.Debug("read heartbeats for a node key", "err", err)
		}
		key = e.nodeSigner(key, nodes)
	}
	if err := refuseUnsigned(key, d.raw, "the stored spec of "+name); err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	if reason := notOurs(key, d.raw); reason != "" {
		return fmt.Errorf("restart %s: %w", name, notOurSpec(name, reason))
	}
	order, err := e.readOrder(ctx, kv, name, key, specSequence)
	if err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	// Restarted, a spec nodes refuse as stored again would be signed with
	// a new sequence, and run everywhere in place of the one they run.
	if key != nil && !bytes.Equal(d.raw, order.live) {
		return fmt.Errorf("restart %s: the stored spec is one this ctl's key signed before, stored again after a later one or the app's deletion, which nodes refuse: something other than narun ctl wrote it; deploy the app from its file", name)
	}
	restarted, err := spec.SetRestartedAt(names.AppsBucket+"/"+name, signing.StripSequence(signing.Strip(d.raw)), time.Now())
	if err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	// A restart is how a file changed with files put rolls out: the new
	// instances must be allowed the bytes narun-files holds now. A secret
	// or file deleted since the deploy would keep every new instance from
	// starting: refused here, as deploy refuses it.
	used, err := e.references(ctx, d.app)
	if err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	if len(used.missing) > 0 {
		return fmt.Errorf("restart %s: %w", name, errors.Join(used.missing...))
	}
	// So is a binary deleted with image delete --force: a node that has no
	// copy cached could not start the new instances.
	if err := e.checkPinned(ctx, names.AppsBucket+"/"+name, d.raw, d.app.Binaries); err != nil {
		return fmt.Errorf("restart %s (deploy it again with --binary): %w", name, err)
	}
	if restarted, err = spec.SetFileDigests(names.AppsBucket+"/"+name, restarted, used.digests); err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	e.warnRepinned(d.app.FileDigests, used.digests)
	restarted = e.seal(key, restarted, d.raw, order)
	// Subscribe before writing so no event of the rollout is missed.
	var w *waiter
	if c.Bool("wait") {
		app, _, err := spec.ParseStored(names.AppsBucket+"/"+name, restarted)
		if err != nil {
			return fmt.Errorf("restart %s: %w", name, err)
		}
		if w, err = newWaiter(ctx, e, app); err != nil {
			return err
		}
		defer w.stop()
	}
	if err := e.storeRestart(ctx, kv, name, restarted, d.revision); err != nil {
		return err
	}
	if w == nil {
		fmt.Fprintf(e.out(), "%s: restart requested, instances roll one by one\n", name)
		return nil
	}
	r, err := w.wait(ctx, c.Duration(flagTimeout), true)
	if err != nil {
		return rolloutError(err)
	}
	fmt.Fprintf(e.out(), "%s: restarted, %d instance(s) ready\n", name, len(r.Ready))
	return nil
}
