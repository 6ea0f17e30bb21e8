package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/elfarch"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/sandbox"
)

func deployCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "deploy",
		Usage:     "validate a spec, upload its binaries and roll it out",
		ArgsUsage: "APP.toml",
		Description: "The spec is validated first; nothing is uploaded from an invalid spec.\n" +
			"Each --binary is a Linux ELF executable for amd64, arm64 or riscv64; its arch is read from\n" +
			"the ELF header. It is stored as <name>/<version>/linux-<arch>-<first 12 hex digits of its\n" +
			"sha256>, so another build of the same version never replaces the object a deployed spec pins.\n" +
			"Without --binary the binaries of the deployed spec are kept if the version is unchanged, else\n" +
			"those of the newest kept revision of that version (app history) whose builds are still stored\n" +
			"(with a signing key, only from a spec that key signed; a deployed spec it did not is refused).\n" +
			"The sha256 of each [[files]] object is pinned too; after files put, app restart pins and rolls out the new content.",
		Flags: []ucli.Flag{
			&ucli.StringSliceFlag{Name: "binary", Aliases: []string{"b"}, Usage: "executable to upload (repeat for each arch)"},
			&ucli.BoolFlag{Name: "dry-run", Usage: "run the checks of a deploy and show the plan; upload and write nothing (without NATS, check the spec and binaries only)"},
			&ucli.BoolFlag{Name: flagForce, Usage: "deploy even if every selected node would refuse the spec for its signature"},
			waitFlag(),
			waitTimeoutFlag(),
			jsonFlag(),
		},
		Action: action(stdio, false, runDeploy),
	}
}

func waitFlag() ucli.Flag {
	return &ucli.BoolFlag{Name: "wait", Aliases: []string{"w"}, Usage: "wait until every desired instance is running and healthy, and every one no longer wanted (of the earlier spec, fewer replicas, replicas = 0) has stopped"}
}

func waitTimeoutFlag() ucli.Flag {
	return &ucli.DurationFlag{Name: flagTimeout, Value: 2 * time.Minute, Usage: "how long --wait waits for the rollout (only with --wait)"}
}

// checkWaitTimeout refuses a --wait that could not wait at all, before
// anything is written: it would report the rollout as failed at once. So
// is a --timeout without --wait: ctl would return before the rollout,
// taken silently, while whoever typed it believes it waited.
func checkWaitTimeout(c *ucli.Context) error {
	d := c.Duration(flagTimeout)
	if !c.Bool("wait") {
		if c.IsSet(flagTimeout) {
			return usagef("--timeout %s without --wait: it bounds only the wait for the rollout; add --wait, or drop --timeout (a --timeout before the command bounds each NATS operation)", d)
		}
		return nil
	}
	if d <= 0 {
		return usagef("--timeout %s: --wait needs a positive duration (e.g. 2m)", d)
	}
	return nil
}

// checkDryRunWait refuses --wait and --timeout on a dry run, which starts
// no rollout: taken silently, they would let a script believe it waited.
func checkDryRunWait(c *ucli.Context) error {
	if !c.Bool("dry-run") {
		return nil
	}
	var given []string
	if c.Bool("wait") {
		given = append(given, "--wait")
	}
	if c.IsSet(flagTimeout) {
		given = append(given, "--"+flagTimeout)
	}
	if len(given) == 0 {
		return nil
	}
	flags := strings.Join(given, " and ")
	return usagef("--dry-run with %s: a dry run starts no rollout to wait for; drop %s, or drop --dry-run to deploy and wait", flags, flags)
}

// binaryFile is a local executable checked for upload.
type binaryFile struct {
	Path   string `json:"path"`
	Arch   string `json:"arch"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Object string `json:"object"`
}

// readSpec reads a spec file, but no more than one byte past the largest
// spec, which spec.Parse then refuses: a wrong path (a device, a huge log)
// must not be read whole into memory. A FIFO or <(cmd) is read too, until
// ctx ends.
func readSpec(ctx context.Context, file string) ([]byte, error) {
	return readInterruptible(ctx, "spec", file, func() ([]byte, error) {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, spec.MaxSize+1))
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		return b, nil
	})
}

// pinnedBinary is a spec.Binary as deploy --json prints it. spec.Binary
// itself must not gain JSON names: the fingerprint hashes its JSON form.
type pinnedBinary struct {
	Object string `json:"object"`
	SHA256 string `json:"sha256"`
}

func pinnedOf(bins map[string]spec.Binary) map[string]pinnedBinary {
	out := map[string]pinnedBinary{}
	for arch, b := range bins {
		out[arch] = pinnedBinary{Object: b.Object, SHA256: b.SHA256}
	}
	return out
}

// deployResult is what deploy --json prints.
type deployResult struct {
	App      string                  `json:"app"`
	Version  string                  `json:"version"`
	DryRun   bool                    `json:"dry_run"`
	Binaries []binaryFile            `json:"binaries"`
	Pinned   map[string]pinnedBinary `json:"pinned"`
	Routes   int                     `json:"routes"`
	Revision uint64                  `json:"revision"`
	Changed  bool                    `json:"changed"`
	// UID is the uid a sandboxed app without user runs as on every node;
	// Group is its group when the spec names one, else the gid is UID.
	UID     *uint32  `json:"uid"`
	Group   string   `json:"group"`
	Rollout *rollout `json:"rollout"`
	// compared says that a dry run read the deployed spec, so Changed
	// tells what the deploy would do; offline it cannot know.
	compared bool
	// pinnedFrom says where Pinned comes from when no --binary gave it,
	// so that the plan names the binaries the deploy runs.
	pinnedFrom string
}

// deployment is one deploy of a spec file: what was read from the files,
// then, once plan has run, what the checks read in NATS and the spec to
// store.
type deployment struct {
	file string
	src  []byte
	app  *spec.App
	bins []binaryFile
	key  *signing.Key
	res  deployResult

	// nodes are the heartbeats; heartbeats says whether they could be
	// read, without which nothing is warned of.
	nodes      []state.Node
	heartbeats bool
	apps       jetstream.KeyValue
	cur        current
	// order is what the key signed for the app before.
	order signedOrder
	// obs is narun-binaries, opened when there are bins to upload.
	obs    jetstream.ObjectStore
	stored []byte
	final  *spec.App
	// sealedWith is the key id of each secret the spec uses, as plan
	// read it.
	sealedWith map[string]string
	// force stores a spec that every selected node would refuse.
	force bool
}

func runDeploy(ctx context.Context, c *ucli.Context, e *env) error {
	d, err := e.readDeployment(c)
	if err != nil {
		return err
	}
	if d.res.DryRun {
		return e.dryRun(ctx, c, d)
	}
	if err := e.connect(); err != nil {
		return err
	}
	defer e.close()
	// Interrupted (Ctrl-C, SIGTERM) before the spec is stored, a step
	// fails with only "context canceled", which does not tell the
	// operator that nothing is deployed.
	unstored := func(err error) error {
		if ctx.Err() == nil {
			return err
		}
		return fmt.Errorf("deploy of %s stopped (%w) before its spec was stored: nothing deployed", d.app.Name, errInterrupted)
	}
	if err := e.plan(ctx, d); err != nil {
		return unstored(err)
	}
	// What uploads cut short left counts against the stores' limits, and
	// would fail this upload on a store they filled.
	e.reclaimChunks(ctx, names.BinariesBucket, false)
	e.reclaimChunks(ctx, names.FilesBucket, false)
	for i := range d.bins {
		if err := e.upload(ctx, d.obs, &d.bins[i]); err != nil {
			return unstored(err)
		}
	}
	if err := e.stampPins(ctx, d); err != nil {
		return unstored(err)
	}
	if len(d.bins) > 0 {
		// An upload over a slow link takes minutes: judged by the
		// heartbeats read before it, every node would look down.
		if nodes, err := e.nodes(ctx); err == nil {
			d.nodes, d.heartbeats = nodes, true
		}
	}
	p, err := e.publish(ctx, release{apps: d.apps, cur: d.cur, stored: d.stored, final: d.final, key: d.key, nodes: d.nodes, heartbeats: d.heartbeats, sealedWith: d.sealedWith, prune: true, verb: "deploy", again: "deploy again to write them"}, c.Bool("wait"))
	if err != nil {
		return err
	}
	d.res.Changed, d.res.Revision = p.changed, p.revision
	kept := ""
	if p.changed {
		kept = e.warnHealthKept(d.cur.app, d.final)
	}
	if p.w != nil {
		defer p.w.stop()
		p.w.timeoutHint = kept
		return e.followDeploy(ctx, c, d.res, p.w)
	}
	return e.reportDeploy(c, d.res, d.bins)
}

// dryRun is a deploy that stops before its upload: through plan it
// refuses what the deploy would, with the same error and exit code, so
// that a spec it calls valid deploys; read-only buckets keep it from
// writing anything, not even a missing bucket. Without NATS it checks the
// spec and the binaries only and says what it skipped, so that a CI job
// can lint specs offline.
func (e *env) dryRun(ctx context.Context, c *ucli.Context, d *deployment) error {
	if err := e.connect(); err != nil {
		e.warnf("%v; checked the spec and binaries only, not what a deploy checks in NATS: %s; a deploy may still refuse it", err, strings.Join(offlineSkips(d), "; "))
		return e.reportDeploy(c, d.res, d.bins)
	}
	defer e.close()
	e.readOnly = true
	if err := e.plan(ctx, d); err != nil {
		return err
	}
	// As publish decides it, so that a script can tell from the dry run
	// whether the deploy would store anything.
	d.res.Changed, d.res.compared = !bytes.Equal(d.cur.raw, d.stored), true
	if d.heartbeats {
		e.warnSignedOnly(d.nodes, d.final, d.key)
		e.warnAbsentNodes(d.nodes, d.final)
		e.warnMissingArch(d.nodes, d.final)
		e.warnNoSandbox(d.nodes, d.final)
		e.warnSecretKeys(d.nodes, d.final, d.sealedWith)
	}
	if d.res.Changed {
		e.warnHealthKept(d.cur.app, d.final)
	}
	return e.reportDeploy(c, d.res, d.bins)
}

// warnHealthKept says, when next changes the [health] of cur and not the
// fingerprint its runners replace instances for (the runner's reconcile),
// that the running instances keep checking as they started: --wait would
// otherwise run out its timeout on a check that cannot change, the new
// one being the fix, without a word why. It returns what it said, for the
// timeout's error; "" when it said nothing.
func (e *env) warnHealthKept(cur, next *spec.App) string {
	if cur == nil || cur.Health == next.Health {
		return ""
	}
	var kept, replaced []string
	for _, arch := range slices.Sorted(maps.Keys(next.Binaries)) {
		if cur.Fingerprint(arch) == next.Fingerprint(arch) {
			kept = append(kept, arch)
		} else {
			replaced = append(replaced, arch)
		}
	}
	if len(kept) == 0 {
		return ""
	}
	where := ""
	if len(replaced) > 0 {
		where = " on linux/" + strings.Join(kept, ", linux/") + " nodes"
	}
	msg := fmt.Sprintf("running instances%s keep the previous health check; narun ctl app restart %s applies it", where, next.Name)
	e.warnf("[health] changed, and nothing that replaces instances did: %s (instances started from now on get the new one)", msg)
	return msg
}

// offlineSkips names the checks in NATS a deploy of d runs, and which a
// dry run without NATS skips.
func offlineSkips(d *deployment) []string {
	var skips []string
	if len(d.app.Secrets) > 0 || len(d.app.Files) > 0 {
		skips = append(skips, "that its secrets and [[files]] objects exist")
	}
	if len(d.app.Routes) > 0 {
		skips = append(skips, "that its routes do not clash with another app's")
	}
	switch {
	case len(d.bins) > 0:
		skips = append(skips, "whether the deployed spec pins the same bytes under another name (object names are those of a first deploy)")
	case len(d.app.Binaries) > 0:
		skips = append(skips, "that the binaries it pins exist")
	default:
		skips = append(skips, "that the deployed spec, or a kept revision, has binaries of "+d.app.Version+" to keep")
	}
	return append(skips, "that the deployed spec is one this ctl may replace (its signature)", "whether the deploy would change the deployed spec (changed)", "which nodes will not run it")
}

// readDeployment reads and checks what deploy is given: the spec file,
// the binaries and the signing key. Nothing in NATS is read yet.
func (e *env) readDeployment(c *ucli.Context) (*deployment, error) {
	file, err := oneArg(c, "spec file")
	if err != nil {
		return nil, err
	}
	if err := checkDryRunWait(c); err != nil {
		return nil, err
	}
	if err := checkWaitTimeout(c); err != nil {
		return nil, err
	}
	src, err := readSpec(c.Context, file)
	if err != nil {
		return nil, err
	}
	app, err := spec.Parse(file, src)
	if err != nil {
		if swapped := swappedArgs(file, src, c.StringSlice("binary")); swapped != nil {
			return nil, swapped
		}
		return nil, fmt.Errorf("invalid spec, nothing deployed:\n%w", err)
	}
	bins, err := inspectBinaries(c.StringSlice("binary"), app)
	if err != nil {
		return nil, err
	}
	e.warnDynamicBinaries(app, bins)
	e.warnPrivilegedHostPort(app)
	if len(bins) > 0 && len(app.Binaries) > 0 {
		return nil, usagef("%s already has [binaries]; deploy it without --binary or remove the table", file)
	}
	// A key that cannot sign fails the deploy before anything is uploaded.
	key, err := e.signer()
	if err != nil {
		return nil, err
	}
	res := deployResult{App: app.Name, Version: app.Version, DryRun: c.Bool("dry-run"), Binaries: bins, Routes: len(app.Routes), Pinned: pinnedOf(app.Binaries)}
	if len(app.Binaries) > 0 {
		res.pinnedFrom = "pinned by " + file
	}
	if app.Mode == spec.ModeSandbox && app.Sandbox.User == "" {
		// Only the node can resolve a user name; a derived uid is the same
		// everywhere, and its owner must chown what the app writes.
		uid := sandbox.AppID(app.Name)
		res.UID, res.Group = &uid, app.Sandbox.Group
	}
	return &deployment{file: file, src: src, app: app, bins: bins, key: key, res: res, force: c.Bool(flagForce)}, nil
}

// swappedArgs is the usage error of a deploy whose spec file, src, is
// not a spec because it and a --binary were given the wrong way round, a
// common slip: its parse error (no TOML, larger than a spec) would not
// say so. nil when nothing looks swapped.
func swappedArgs(file string, src []byte, binaries []string) error {
	executable := bytes.HasPrefix(src, []byte(elf.ELFMAG))
	for _, p := range binaries {
		if !isSpec(p) {
			continue
		}
		if executable {
			return usagef("%s is an executable and --binary %s a spec: the two look swapped (narun ctl deploy %s --binary %s)", file, p, p, file)
		}
		return usagef("--binary %s is a spec, and %s is not: the two look swapped (narun ctl deploy %s --binary %s)", p, file, p, file)
	}
	if executable {
		return usagef("%s is an executable, not a spec (narun ctl deploy SPEC --binary %s)", file, file)
	}
	return nil
}

// isSpec says whether p is a regular file that holds a valid spec. Only a
// regular file is read: a FIFO would be consumed, or block.
func isSpec(p string) bool {
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Size() > spec.MaxSize {
		return false
	}
	src, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	_, err = spec.Parse(p, src)
	return err == nil
}

// inspectBinaries inspects each of paths, one binary per arch.
func inspectBinaries(paths []string, app *spec.App) ([]binaryFile, error) {
	// Empty, not nil: deploy --json prints it, [] when no --binary is given.
	bins := []binaryFile{}
	for _, p := range paths {
		b, err := inspectBinary(p, app)
		if err != nil {
			return nil, err
		}
		for _, prev := range bins {
			if prev.Arch == b.Arch {
				return nil, usagef("%s and %s are both %s binaries", prev.Path, b.Path, b.Arch)
			}
		}
		bins = append(bins, b)
	}
	return bins, nil
}

// plan runs every check of a deploy that reads NATS, each of which
// refuses the deploy before anything is uploaded or written, and builds
// the spec to store into d.
func (e *env) plan(ctx context.Context, d *deployment) error {
	// Read once: the node key, and the warnings about nodes that will
	// not run this deploy. Without them, ctl signs with its own key or
	// none, and warns about nothing.
	nodes, err := e.nodes(ctx)
	d.nodes, d.heartbeats = nodes, err == nil
	if err != nil {
		e.log.Debug("read heartbeats", "err", err)
	}
	d.key = e.nodeSigner(d.key, nodes)
	if err := e.refuseUnrunnable(d.nodes, d.heartbeats, d.app, d.key, d.force); err != nil {
		return fmt.Errorf("nothing deployed: %w", err)
	}
	if err := e.readCurrent(ctx, d); err != nil {
		return err
	}
	used, err := e.checkReferences(ctx, d.app)
	if err != nil {
		return err
	}
	d.sealedWith = used.sealedWith
	if err := e.checkRoutes(ctx, d.app, d.key); err != nil {
		return err
	}
	pinned, err := e.planBinaries(ctx, d, used.digests)
	if err != nil {
		return err
	}
	return e.build(d, pinned, used.digests)
}

// readCurrent reads the deployed spec of d's app into d, refusing a
// deploy that would have to build on one this ctl may not replace.
func (e *env) readCurrent(ctx context.Context, d *deployment) error {
	apps, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	cur, err := currentSpec(ctx, e, d.app.Name)
	if err != nil {
		return err
	}
	if err := refuseUnsigned(d.key, cur.raw, "the deployed spec of "+d.app.Name); err != nil {
		return err
	}
	order, err := e.readOrder(ctx, apps, d.app.Name, d.key, specSequence)
	if err != nil {
		return err
	}
	reason := notOurs(d.key, cur.raw)
	// An earlier spec of this key stored again over a later one: nodes
	// run the later, and binaries or restarted_at kept from the earlier
	// would be signed anew over it. The last one stored back after a
	// deletion is what nodes ran last, and lends as before.
	earlier := reason == "" && d.key != nil && specSequence(signing.Strip(cur.raw)) < order.last
	if cur.rev != 0 && (reason != "" || earlier) {
		// Binaries, restarted_at and pins come only from a spec this key
		// signed that nodes accept; binaries given here or in the file
		// replace the stored spec whole, so it lends nothing and nothing
		// it names is pruned.
		switch {
		case len(d.bins) > 0 || len(d.app.Binaries) > 0:
		case earlier:
			return fmt.Errorf("the stored spec of %s is an earlier one this ctl's key signed, stored again over a later one, which nodes refuse: something other than narun ctl wrote it; deploy it from its file with --binary to replace it", d.app.Name)
		default:
			return notOurSpec(d.app.Name, reason)
		}
		cur.app = nil
	}
	d.apps, d.cur, d.order = apps, cur, order
	return nil
}

// planBinaries names the binaries the stored spec is to pin: d's bins, or
// those the deployed spec, else a kept revision, pins for the same
// version; nil when the file's own [binaries] stand, once checked against
// the store with its file pins.
func (e *env) planBinaries(ctx context.Context, d *deployment, fileDigests map[string]string) (map[string]spec.Binary, error) {
	switch {
	case len(d.bins) > 0:
		obs, err := e.objects(ctx, names.BinariesBucket)
		if err != nil {
			return nil, err
		}
		d.obs = obs
		pinned := map[string]spec.Binary{}
		for i := range d.bins {
			e.keepPinned(ctx, obs, d.cur, &d.bins[i])
			pinned[d.bins[i].Arch] = spec.Binary{Object: d.bins[i].Object, SHA256: d.bins[i].SHA256}
		}
		e.warnDroppedArches(d, pinned)
		return pinned, nil
	case len(d.app.Binaries) > 0:
		if err := e.checkPinned(ctx, d.file, d.src, d.app.Binaries); err != nil {
			return nil, err
		}
		for obj, pin := range d.app.FileDigests {
			if fileDigests[obj] != pin {
				return nil, fmt.Errorf("file %s has sha256 %s, the spec pins %s", obj, fileDigests[obj], pin)
			}
		}
		return nil, nil
	case d.cur.app != nil && d.cur.app.Version == d.app.Version && len(d.cur.app.Binaries) > 0:
		d.res.pinnedFrom = "kept from the deployed spec"
		return d.cur.app.Binaries, nil
	}
	kept, rev, err := e.keptBuilds(ctx, d)
	if err != nil {
		return nil, err
	}
	if kept != nil {
		d.res.pinnedFrom = fmt.Sprintf("kept from revision %d", rev)
		return kept, nil
	}
	return nil, usagef("no binary for %s %s: pass --binary FILE (one per arch)", d.app.Name, d.app.Version)
}

// keptBuilds are the binaries that the newest kept revision of d's app
// and version pins (app history), and that revision; nil when none does
// or its builds are gone. A rollback to an earlier version, or app delete,
// leaves the builds of the version before in narun-binaries (pruning keeps
// what a kept revision pins): a spec of that version deployed again, with
// only replicas changed, needs no upload again. With a key, only a
// revision that key signed lends them, as for the deployed spec.
func (e *env) keptBuilds(ctx context.Context, d *deployment) (map[string]spec.Binary, uint64, error) {
	revs, err := e.history(ctx, d.apps, d.app.Name)
	if cli.ExitCode(err) == ExitNotFound {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for _, r := range slices.Backward(revs) {
		if r.app == nil || r.app.Version != d.app.Version || len(r.app.Binaries) == 0 || notOurs(d.key, r.raw) != "" {
			continue
		}
		// One of them deleted (image delete of what only earlier
		// revisions pin) leaves an older revision to look at.
		err := e.checkPinned(ctx, fmt.Sprintf("%s/%s@%d", names.AppsBucket, d.app.Name, r.Revision), nil, r.app.Binaries)
		switch {
		case err == nil:
			return r.app.Binaries, r.Revision, nil
		case cli.ExitCode(err) != ExitNotFound:
			return nil, 0, fmt.Errorf("check the binaries revision %d of %s pins: %w", r.Revision, d.app.Name, err)
		}
	}
	return nil, 0, nil
}

// warnDroppedArches names each arch the deployed spec has a binary for
// and pinned does not: --binary replaces the set, so a deploy that leaves
// one out drops it, and nodes of that arch fail the instances. The warning
// of missing arches (warnMissingArch) sees only nodes that send a heartbeat
// now, not a device that is off.
func (e *env) warnDroppedArches(d *deployment, pinned map[string]spec.Binary) {
	if d.cur.app == nil {
		return
	}
	for _, arch := range slices.Sorted(maps.Keys(d.cur.app.Binaries)) {
		if _, ok := pinned[arch]; !ok {
			e.warnf("the deployed spec of %s has a binary for %s and this deploy none: its nodes of that arch will fail its instances; pass --binary for every arch to keep it", d.app.Name, arch)
		}
	}
}

// build makes the value d stores: the file's text with pinned (unless
// nil), the file pins and the kept restarted_at, signed.
func (e *env) build(d *deployment, pinned map[string]spec.Binary, fileDigests map[string]string) error {
	// The file may be a stored spec saved (app history): its sequence
	// line goes, or the tables added below would follow it.
	stored := signing.StripSequence(signing.Strip(d.src))
	var err error
	if pinned != nil {
		if stored, err = spec.WithBinaries(d.file, d.src, pinned); err != nil {
			return err
		}
		d.res.Pinned = pinnedOf(pinned)
	}
	// Pinned like the binaries, so that nodes place only the bytes this
	// deploy saw; a file that already pins them (a stored spec saved and
	// deployed again) was checked by planBinaries and is stored as it is.
	if len(d.app.FileDigests) == 0 {
		if stored, err = spec.SetFileDigests(d.file, stored, fileDigests); err != nil {
			return err
		}
	}
	if stored, err = keepRestartedAt(d, stored); err != nil {
		return err
	}
	// Signed last, over exactly what is stored; without a key the spec is
	// stored unsigned. Parsing the signed value checks what nodes read,
	// trailer and size included.
	stored = e.seal(d.key, stored, d.cur.raw, d.order)
	final, err := spec.Parse(d.file, stored)
	if err != nil {
		return err
	}
	if d.cur.app != nil {
		e.warnRepinned(d.cur.app.FileDigests, final.FileDigests)
	}
	d.stored, d.final = stored, final
	return nil
}

// keepRestartedAt gives stored the restarted_at of the deployed spec of
// the same version, unless the file sets one: app restart sets it in the
// deployed spec, never in the operator's file, and deploying the same file
// again must not restart every instance.
func keepRestartedAt(d *deployment, stored []byte) ([]byte, error) {
	cur := d.cur.app
	if cur == nil || cur.Version != d.app.Version || cur.RestartedAt == "" || d.app.RestartedAt != "" {
		return stored, nil
	}
	t, err := time.Parse(time.RFC3339Nano, cur.RestartedAt)
	if err != nil {
		return nil, fmt.Errorf("restarted_at of the deployed spec of %s: %w", d.app.Name, err)
	}
	if stored, err = spec.SetRestartedAt(d.file, stored, t); err != nil {
		return nil, fmt.Errorf("keep restarted_at of the deployed spec of %s: %w", d.app.Name, err)
	}
	return stored, nil
}

// followDeploy waits for the rollout w follows and reports it.
func (e *env) followDeploy(ctx context.Context, c *ucli.Context, res deployResult, w *waiter) error {
	r, err := w.wait(ctx, c.Duration(flagTimeout), !c.Bool(flagJSON))
	res.Rollout = r
	if c.Bool(flagJSON) {
		if perr := e.printJSON(res); perr != nil {
			return perr
		}
	}
	if err != nil {
		if !res.Changed && len(r.Failed) > 0 {
			// The same spec stored again starts nothing: what failed
			// failed before this deploy, and stays failed.
			err = fmt.Errorf("%w (spec unchanged, so nothing was started again: narun ctl app restart %s starts its instances anew)", err, res.App)
		}
		return rolloutError(err)
	}
	if !c.Bool(flagJSON) {
		unchanged := ""
		if !res.Changed {
			unchanged = " (spec unchanged: nothing rolled out)"
		}
		fmt.Fprintf(e.out(), "%s %s: %d instance(s) ready%s\n", res.App, res.Version, len(r.Ready), unchanged)
		e.reportUID(res)
	}
	return nil
}

func (e *env) reportDeploy(c *ucli.Context, res deployResult, bins []binaryFile) error {
	if c.Bool(flagJSON) {
		return e.printJSON(res)
	}
	verb := "deployed"
	switch {
	case res.DryRun && !res.compared:
		verb = "valid (dry run, nothing uploaded or written)"
	case res.DryRun && res.Changed:
		verb = "valid (dry run, nothing uploaded or written); the deploy would change the stored spec"
	case res.DryRun:
		verb = "valid (dry run, nothing uploaded or written); unchanged: the deploy would store the same spec"
	case !res.Changed:
		verb = "unchanged"
	}
	fmt.Fprintf(e.out(), "%s %s: %s\n", res.App, res.Version, verb)
	for _, b := range bins {
		fmt.Fprintf(e.out(), "  linux/%s  %s  %d bytes  sha256:%s\n", b.Arch, b.Object, b.Size, b.SHA256[:12])
	}
	if len(bins) == 0 && res.pinnedFrom != "" {
		for _, arch := range slices.Sorted(maps.Keys(res.Pinned)) {
			b := res.Pinned[arch]
			fmt.Fprintf(e.out(), "  linux/%s  %s  %s  sha256:%s\n", arch, b.Object, res.pinnedFrom, b.SHA256[:12])
		}
	}
	if res.Routes > 0 {
		fmt.Fprintf(e.out(), "  %d route(s)\n", res.Routes)
	}
	e.reportUID(res)
	return nil
}

// reportUID says which uid a sandboxed app runs as, when ctl knows it.
func (e *env) reportUID(res deployResult) {
	if res.UID == nil {
		return
	}
	who := fmt.Sprintf("uid and gid %d", *res.UID)
	if res.Group != "" {
		who = fmt.Sprintf("uid %d, group %s", *res.UID, res.Group)
	}
	fmt.Fprintf(e.out(), "  runs as %s, its own on every node: a host directory it must write ([[sandbox.paths]] \"rw\") must be writable by it\n", who)
}

// inspectBinary checks that p is a Linux executable for a supported arch and
// digests it.
func inspectBinary(p string, app *spec.App) (binaryFile, error) {
	arch, err := elfarch.DetectFile(p)
	if err != nil {
		return binaryFile{}, binaryError(p, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return binaryFile{}, binaryError(p, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return binaryFile{}, fmt.Errorf("--binary %s: read: %w", p, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	return binaryFile{
		Path:   p,
		Arch:   arch,
		Size:   n,
		SHA256: sum,
		Object: binaryObject(app, arch, sum),
	}, nil
}

// binaryError names the --binary flag and its file p in err, which names
// p already (elfarch) or is the PathError of an open or stat of it.
func binaryError(p string, err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == p {
		return fmt.Errorf("--binary %s: %w", p, pe.Err)
	}
	return fmt.Errorf("--binary %w", err)
}

// binaryObject names the object of a binary after its content as well as
// its app, version and arch: another build of the same version is then a
// new object, and the one a deployed spec pins is never overwritten (a
// deploy that fails after its upload would otherwise leave nodes without
// the binary cached unable to run the stored spec).
func binaryObject(app *spec.App, arch, sum string) string {
	return app.Name + "/" + app.Version + "/linux-" + arch + "-" + sum[:12]
}

// warnPrivilegedHostPort warns of a sandboxed app on the host network
// whose [http] port is below 1024: the app has no capability, even as
// root, so it binds the port only on a node whose network lowered
// net.ipv4.ip_unprivileged_port_start (narun run in a container often
// is), which ctl cannot see. A warning, not a refusal, for those nodes.
func (e *env) warnPrivilegedHostPort(app *spec.App) {
	if app.Mode != spec.ModeSandbox || app.Sandbox.Network != "host" || app.HTTP.Port <= 0 || app.HTTP.Port >= 1024 {
		return
	}
	e.warnf("[http] port %d is below 1024: a sandboxed app has no capability, even as root, so on the host network it binds the port only where the node lowered net.ipv4.ip_unprivileged_port_start; choose 1024 or above, or [sandbox] network = \"none\" or \"isolated\", where every port is the app's", app.HTTP.Port)
}

// warnDynamicBinaries names each dynamically linked binary of a sandboxed
// app that lacks the shared_libs preset: Landlock would refuse its loader,
// and every instance would fail to start after the upload.
func (e *env) warnDynamicBinaries(app *spec.App, bins []binaryFile) {
	if app.Mode != spec.ModeSandbox || slices.Contains(app.Sandbox.Presets, sandbox.PresetSharedLibs) {
		return
	}
	for _, b := range bins {
		if interp := sandbox.Interpreter(b.Path); interp != "" {
			e.warnf("%s is dynamically linked (loader %s) but [sandbox] presets lack %q: its instances will fail to start; build it static (CGO_ENABLED=0) or add the preset", b.Path, interp, sandbox.PresetSharedLibs)
		}
	}
}

// current is the deployed spec of an app.
type current struct {
	app *spec.App // nil when absent or unparsable
	raw []byte
	rev uint64 // 0 when absent
	// last is the revision of the key's last entry, its deletion's when
	// deleted: what a write over it is conditional on.
	last uint64
}

// pinned returns the binary the deployed spec pins for arch.
func (c current) pinned(arch string) (spec.Binary, bool) {
	if c.app == nil {
		return spec.Binary{}, false
	}
	b, ok := c.app.Binaries[arch]
	return b, ok
}

// currentSpec reads the deployed spec of name: the revision a deploy's
// write is conditional on, and, read again after its routes, whether an
// app delete or another deploy came in between. It asks the leader of
// narun-apps, as patientKV's Get does, but keeps the revision of a
// deletion, which Get hides behind ErrKeyNotFound: a deploy over a
// deletion writes conditionally on it. A bucket that does not exist (a
// dry run creates none) holds no spec.
func currentSpec(ctx context.Context, e *env, name string) (current, error) {
	var entry store.Entry
	err := e.within(ctx, func(ctx context.Context) (err error) {
		entry, err = untilAnswered(ctx, func(ctx context.Context) (store.Entry, error) {
			return store.EntryFromLeader(ctx, e.nc, names.AppsBucket, name)
		})
		return err
	})
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamNotFound {
		return current{}, nil
	}
	if err != nil {
		return current{}, fmt.Errorf("read deployed spec of %s: %w", name, err)
	}
	if entry.Deleted {
		return current{last: entry.Revision}, nil
	}
	// A stored spec nodes cannot parse is replaced, not kept; one they run
	// still lends its binaries and restarted_at to a deploy of its version.
	a, _, _ := spec.ParseStored(names.AppsBucket+"/"+name, entry.Value)
	if a != nil && a.StoredUnder(name) != nil {
		// Another app's spec lends nothing: nodes refuse it under this key.
		a = nil
	}
	return current{app: a, raw: entry.Value, rev: entry.Revision, last: entry.Revision}, nil
}

// checkReferences fails before any upload when a secret or file the spec
// needs is missing, instead of every node failing at start. What it read
// gives the SHA-256 of each file object, for the spec to pin.
func (e *env) checkReferences(ctx context.Context, app *spec.App) (uses, error) {
	u, err := e.references(ctx, app)
	if err != nil {
		return uses{}, err
	}
	if len(u.missing) > 0 {
		return uses{}, fmt.Errorf("nothing deployed: %w", errors.Join(u.missing...))
	}
	return u, nil
}

// uses is what references read of the secrets and files a spec uses.
type uses struct {
	// digests is the SHA-256 (hex) of each file object that exists.
	digests map[string]string
	// sealedWith is the key id of each secret that exists; "" for one
	// whose stored value does not parse.
	sealedWith map[string]string
	// missing names the secrets and files that do not exist.
	missing []error
}

// references reads the secrets and file objects app uses, one read each.
func (e *env) references(ctx context.Context, app *spec.App) (uses, error) {
	var u uses
	if len(app.Secrets) > 0 {
		kv, err := e.kv(ctx, names.SecretsBucket)
		if err != nil {
			return uses{}, err
		}
		u.sealedWith = map[string]string{}
		checked := map[string]bool{}
		var absent []string
		for _, s := range app.Secrets {
			if checked[s.Name] {
				continue
			}
			checked[s.Name] = true
			octx, cancel := e.op(ctx)
			entry, err := kv.Get(octx, s.Name)
			cancel()
			switch {
			case isNotFound(err):
				absent = append(absent, s.Name)
				continue
			case err != nil:
				return uses{}, fmt.Errorf("check secret %q: %w", s.Name, err)
			}
			// One that does not parse exists all the same: the node that
			// fails to open it says why.
			if sealed, err := secrets.Unmarshal(entry.Value()); err == nil {
				u.sealedWith[s.Name] = sealed.KeyID
			} else {
				u.sealedWith[s.Name] = ""
				e.log.Debug("read secret", "secret", s.Name, "err", err)
			}
		}
		stored := e.secretNames(ctx, kv, absent)
		for _, name := range absent {
			u.missing = append(u.missing, fmt.Errorf("secret %q does not exist%s", name, didYouMean(name, stored, "narun ctl secret set "+name)))
		}
	}
	digests, missingFiles, err := e.fileDigests(ctx, app.Files)
	if err != nil {
		return uses{}, err
	}
	u.digests, u.missing = digests, append(u.missing, missingFiles...)
	return u, nil
}

// fileDigests reads the SHA-256 (hex) of each object files use; missing
// names those narun-files lacks.
func (e *env) fileDigests(ctx context.Context, files []spec.File) (digests map[string]string, missing []error, err error) {
	if len(files) == 0 {
		return nil, nil, nil
	}
	obs, err := e.objects(ctx, names.FilesBucket)
	if err != nil {
		return nil, nil, err
	}
	digests = map[string]string{}
	var absent []string
	for _, f := range files {
		if _, done := digests[f.Object]; done || slices.Contains(absent, f.Object) {
			continue
		}
		octx, cancel := e.op(ctx)
		info, err := obs.GetInfo(octx, f.Object)
		cancel()
		switch {
		case isNotFound(err):
			absent = append(absent, f.Object)
			continue
		case err != nil:
			return nil, nil, fmt.Errorf("check file %q: %w", f.Object, err)
		}
		if digests[f.Object] = store.DigestHex(info); digests[f.Object] == "" {
			return nil, nil, fmt.Errorf("check file %q: %s gives no SHA-256 digest (%q)", f.Object, names.FilesBucket, info.Digest)
		}
	}
	// Files put says to store the name as spelt, which for a typo puts the
	// file under the typo: a near name stored is more likely what was meant.
	stored := e.fileNames(ctx, absent)
	for _, name := range absent {
		missing = append(missing, fmt.Errorf("file %q does not exist%s", name, didYouMean(name, stored, "narun ctl files put "+name+" FILE")))
	}
	return digests, missing, nil
}

// checkPinned verifies that the objects a spec pins exist with its
// digests and are builds for the arch that pins them; file and src (the
// spec's text, nil when not at hand) place a wrong arch.
func (e *env) checkPinned(ctx context.Context, file string, src []byte, pinned map[string]spec.Binary) error {
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		return err
	}
	for arch, b := range pinned {
		octx, cancel := e.op(ctx)
		info, err := obs.GetInfo(octx, b.Object)
		cancel()
		if isNotFound(err) {
			return notFound("binary %s for %s is not in %s", b.Object, arch, names.BinariesBucket)
		}
		if err != nil {
			return fmt.Errorf("check binary %s: %w", b.Object, err)
		}
		if store.DigestHex(info) != b.SHA256 {
			return fmt.Errorf("binary %s has sha256 %s, the spec pins %s", b.Object, store.DigestHex(info), b.SHA256)
		}
		// A node runs what its arch's table names: a build of another arch
		// would crash-loop there on "exec format error".
		if built := objectArch(info); built != "" && built != arch {
			key := "binaries." + arch
			return &spec.FieldError{File: file, Line: tableLine(src, key), Key: key,
				Msg: fmt.Sprintf("binary %s is a linux/%s binary, not %s: pin a build for %s (narun ctl deploy FILE --binary BUILD)", b.Object, built, arch, arch)}
		}
	}
	return nil
}

// objectArch is the arch of a stored binary: its metadata, written at
// upload, or else the linux-<arch> part of its name (specs stored by older
// ctl versions name builds <name>/<version>/linux-<arch>); "" when neither
// says.
func objectArch(info *jetstream.ObjectInfo) string {
	if a := info.Metadata["arch"]; a != "" {
		return a
	}
	base := info.Name[strings.LastIndexByte(info.Name, '/')+1:]
	rest, ok := strings.CutPrefix(base, "linux-")
	if !ok {
		return ""
	}
	arch, _, _ := strings.Cut(rest, "-")
	return arch
}

// tableLine is the line of src that opens the table key ("binaries.amd64"),
// or 0 when src has none (an inline table, a spec read from the store).
func tableLine(src []byte, key string) int {
	for i, line := range strings.Split(string(src), "\n") {
		if strings.TrimSpace(line) == "["+key+"]" {
			return i + 1
		}
	}
	return 0
}

// keepPinned gives b the name of the object the deployed spec pins for its
// arch when that object holds the same bytes: keeping the name (which an
// older ctl chose without the digest) keeps the spec, and so every
// instance, unchanged.
func (e *env) keepPinned(ctx context.Context, obs jetstream.ObjectStore, cur current, b *binaryFile) {
	prev, ok := cur.pinned(b.Arch)
	if !ok || prev.SHA256 != b.SHA256 || prev.Object == b.Object {
		return
	}
	octx, cancel := e.op(ctx)
	info, err := obs.GetInfo(octx, prev.Object)
	cancel()
	if err == nil && store.DigestHex(info) == b.SHA256 {
		b.Object = prev.Object
	}
}

// upload puts a binary into narun-binaries unless the same bytes are
// already there, retrying transient failures. Bytes other than those
// hashed (a file changed since) fail it before they are stored as the
// object (putObject). An object that holds other bytes is never replaced:
// a stored spec may pin it.
func (e *env) upload(ctx context.Context, obs jetstream.ObjectStore, b *binaryFile) error {
	octx, cancel := e.op(ctx)
	info, err := obs.GetInfo(octx, b.Object)
	cancel()
	switch {
	case err == nil && store.DigestHex(info) == b.SHA256:
		// Its chunks may be damaged on disk though its digest, kept
		// apart, is intact: nodes then fail every download of it, and a
		// deploy again of the same bytes is how an operator would fix
		// that. Reading it through checks them.
		verr := e.readThrough(ctx, obs, b)
		if verr == nil {
			e.log.Debug("binary already uploaded", "object", b.Object)
			return nil
		}
		if !errors.Is(verr, jetstream.ErrDigestMismatch) {
			return fmt.Errorf("check %s: %w", b.Object, verr)
		}
		e.infof("%s in %s is damaged (%v): uploading it again", b.Object, names.BinariesBucket, verr)
	case err == nil:
		return fmt.Errorf("upload %s: object %s already holds other bytes (sha256 %s) and is not replaced; nothing deployed (narun ctl image delete %s if no spec uses it)", b.Path, b.Object, store.DigestHex(info), b.Object)
	case !isNotFound(err):
		return fmt.Errorf("check %s: %w", b.Object, err)
	}
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = e.putBinary(ctx, b)
		if err == nil || attempt == 4 || ctx.Err() != nil || !transient(err) || e.nc.IsClosed() {
			break
		}
		e.infof("upload %s failed (%v), retrying in %s", b.Object, err, backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	if err != nil && e.nc.IsClosed() {
		return fmt.Errorf("upload %s: %w (%s)", b.Path, err, e.connectionLost())
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", b.Path, err)
	}
	return nil
}

// connectionLost says that ctl's connection to NATS is closed, and why if
// the client knows: ctl stops reconnecting after a few attempts, so every
// command over it fails from then on, and only a run again once NATS is
// back can succeed.
func (e *env) connectionLost() string {
	why := ""
	if err := e.nc.LastError(); err != nil {
		why = " (" + err.Error() + ")"
	}
	return "the connection to NATS was lost" + why + " and ctl gave up reconnecting: check that NATS is up and reachable from here, then run this again"
}

// stampPins stamps each build and file the spec to store pins
// (stampObject) just before it is stored, so that no concurrent deploy's
// prune takes a build for one left behind, however long ago it was
// uploaded, and image delete and files delete refuse what is stamped
// within prune_grace: neither can see the spec this deploy is about to
// store. One of this deploy's builds that such a prune deleted since it
// was checked is uploaded again; any other pin that is gone fails the
// deploy, as the check before the upload would have.
func (e *env) stampPins(ctx context.Context, d *deployment) error {
	for _, obj := range slices.Sorted(maps.Keys(d.final.FileDigests)) {
		err := e.stampObject(ctx, names.FilesBucket, obj, d.final.FileDigests[obj])
		switch {
		case errors.Is(err, errNoObject):
			return notFound("nothing deployed: file %q was deleted from %s since it was checked (narun ctl files delete?); narun ctl files put %s FILE, then deploy again", obj, names.FilesBucket, obj)
		case err != nil:
			return fmt.Errorf("nothing deployed: file %q: %w", obj, err)
		}
	}
	for _, arch := range slices.Sorted(maps.Keys(d.final.Binaries)) {
		b := d.final.Binaries[arch]
		err := e.stampObject(ctx, names.BinariesBucket, b.Object, b.SHA256)
		if err == nil {
			continue
		}
		i := slices.IndexFunc(d.bins, func(f binaryFile) bool { return f.Object == b.Object })
		switch {
		case !errors.Is(err, errNoObject):
			return fmt.Errorf("nothing deployed: binary %s for %s: %w", b.Object, arch, err)
		case i < 0:
			return notFound("nothing deployed: binary %s for %s was deleted from %s since it was checked (narun ctl image delete?); deploy with --binary", b.Object, arch, names.BinariesBucket)
		}
		e.infof("%s was deleted from %s since it was checked (another deploy's prune?): uploading it again", b.Object, names.BinariesBucket)
		if err := e.upload(ctx, d.obs, &d.bins[i]); err != nil {
			return err
		}
	}
	return nil
}

// readThrough reads the stored object of b to its end, which checks its
// content against its digest. As an upload, it gives up once nothing has
// come for e.timeout, not at a deadline set from the size: 10 MiB takes
// 84 s at 1 Mbit/s. nats.go's Get knows only a deadline, and its read
// waits for it without a way to be woken, so that one is set no link that
// carries anything misses (8 KiB/s), and a stalled read is left to it.
func (e *env) readThrough(ctx context.Context, obs jetstream.ObjectStore, b *binaryFile) error {
	obj, err := store.OpenObject(ctx, obs, b.Object, e.timeout+time.Duration(b.Size/(8<<10))*time.Second)
	if err != nil {
		return err
	}
	stalled := make(chan struct{}, 1)
	idle := time.AfterFunc(e.timeout, func() {
		select {
		case stalled <- struct{}{}:
		default:
		}
	})
	defer idle.Stop()
	done := make(chan error, 1)
	go func() {
		defer obj.Close()
		_, err := io.Copy(io.Discard, &progressReader{r: obj, read: func() { idle.Reset(e.timeout) }})
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-stalled:
		return fmt.Errorf("read %s: nothing came for %s: %w", b.Object, e.timeout, nats.ErrTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// progressReader calls read each time r gives data.
type progressReader struct {
	r    io.Reader
	read func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.read()
	}
	return n, err
}

func (e *env) putBinary(ctx context.Context, b *binaryFile) error {
	f, err := os.Open(b.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	var acked func(int)
	var bar *progress
	if isTerminal(e.stdio.Stderr) && !e.jsonLogs() {
		// Drawn as the server acknowledges chunks, not as they are read:
		// a slow link would show a full bar long before it is.
		bar = &progress{w: e.stdio.Stderr, name: b.Object, total: b.Size}
		acked = bar.add
	}
	hdr := nats.Header{}
	hdr.Set("Narun-Sha256", b.SHA256)
	hdr.Set("Narun-Arch", b.Arch)
	_, err = e.putObject(ctx, names.BinariesBucket, jetstream.ObjectMeta{
		Name:        b.Object,
		Description: "linux/" + b.Arch + " binary",
		Headers:     hdr,
		Metadata:    map[string]string{"arch": b.Arch, "os": "linux", "sha256": b.SHA256},
	}, f, b.SHA256, acked)
	if bar != nil {
		bar.done()
	}
	return err
}

// transient reports whether a failed upload is worth another attempt. A
// closed connection is not: ctl's connection stays closed once it gave up
// reconnecting (connect), so each attempt would fail the same way. Nor is
// a full disk, whose store takes no write until its server restarts.
func transient(err error) bool {
	if store.DiskFull(err) {
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}

// progress draws a one-line bar on a terminal.
type progress struct {
	w     io.Writer
	name  string
	total int64
	n     int64
	last  int
}

func (p *progress) add(n int) {
	p.n += int64(n)
	pct := 100
	if p.total > 0 {
		pct = int(p.n * 100 / p.total)
	}
	if pct != p.last {
		p.last = pct
		const width = 30
		fill := pct * width / 100
		fmt.Fprintf(p.w, "\r%s [%-*s] %3d%%", p.name, width, bytes.Repeat([]byte("="), fill), pct)
	}
}

func (p *progress) done() { fmt.Fprintln(p.w) }

// warnAbsentNodes names the nodes the spec lists that have no heartbeat:
// rollouts and status count only nodes that are there, so a typo or a node
// that is down would otherwise go unnoticed.
func (e *env) warnAbsentNodes(nodes []state.Node, app *spec.App) {
	for _, id := range app.Nodes {
		if slices.ContainsFunc(nodes, func(n state.Node) bool { return n.ID == id }) {
			continue
		}
		// A host name in capitals makes a node id in capitals, which
		// the spec's lower-case one, to DNS the same name, does not select.
		if i := slices.IndexFunc(nodes, func(n state.Node) bool { return strings.EqualFold(n.ID, id) }); i >= 0 {
			e.warnf("node %s sends no heartbeat; node %s does: node ids are case-sensitive", id, cli.Shown(nodes[i].ID))
			continue
		}
		ids := make([]string, len(nodes))
		for i, n := range nodes {
			ids[i] = n.ID
		}
		if s := suggestion(id, ids); s != "" {
			e.warnf("node %s sends no heartbeat (did you mean %q? it does); its instances start when its runner connects", id, s)
			continue
		}
		e.warnf("node %s sends no heartbeat (narun ctl node list shows those that do); its instances start when its runner connects", id)
	}
	// A node that died moments ago keeps its heartbeat until the entry
	// expires: it is selected, yet runs nothing of this spec until back.
	for _, n := range nodes {
		if app.ReplicasOn(n.ID, n.Labels) > 0 && late(n, e.serverNow()) {
			e.warnf("node %s has sent no heartbeat %s (down or cut off?); its instances start when its runner is back", cli.Shown(n.ID), silence(n, e.serverNow()))
		}
	}
	// A label selector no live node matches (a typo, a node not yet
	// labelled) runs nothing, like a node id that is not there.
	if len(app.Labels) > 0 && !slices.ContainsFunc(nodes, func(n state.Node) bool { return app.Selects("", n.Labels) }) {
		pairs := make([]string, 0, len(app.Labels))
		for _, k := range slices.Sorted(maps.Keys(app.Labels)) {
			pairs = append(pairs, k+"="+app.Labels[k])
		}
		e.warnf("no node that sends a heartbeat has the labels %s (narun ctl node list shows them); instances start on a node once it does", strings.Join(pairs, ","))
	}
}

// warnMissingArch names the nodes that select app but have no binary of
// their arch in it: their instances fail at once, which a deploy without
// --wait would otherwise report as a success.
func (e *env) warnMissingArch(nodes []state.Node, app *spec.App) {
	for _, n := range nodes {
		if app.ReplicasOn(n.ID, n.Labels) == 0 {
			continue
		}
		if _, ok := app.Binary(n.Arch); !ok {
			e.warnf("node %s is linux/%s and this spec has no %s binary: its instances fail (deploy one with --binary)", cli.Shown(n.ID), cli.Shown(n.Arch), cli.Shown(n.Arch))
		}
	}
}

// warnNoSandbox names the nodes that select a sandboxed app and say in
// their heartbeat that they cannot run a sandbox, a runner that is not
// root most often (a first narun up by a user): their instances fail at
// once, which a deploy without --wait would otherwise not show. A
// heartbeat that lists no namespaces says nothing either way.
func (e *env) warnNoSandbox(nodes []state.Node, app *spec.App) {
	if app.Mode != spec.ModeSandbox {
		return
	}
	for _, n := range nodes {
		if app.ReplicasOn(n.ID, n.Labels) == 0 || n.Capabilities.Sandbox || len(n.Capabilities.Namespaces) == 0 {
			continue
		}
		e.warnf("node %s cannot run mode = \"sandbox\" (its runner is not root, or the kernel lacks a namespace it needs): its instances fail", cli.Shown(n.ID))
	}
}

// refuseUnrunnable refuses, unless force, to store app signed by key
// (nil: unsigned) when every selected node in nodes that sends heartbeats
// would refuse it for its signature. Stored, it would change nothing while
// ctl said it stored it: runners keep the instances they run, and gateways
// trusting the same keys refuse its routes entry and keep the routes they
// serve. A node whose heartbeats have stopped may have been given the key
// meanwhile, and one listed in the spec that has sent none may be a device
// being set up with it: either lets it through. Deploy and rollback store a spec alike,
// and refuse alike.
func (e *env) refuseUnrunnable(nodes []state.Node, heartbeats bool, app *spec.App, key *signing.Key, force bool) error {
	if !heartbeats || force {
		return nil
	}
	selected := 0
	for _, n := range nodes {
		if app.Selects(n.ID, n.Labels) {
			selected++
		}
	}
	for _, id := range app.Nodes {
		if !slices.ContainsFunc(nodes, func(n state.Node) bool { return n.ID == id }) {
			selected++
		}
	}
	var why []string
	for _, r := range signedOnlyRefusals(nodes, app, key, e.serverNow()) {
		if !r.late {
			why = append(why, "node "+cli.Shown(r.node)+" "+r.why)
		}
	}
	if len(why) == 0 || len(why) < selected {
		return nil
	}
	return fmt.Errorf("no node that %s selects would run it: %s; stored, it would change nothing: runners keep the instances they run, and gateways that trust the same keys the routes they serve (--force stores it all the same)", app.Name, strings.Join(why, "; "))
}

// signedOnlyRefusal is a selected node that runs only signed specs and would refuse
// a spec, and why; late when its heartbeats have stopped, and what it
// says is what it last said.
type signedOnlyRefusal struct {
	node, why string
	late      bool
}

// signedOnlyRefusals are the nodes that select app, run only signed specs
// and refuse the one signed by key (nil: unsigned), as of now.
func signedOnlyRefusals(nodes []state.Node, app *spec.App, key *signing.Key, now time.Time) []signedOnlyRefusal {
	var out []signedOnlyRefusal
	for _, n := range nodes {
		if !n.SignaturesRequired || !app.Selects(n.ID, n.Labels) {
			continue
		}
		var why string
		switch {
		case key == nil:
			why = "runs only signed specs and ctl has no signing key (signing_key_file)" + nodeKeyUnusable(n)
		// A node of narun up signing with its node key trusts it alone,
		// and trusted_keys set there replace it (docs/SECURITY.md).
		case !slices.Contains(n.TrustedKeys, key.Public()) && n.SigningKeyFile != "":
			why = "runs only signed specs and does not trust ctl's key " + key.Public() + " (sign with its node key: --signing-key with a copy of its " + cli.Shown(n.SigningKeyFile) + "; or add ctl's key to its [runner] and [gateway] trusted_keys, which then replace the node key)"
		case !slices.Contains(n.TrustedKeys, key.Public()):
			why = "runs only signed specs and does not trust ctl's key " + key.Public() + " (add it to that node's trusted_keys)"
		default:
			continue
		}
		out = append(out, signedOnlyRefusal{node: n.ID, why: why, late: late(n, now)})
	}
	return out
}

// warnSignedOnly names the nodes that select app, run only signed specs
// and refuse the one this deploy stores: unsigned (key is nil) or signed
// by a key they do not trust. It says so before writing instead of leaving
// the operator to find out why nothing starts. It returns the nodes that
// are up: what a node whose heartbeats have stopped last said may have
// changed by the time it is back (it was down to be given the key), and
// a rollout does not wait for it.
func (e *env) warnSignedOnly(nodes []state.Node, app *spec.App, key *signing.Key) []string {
	var refusing []string
	for _, r := range signedOnlyRefusals(nodes, app, key, e.serverNow()) {
		if r.late {
			e.warnf("node %s, whose heartbeats have stopped (late: down?), last said it %s: unless that changed, it will not run this deploy when it is back", cli.Shown(r.node), r.why)
			continue
		}
		e.warnf("node %s %s: it will not run this deploy", cli.Shown(r.node), r.why)
		refusing = append(refusing, r.node)
	}
	return refusing
}

// checkRoutes refuses routes that clash with another app's before anything
// is uploaded or written. With a key, it counts only entries the key
// signed: any app may write narun-routes, and one claiming another app's
// path must not keep the operator from deploying that app.
func (e *env) checkRoutes(ctx context.Context, app *spec.App, key *signing.Key) error {
	if len(app.Routes) == 0 {
		return nil
	}
	others, unsigned, err := e.appRoutes(ctx, key)
	if err != nil {
		return err
	}
	for _, other := range slices.Sorted(maps.Keys(unsigned)) {
		if other == app.Name {
			continue // this deploy replaces it
		}
		delete(others, other)
		e.warnf("the routes entry %q in %s is not signed by this ctl's key (%s): nodes with trusted keys ignore it, and so does this deploy's route check", other, names.RoutesBucket, unsigned[other])
	}
	if err := gateway.CheckAppRoutes(app.Name, app.Routes, others); err != nil {
		return fmt.Errorf("nothing deployed: %w (narun ctl route list shows the routes of every app)", err)
	}
	return nil
}

// putRoutes registers the spec's routes with every gateway, or removes the
// app's routes when it has none any more.
func (e *env) putRoutes(ctx context.Context, app *spec.App, key *signing.Key) error {
	kv, err := e.kv(ctx, names.RoutesBucket)
	if err != nil {
		return err
	}
	// Each operation with the whole --timeout (within, write): the spec is
	// stored already, and routes left unwritten by a deadline that the
	// reads before ran down would lag it.
	if len(app.Routes) == 0 {
		if err := e.write(ctx, names.RoutesBucket, func(ctx context.Context) error { return kv.Delete(ctx, app.Name) }); err != nil && !isNotFound(err) {
			return fmt.Errorf("remove routes of %s: %w", app.Name, err)
		}
		return nil
	}
	want, err := gateway.EncodeEntry(app.Name, app.Routes, 0)
	if err != nil {
		return err
	}
	order, err := e.readOrder(ctx, kv, app.Name, key, entrySequence(app.Name))
	if err != nil {
		return err
	}
	var cur jetstream.KeyValueEntry
	if err := e.within(ctx, func(ctx context.Context) (err error) { cur, err = kv.Get(ctx, app.Name); return err }); err == nil && sameEntry(key, app.Name, cur.Value(), order.live, want) {
		return nil
	}
	b := want
	if key != nil {
		if b, err = gateway.EncodeEntry(app.Name, app.Routes, signing.NextSequence(order.last, order.now)); err != nil {
			return err
		}
		b = key.Sign(b)
	}
	if err := e.write(ctx, names.RoutesBucket, func(ctx context.Context) error { _, err := kv.Put(ctx, app.Name, b); return err }); err != nil {
		return fmt.Errorf("store routes of %s: %w", app.Name, err)
	}
	return nil
}

// sameEntry reports whether cur, the stored entry of app, holds want, an
// unsigned entry without a sequence: as it is without a key, and signed
// by key with a sequence with one, which nodes accept (live, readOrder).
func sameEntry(key *signing.Key, app string, cur, live, want []byte) bool {
	if key == nil {
		return bytes.Equal(cur, want)
	}
	if notOurs(key, cur) != "" || !bytes.Equal(cur, live) {
		return false
	}
	e, err := gateway.DecodeEntry(app, signing.Strip(cur))
	if err != nil || !e.Named || e.Sequence == 0 {
		return false
	}
	b, err := gateway.EncodeEntry(app, e.Routes, 0)
	return err == nil && bytes.Equal(b, want)
}

// dropRoutesOfDeleted removes app's routes entry, its spec gone. The spec
// and the routes are two writes: an `app delete` that lands between a
// deploy's spec and its routes removes both before the routes are
// written, and would leave them behind, answering 503 for a path no other
// app may take. Delete removes the routes again after the spec, and a
// deploy reads the spec again after its routes (settleRoutes): whichever
// writes the routes last sees the deletion.
func (e *env) dropRoutesOfDeleted(ctx context.Context, app string) error {
	routes, err := e.kv(ctx, names.RoutesBucket)
	if err != nil {
		return err
	}
	if err := e.write(ctx, names.RoutesBucket, func(ctx context.Context) error { return routes.Delete(ctx, app) }); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove routes of deleted app %s: %w", app, err)
	}
	return fmt.Errorf("%s was deleted while this ran (narun ctl app delete?); its routes are removed too: deploy it again if it should run", app)
}

// lostRace reports whether a conditional KV write failed because another
// writer got there first, as opposed to any other failure.
func lostRace(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &api) &&
		(api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
