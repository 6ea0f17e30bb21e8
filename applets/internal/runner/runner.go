// Package runner is the node agent: it watches the narun-apps bucket,
// fetches and verifies the binaries of the apps selected for its node, runs
// their instances under supervisors, and publishes their state, events and
// output. Each app is reconciled by its own goroutine, so a slow download or
// stop of one app never delays another, nor the heartbeat.
package runner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/atomicfile"
	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/sdnotify"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/sandbox"
)

// CommandFactory builds the process of an instance; see supervisor.CommandFactory.
type CommandFactory = supervisor.CommandFactory

// InstanceLaunch is what a CommandFactory starts; see supervisor.InstanceLaunch.
type InstanceLaunch = supervisor.InstanceLaunch

// Options configure a Runner.
type Options struct {
	// Config is the [runner] table; NodeID "" means the first label of
	// the host name, made a valid id (hostNodeID).
	Config config.Runner
	// DataDir holds the binary cache, the instance directories and the
	// cached specs; required.
	DataDir string
	// Conn reaches NATS; required. It should reconnect for ever: the runner
	// keeps its apps running while it is disconnected.
	Conn *nats.Conn
	// AppNATSURL is the URL given to apps when Config.AppNATSURL, which the
	// user sets, is empty; "" means Config.NATSURL, then the URL Conn is
	// connected to, without the runner's login.
	AppNATSURL string
	// Logger receives the runner's messages; nil discards them.
	Logger *slog.Logger
	// Command builds the processes of instances in every mode; nil runs
	// mode "exec" as it is, through the hidden exec-app applet, and mode
	// "sandbox" through the sandbox launcher, which needs the process to
	// be narun (or to handle the "exec-app" and "launcher" arguments as
	// narun does).
	Command CommandFactory
	// SigningKeyFile is the node key file of narun up, which its
	// heartbeat names for narun ctl on the same machine; "" when narun up
	// does not sign with a node key.
	SigningKeyFile string
	// Hidden are the files of narun on this node that a sandboxed app
	// finds empty whatever it is granted (config.File.PrivateFiles: the
	// configuration, keys and credentials); SigningKeyFile is too.
	Hidden []string
}

// Runner is the node agent. Create it with New, then call Run once.
type Runner struct {
	opts Options
	// connected follows the NATS connection's status (followConn).
	connected atomic.Bool
	node      string
	labels    map[string]string
	log       *slog.Logger
	appURL    string
	started   time.Time
	// awaitingSpecs is set until the runner has read the app specs once
	// since its start (state.Node.AwaitingSpecs).
	awaitingSpecs atomic.Bool
	cache         *cache
	links         execLinks
	keys          keyFile
	// keysWarned is set while the key file is unreadable and that was
	// logged.
	keysWarned struct {
		sync.Mutex
		on bool
	}
	caps state.Capabilities
	// signatures checks every spec before it is read: with trusted keys,
	// JetStream can be made to write narun-apps for a login kept off it
	// (docs/SECURITY.md, "Signed specs").
	signatures *signing.Verifier
	// order refuses a signed spec older than one accepted before for its
	// app, deleted apps included; kept in the data dir.
	order *signing.Order
	// rolloutSlack is how much longer than its start_grace a rollout
	// waits for a new instance, download included, before it halts.
	rolloutSlack time.Duration
	// wall is what the wall clock reads at now, a reading of time.Now:
	// now itself, but for a test that steps it as NTP steps a device's.
	wall func(now time.Time) time.Time
	// logTimer arms the timer that tells, at the end of an instance's
	// log window, how many of its lines were dropped: time.AfterFunc, but
	// for a test that ends the window itself rather than wait out its
	// 30 s.
	logTimer func(d time.Duration, f func())
	// responders lists the instances of a NATS Micro service that answer
	// before an instance's process starts: respondersOf for 300 ms, but
	// for a test that counts the listings.
	responders func(ctx context.Context, service string) map[string]bool
	// cgroupScope is the cgroup subtree of this runner's instances.
	cgroupScope string
	sandboxes   sandboxes
	execCgroups execCgroups
	cpu         cpuTotals
	// noCgroup says once that exec instances run without cgroups.
	noCgroup sync.Once
	// sealedLocks orders the write of a secret's cached sealed copy
	// against its removal once the store deleted it.
	sealedLocks keyLocks
	// uses spares from gc the cached files and sealed secrets used after
	// it began listing what the apps keep.
	uses entryUses
	// gcMu runs one gc at a time: a later one drops the uses that an
	// earlier one, which listed before them, must still spare.
	gcMu sync.Mutex
	// gcWaiting says that a collect waits for gcMu, and will list the
	// apps after every deletion made until then.
	gcWaiting atomic.Bool
	// secretDrops counts the removals of the cached copies of deleted
	// secrets (dropIfDeleted): a fetch that read the store before one
	// must read it again before it caches what it read.
	secretDrops atomic.Uint64
	// revoked is the sequence of the delete of each secret whose cached
	// copy dropIfDeleted removed for it: a replica behind the leader may
	// still give the value before it, which must neither serve a start
	// nor be cached again. A secret set since forgets its entry; one
	// never set again keeps it, a name and a number.
	revoked struct {
		sync.Mutex
		at map[string]uint64
	}

	// res holds the JetStream handles once NATS answered; nil before.
	res atomic.Pointer[resources]
	// beat asks the heartbeat goroutine for an early heartbeat.
	beat chan struct{}
	// out publishes instance events and output lines.
	out *outbox

	mu   sync.Mutex
	apps map[string]*app
	// revs is the revision of narun-apps last applied for each app, its
	// spec's or its deletion's, since the current watch started, kept
	// after the app is gone: an entry that watch still held from before
	// it is not applied over it.
	revs map[string]uint64
	// listed is closed once a full listing of narun-apps was applied:
	// from then on the cached specs are out of date and never applied.
	listed chan struct{}
	// appsCtx is the context apps run in; set by Run.
	appsCtx context.Context
	appsWG  sync.WaitGroup

	// host and boot identify this run of the runner in its heartbeats.
	host, boot string
	// beatRev is the revision of the last heartbeat this runner wrote; only
	// the heartbeat goroutine uses it.
	beatRev uint64
	// beatWarned is when a heartbeat too large for a message was last
	// logged; only the heartbeat goroutine uses it.
	beatWarned time.Time
	dups       duplicates
}

type resources struct {
	apps     jetstream.KeyValue
	nodes    jetstream.KeyValue
	secrets  jetstream.KeyValue
	binaries jetstream.ObjectStore
	files    jetstream.ObjectStore
}

// New checks the options and prepares the data directory.
func New(opts Options) (*Runner, error) {
	if opts.Conn == nil {
		return nil, errors.New("runner: no NATS connection")
	}
	if opts.DataDir == "" {
		return nil, errors.New("runner: no data dir")
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("runner: data dir: %w", err)
	}
	opts.DataDir = dir
	if opts.Config.HeartbeatInterval <= 0 {
		opts.Config.HeartbeatInterval = config.Duration(5 * time.Second)
	}
	if opts.Config.ResyncInterval <= 0 {
		opts.Config.ResyncInterval = config.Duration(30 * time.Second)
	}
	node, err := nodeID(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	signatures, err := signing.NewVerifier("runner.trusted_keys", opts.Config.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	appURL, loginDropped := appNATSURL(opts)
	r := &Runner{
		opts:    opts,
		node:    node,
		labels:  opts.Config.Labels,
		log:     log.With("node", node),
		appURL:  appURL,
		started: time.Now(),
		apps:    map[string]*app{},
		revs:    map[string]uint64{},
		beat:    make(chan struct{}, 1),
		caps:    probeCapabilities(opts.Command == nil),

		signatures:   signatures,
		rolloutSlack: time.Minute,
		wall:         func(now time.Time) time.Time { return now },
		logTimer:     afterFunc,
	}
	r.responders = func(ctx context.Context, service string) map[string]bool {
		return r.respondersOf(ctx, service, 300*time.Millisecond)
	}
	if loginDropped && opts.Config.AppNATSCreds == "" && opts.Config.AppNATSNkey == "" {
		r.log.Warn("apps get this runner's NATS servers without its login and have none of their own: "+
			"a server that wants a login refuses them; give them one with [runner] app_nats_url "+
			"(user:password@ in the URL), app_nats_creds or app_nats_nkey", "app_nats_url", appURL)
	}
	r.out = newOutbox(opts.Conn, r.log)
	r.cgroupScope = cgroupScope(dir)
	r.host, _ = os.Hostname()
	r.boot = randomHex(8)
	if r.opts.Command == nil {
		r.opts.Command = r.command
	}
	r.keys.path = opts.Config.MasterKeyFile
	// Said at start, before a heartbeat, which NATS may delay, would.
	r.secretKeys()
	for _, d := range []string{r.instancesDir(), r.specsDir(), r.filesDir(), r.fileDigestsDir(), r.filesPinnedDir(), r.sealedDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("runner: create %s: %w", d, err)
		}
	}
	if r.order, err = signing.LoadOrder(filepath.Join(dir, sequencesFile)); err != nil {
		r.log.Error("signed specs: replays of earlier ones are refused again from the next deploy of each app", "err", err)
	}
	if r.cache, err = newCache(filepath.Join(dir, "binaries"), r.log); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	r.links.dir = r.execDir()
	r.awaitingSpecs.Store(true)
	return r, nil
}

// nodeID is the id the runner heartbeats under: node_id, or one made of
// the host name.
func nodeID(cfg config.Runner) (string, error) {
	node := cfg.NodeID
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("node id: %w", err)
		}
		node = hostNodeID(h)
	}
	if err := spec.ValidName(node); err != nil {
		return "", fmt.Errorf("node id %q: %w", node, err)
	}
	return node, nil
}

// hostNodeID turns a host name into a node id, which must be a NATS
// subject token: the first label, with anything else than letters, digits,
// '-' and '_' replaced by '-'. A host named by its address keeps all of it:
// the first label of 10.0.0.5 is "10", which every such device of a site
// would share.
func hostNodeID(host string) string {
	if _, err := netip.ParseAddr(host); err != nil {
		host, _, _ = strings.Cut(host, ".")
	}
	id := []byte(host)
	for i, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			id[i] = '-'
		}
	}
	if len(id) == 0 {
		return "node"
	}
	return string(id[:min(len(id), spec.MaxNameLen)])
}

// appNATSURL is the first URL set of: what the user configured for apps,
// what the caller offers (narun up: its embedded server), the runner's own
// without its login (loginDropped says there was one). That login may
// deploy to every node; an app, whoever wrote it, must not hold it.
func appNATSURL(opts Options) (url string, loginDropped bool) {
	if given := cmp.Or(opts.Config.AppNATSURL, opts.AppNATSURL); given != "" {
		return given, false
	}
	own := cmp.Or(opts.Config.NATSURL, opts.Conn.ConnectedUrl())
	url = cli.WithoutLogins(own)
	return url, url != own
}

// sequencesFile, in the data dir, keeps the order of signed specs.
const sequencesFile = "sequences.json"

// NodeID is the id this runner heartbeats under.
func (r *Runner) NodeID() string { return r.node }

func (r *Runner) instancesDir() string   { return filepath.Join(r.opts.DataDir, "instances") }
func (r *Runner) specsDir() string       { return filepath.Join(r.opts.DataDir, "specs") }
func (r *Runner) filesDir() string       { return filepath.Join(r.opts.DataDir, "files") }
func (r *Runner) fileDigestsDir() string { return filepath.Join(r.opts.DataDir, "file-digests") }
func (r *Runner) filesPinnedDir() string { return filepath.Join(r.opts.DataDir, "files-pinned") }
func (r *Runner) sealedDir() string      { return filepath.Join(r.opts.DataDir, "secrets") }
func (r *Runner) execDir() string        { return filepath.Join(r.opts.DataDir, "exec") }

// lockDataDir takes the lock a runner holds on dataDir while it runs.
func lockDataDir(dataDir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dataDir, "runner.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runner: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("runner: data dir %s is in use by another runner (of narun runner or narun up): %w", dataDir, err)
	}
	return lock, nil
}

// CheckDataDirFree fails when another runner runs on dataDir, for narun up
// to refuse before it starts its NATS server and makes its node key there.
// It holds no lock: Run takes it, and refuses then if a runner took it in
// between.
func CheckDataDirFree(dataDir string) error {
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	return lock.Close()
}

// Run reconciles until ctx is cancelled, then stops every instance
// (gracefully, each within its stop_timeout) and returns.
func (r *Runner) Run(ctx context.Context) error {
	// Two runners on one data dir would kill each other's instances as
	// stale: the second one refuses to run.
	lock, err := lockDataDir(r.opts.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// Closing alone would not release it: a process that another
	// goroutine is starting holds a copy of the descriptor, and with it
	// the lock, until it execs, and a runner started on this data dir
	// right after Run returns was refused.
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if r.signatures.Enabled() {
		r.log.Info(fmt.Sprintf("runs only specs signed by %d trusted key(s)", len(r.opts.Config.TrustedKeys)))
	} else {
		r.log.Info("runs specs without checking signatures: runner.trusted_keys is empty")
	}
	killStale(r.instancesDir(), r.log)
	r.removeExecLinks()
	r.removeTemporaries()
	r.checkNodeID()
	if r.caps.CgroupVersion > 0 {
		if err := sandbox.CleanStaleUnder(r.cgroupScope); err != nil {
			r.log.Warn("remove cgroups left by an earlier runner", "err", err)
		}
	}
	appsCtx, stopApps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopApps()
	r.followConn(appsCtx)
	r.mu.Lock()
	r.appsCtx = appsCtx
	r.listed = make(chan struct{})
	r.mu.Unlock()

	stopOut := make(chan struct{})
	go r.out.run(stopOut)
	// Heartbeats go on while the apps stop, each within its stop_timeout,
	// so that app status shows them stopping rather than the state they
	// had before the stop, and stop once they have.
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBeats()
	var beats, syncing sync.WaitGroup
	beats.Go(func() { r.heartbeats(beatCtx) })
	syncing.Go(func() { r.sync(ctx) })
	r.awaitListing(ctx)
	r.awaitingSpecs.Store(false)
	r.poke()
	<-ctx.Done()

	// The apps stop before the sync goroutine is waited for: it may be in
	// a NATS request that waits out its timeout (the last members of a
	// cluster to stop have no JetStream majority), and a stop must not
	// wait for it. An app the sync starts meanwhile gets the cancelled
	// context and stops at once; appsWG is waited for once no more can
	// start. The heartbeats' requests are cancelled once the apps stopped.
	r.log.Info("stopping all instances")
	// systemd kills narun, and the apps with it, once TimeoutStopSec is
	// over: an app whose stop_timeout is longer asks for its time.
	if longest := r.longestStop(); longest > 0 {
		if err := sdnotify.ExtendStop(longest + stopMargin); err != nil {
			r.log.Warn("service manager not asked for the time the instances may take to stop", "stop_timeout", longest, "err", err)
		}
	}
	stopApps()
	syncing.Wait()
	r.appsWG.Wait()
	stopBeats()
	beats.Wait()
	// The apps' last events and lines go out, unless NATS does not take
	// them in time: a stop must not wait for it.
	close(stopOut)
	select {
	case <-r.out.done:
	case <-time.After(outboxFlush):
		r.log.Warn("instance events and output lines not all published before stopping", "waited", outboxFlush)
	}
	r.removeExecLinks()
	if r.caps.CgroupVersion > 0 {
		if err := sandbox.RemoveScope(r.cgroupScope); err != nil {
			r.log.Warn("remove this runner's cgroups", "err", err)
		}
	}
	if res := r.res.Load(); res != nil && r.opts.Conn.IsConnected() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		// Only the heartbeat this runner wrote: another runner with the same
		// node id may have written since, and its heartbeat must stay.
		if err := res.nodes.Delete(dctx, r.node, jetstream.LastRevision(r.beatRev)); err != nil {
			r.log.Debug("remove heartbeat", "err", err)
		}
		cancel()
	}
	return nil
}

// Kill ends every process of this runner's instances at once, without
// their stop signal and stop_timeout, and returns once their cgroups are
// empty (bounded, as at start): a stop cut short by a second SIGINT or
// SIGTERM calls it before narun exits. The parent-death signal ends each
// instance's first process, and with a sandbox's launcher its pid
// namespace, but not what an exec app forked, which would run on,
// orphaned in the instance's cgroup and directory, until the next runner
// on this data dir killed it as stale.
func (r *Runner) Kill() {
	if r.caps.CgroupVersion > 0 {
		if err := sandbox.CleanStaleUnder(r.cgroupScope); err != nil {
			r.log.Warn("kill the instances' processes", "err", err)
		}
	}
	// Exec instances without a cgroup: their process groups.
	killGroups(r.instancesDir())
}

// stopMargin is what a stop takes beyond the instances' stop_timeout: the
// last kills, removing cgroups and the heartbeat, and under narun up the
// gateway's and the NATS server's shutdown.
const stopMargin = 30 * time.Second

// longestStop is the longest stop timeout of the instances on this node.
// Each instance's own, not its app's current stop_timeout: one that a
// halted rollout keeps stops as the spec of its build said.
func (r *Runner) longestStop() time.Duration {
	r.mu.Lock()
	apps := slices.Collect(maps.Values(r.apps))
	r.mu.Unlock()
	var longest time.Duration
	for _, a := range apps {
		for _, in := range a.instanceList() {
			longest = max(longest, in.sup.StopTimeout())
		}
	}
	return longest
}

// connect opens the buckets, retrying until NATS answers or ctx ends.
func (r *Runner) connect(ctx context.Context) bool {
	for attempt := 1; ; attempt++ {
		res, err := r.openResources(ctx)
		if err == nil {
			r.res.Store(res)
			r.poke()
			return true
		}
		// A stop ends the attempt: nothing failed that the operator must see.
		if ctx.Err() != nil {
			return false
		}
		args := []any{"err", err, "attempt", attempt}
		// Once nats.go gives up (a refused login), every call fails with
		// "connection closed"; why it gave up is what the operator must fix.
		if cause := r.opts.Conn.LastError(); cause != nil && !r.opts.Conn.IsConnected() {
			args = append(args, "nats_err", cause)
		}
		r.log.Warn("open narun buckets; apps keep running from the cached specs", args...)
		if !sleep(ctx, retryDelay(attempt)) {
			return false
		}
	}
}

func (r *Runner) openResources(ctx context.Context) (*resources, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	js, err := jetstream.New(r.opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var res resources
	for _, kv := range []struct {
		bucket string
		dst    *jetstream.KeyValue
	}{{names.AppsBucket, &res.apps}, {names.NodesBucket, &res.nodes}, {names.SecretsBucket, &res.secrets}} {
		if *kv.dst, err = store.KV(ctx, js, kv.bucket, r.log); err != nil {
			return nil, err
		}
	}
	// Its watch follows a cluster member's loss within seconds.
	res.apps = store.Heartbeating(res.apps, r.opts.Conn)
	if res.binaries, err = store.Objects(ctx, js, names.BinariesBucket, r.log); err != nil {
		return nil, err
	}
	if res.files, err = store.Objects(ctx, js, names.FilesBucket, r.log); err != nil {
		return nil, err
	}
	if _, err := store.LogsStream(ctx, js, r.log); err != nil {
		return nil, err
	}
	// The history of events is for people reading it later: without
	// room for it (a small max_store the logs took), the runner runs all
	// the same, its events published as ever.
	if _, err := store.EventsStream(ctx, js, r.log); err != nil {
		r.log.Warn("no history of instance events kept (narun ctl app events --since)", "stream", names.EventsStream, "err", err)
	}
	return &res, nil
}

// sync follows narun-apps: a watch for changes as they happen, restarted
// whenever the connection comes back (a watch can take long to notice a
// server restart) or the bucket is created again, and a full resync every
// resync_interval in case it still missed something.
func (r *Runner) sync(ctx context.Context) {
	reconnected := r.opts.Conn.StatusChanged(nats.CONNECTED)
	defer r.opts.Conn.RemoveStatusListener(reconnected)
	recreated, stopRecreated := r.watchRecreated()
	defer stopRecreated()
	resync := time.NewTicker(r.opts.Config.ResyncInterval.D())
	defer resync.Stop()
	for attempt := 1; ; attempt++ {
		if r.res.Load() == nil && !r.connect(ctx) {
			return
		}
		// A bucket created before this watch starts is the one it reads
		// (connect may have created it just now).
		select {
		case <-recreated:
		default:
		}
		w, err := r.res.Load().apps.WatchAll(ctx)
		if err != nil {
			r.log.Warn("watch apps", "err", err)
			// The buckets may be gone with a server that lost its store.
			r.res.Store(nil)
		} else {
			if r.follow(ctx, w, resync.C, reconnected, recreated) {
				attempt = 0
			}
			if err := w.Stop(); err != nil {
				r.log.Debug("stop watch", "err", err)
			}
		}
		if !sleep(ctx, retryDelay(attempt)) {
			return
		}
	}
}

// recreatedSubjects are the advisories of narun-apps' stream made anew:
// created (kv rm, then a deploy or the runner's connect creates it), or
// restored from a backup. Not its deletion: a watch restarted then finds
// no bucket, and connect would create an empty one, which a restore that
// follows refuses to overwrite.
var recreatedSubjects = []string{
	"$JS.EVENT.ADVISORY.STREAM.CREATED.KV_" + names.AppsBucket,
	"$JS.EVENT.ADVISORY.STREAM.RESTORE_COMPLETE.KV_" + names.AppsBucket,
}

// watchRecreated tells when narun-apps was created anew while the
// connection stayed up. The watch's ordered consumer then resumes after
// the last stream sequence it saw, which the new stream, numbered from 1,
// reaches only after as many writes: until the next resync nothing
// deployed is applied. The advisories come in the account of the server
// the runner is connected to, from its own JetStream (the runner uses no
// domain prefix); where they do not reach the runner (a hub's JetStream
// behind a leaf node that does not pass them on, a login refused
// $JS.EVENT.>), the resync every resync_interval still applies the new
// bucket.
func (r *Runner) watchRecreated() (<-chan struct{}, func()) {
	// One pending signal is enough: every advisory asks for the same
	// restart of the watch.
	recreated := make(chan struct{}, 1)
	var subs []*nats.Subscription
	for _, subj := range recreatedSubjects {
		sub, err := r.opts.Conn.Subscribe(subj, func(*nats.Msg) {
			select {
			case recreated <- struct{}{}:
			default:
			}
		})
		if err != nil {
			r.log.Warn("follow the re-creation of narun-apps; a bucket created again is applied at the next resync", "subject", subj, "err", err)
			continue
		}
		subs = append(subs, sub)
	}
	return recreated, func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}
}

// follow applies the entries of a watch until it ends, the connection was
// re-established or narun-apps was created anew; true if it got as far as
// the initial values.
func (r *Runner) follow(ctx context.Context, w jetstream.KeyWatcher, resync <-chan time.Time, reconnected <-chan nats.Status, recreated <-chan struct{}) bool {
	// A new watch holds no entry from before its initial values, and may
	// read a bucket replaced since the last one, numbered from 1 again:
	// revisions applied before it would hold its entries back (an app
	// deleted and deployed again to the new bucket would not start until
	// a resync).
	r.mu.Lock()
	clear(r.revs)
	r.mu.Unlock()
	seen := map[string]bool{}
	initial := true
	leader := store.NewLeaderCheck(r.opts.Conn, names.AppsBucket, r.log)
	for {
		select {
		case <-ctx.Done():
			return !initial
		case <-reconnected:
			r.log.Info("reconnected to nats; watching apps again")
			return !initial
		case <-recreated:
			// The new watch's initial values list the new bucket, as a
			// resync would.
			r.log.Info("narun-apps created anew; watching apps again")
			return !initial
		case <-resync:
			r.resync(ctx)
		case e, ok := <-w.Updates():
			if !ok {
				return !initial
			}
			if e == nil {
				// The initial values are in: whatever was not among
				// them was deleted while this node was not watching.
				initial = false
				r.markListed()
				r.removeExcept(ctx, seen)
				r.retryPrepares()
				continue
			}
			// A key whose last entry is a delete names no app: its cached
			// spec must go too.
			if initial && e.Operation() == jetstream.KeyValuePut {
				seen[e.Key()] = true
			}
			switch {
			case initial:
				r.applyLatest(ctx, e, leader)
			case leader.Older(e):
				r.log.Debug("skip an entry older than the leader's", "app", e.Key(), "revision", e.Revision(), "leader_revision", leader.Taken(e.Key()))
			case r.superseded(e):
				// A resync, picked by select before the entries the watch
				// held, applied a later one: applying this one would roll
				// the app back, or bring a deleted app back, until the
				// watch's next entry.
				r.log.Debug("skip an entry older than the one a resync applied", "app", e.Key(), "revision", e.Revision())
			default:
				// A copy that joined on an empty store (a device replaced
				// under its name) lists nothing, then hands over every
				// revision it takes in from its peers, oldest first: the
				// leader says which is the latest. One request per deploy.
				leader.Again()
				r.applyLatest(ctx, e, leader)
			}
		}
	}
}

// superseded tells whether a revision later than e's was applied for its
// app. Only the watch's entries after its initial values are held back
// for it: a listing (the initial values, a resync) reads what the store
// holds now, and applies it even at a lower revision, as a store replaced
// by an empty one numbers its entries from 1 again.
func (r *Runner) superseded(e jetstream.KeyValueEntry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.Revision() < r.revs[e.Key()]
}

// applied records rev as the last revision applied for name; 0 (not known)
// leaves the one recorded. r.mu must be held.
func (r *Runner) applied(name string, rev uint64) {
	if rev == 0 {
		return
	}
	if rev < r.revs[name] {
		// Only a listing applies a revision below the one recorded: the
		// store numbers its entries from 1 again (replaced by an empty
		// one), or a replica lags. Either way the revisions recorded say
		// nothing of the entries to come, which would be held back for
		// them.
		clear(r.revs)
	}
	r.revs[name] = rev
}

// applyLatest applies e, or the app's entry as the leader of narun-apps
// has it when that is newer (store.LeaderCheck): applying what a lagging
// replica gives would roll the app back to a spec replaced meanwhile, and
// forward again once the replica caught up, restarting its instances
// twice.
func (r *Runner) applyLatest(ctx context.Context, e jetstream.KeyValueEntry, leader *store.LeaderCheck) {
	if latest := leader.Latest(ctx, e); latest.Deleted {
		r.remove(e.Key(), latest.Revision)
	} else {
		r.apply(e.Key(), latest.Value, latest.Revision)
	}
}

// resync reads the whole bucket and applies what differs.
func (r *Runner) resync(ctx context.Context) {
	res := r.res.Load()
	if res == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The watch's entries wait while it lists: the listing gives up
	// within seconds when a cluster member's loss holds it up.
	keys, err := store.Keys(ctx, r.opts.Conn, names.AppsBucket)
	if err != nil {
		r.log.Warn("resync: list apps", "err", err)
		return
	}
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	leader := store.NewLeaderCheck(r.opts.Conn, names.AppsBucket, r.log)
	for k := range seen {
		e, err := res.apps.Get(ctx, k)
		if err != nil {
			r.log.Warn("resync: get app", "app", k, "err", err)
			continue
		}
		r.applyLatest(ctx, e, leader)
	}
	r.removeExcept(ctx, seen)
	for _, a := range r.appList() {
		a.retryCache()
	}
	if wrote, err := r.order.Retry(); err != nil {
		r.log.Debug("sequences of specs not written again", "err", err)
	} else if wrote {
		r.log.Info("sequences of specs written, after an earlier write failed")
	}
	r.dropDeletedSecrets(ctx, res)
	r.gc()
}

// dropDeletedSecrets removes the cached sealed form of each secret the
// store no longer holds. A secret deleted with secret delete --force is
// revoked, though specs still name it (and gc keeps what they name): its
// copy must not serve the next restart made while NATS is away. One read
// a cached secret at each resync; a read that fails for another reason
// keeps the copy.
func (r *Runner) dropDeletedSecrets(ctx context.Context, res *resources) {
	entries, err := os.ReadDir(r.sealedDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		// Temporary files belong to fetches in flight.
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, err := res.secrets.Get(ctx, e.Name()); store.IsNotFound(err) {
			r.dropIfDeleted(ctx, e.Name())
		}
	}
}

// revokedBefore says whether rev, the revision of a value of secret
// name, comes before a delete of it that dropIfDeleted acted on.
func (r *Runner) revokedBefore(name string, rev uint64) bool {
	r.revoked.Lock()
	defer r.revoked.Unlock()
	at, ok := r.revoked.at[name]
	if ok && rev > at {
		delete(r.revoked.at, name)
		return false
	}
	return ok
}

// dropIfDeleted removes the cached copy of secret name once the leader of
// narun-secrets says it holds no value for it. A Get is a direct get any
// replica answers, and one behind its leader (just restarted) says "not
// found" of a secret set since: its copy would go, and with it the app's
// start while NATS is away. A bucket or stream that does not answer is no
// deletion either.
func (r *Runner) dropIfDeleted(ctx context.Context, name string) {
	m, err := store.LastFromLeader(ctx, r.opts.Conn, "KV_"+names.SecretsBucket, "$KV."+names.SecretsBucket+"."+name)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err == nil && (m.Header.Get("KV-Operation") == "DEL" || m.Header.Get("KV-Operation") == "PURGE"):
		r.revoked.Lock()
		if r.revoked.at == nil {
			r.revoked.at = map[string]uint64{}
		}
		r.revoked.at[name] = m.Sequence
		r.revoked.Unlock()
	default:
		return
	}
	unlock := r.sealedLocks.lock(name)
	defer unlock()
	// Counted with no copy to remove too: a fetch in flight may be about
	// to write one.
	r.secretDrops.Add(1)
	if err := os.Remove(filepath.Join(r.sealedDir(), name)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("remove the cached copy of a deleted secret", "secret", name, "err", err)
		}
		return
	}
	r.log.Info("removed the cached copy of a deleted secret", "secret", name)
}

// apply hands a spec to its app's goroutine, creating it if needed.
func (r *Runner) apply(name string, raw []byte, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.apps[name]
	if !ok {
		if spec.ValidName(name) != nil {
			r.log.Warn("ignore app with an invalid name", "app", name)
			return
		}
		a = r.startApp(name)
	}
	r.applied(name, rev)
	a.setSpec(raw, rev)
}

// startApp creates the app name and its goroutine; r.mu must be held.
func (r *Runner) startApp(name string) *app {
	a := newApp(r, name)
	r.apps[name] = a
	r.appsWG.Go(func() { a.run(r.appsCtx) })
	return a
}

// remove tells an app's goroutine that the app was deleted, at revision
// rev of narun-apps (0 when not known).
func (r *Runner) remove(name string, rev uint64) {
	r.forgetSpec(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied(name, rev)
	if a, ok := r.apps[name]; ok {
		a.setSpec(nil, 0)
	}
}

// forgetSpec records in the order that name was deleted, so that its
// last spec, stored again, does not bring it back.
func (r *Runner) forgetSpec(name string) {
	if err := r.order.Delete(name); err != nil {
		r.log.Warn("deletion of an app not kept: after a restart this node would accept its last spec stored again", "app", name, "err", err)
	}
}

// removeExcept removes the apps not in keep, and the cached specs of those
// that do not run here: apps deleted while this node was down, which a
// start without NATS must not bring back. An app that narun-apps has no
// record of at all, not even its deletion, was not deleted: its store
// lost it (a damaged or replaced JetStream directory), and it keeps
// running, or starts, from its cached spec, the last copy there may be,
// unless that does not read either.
func (r *Runner) removeExcept(ctx context.Context, keep map[string]bool) {
	for _, a := range r.appList() {
		if keep[a.name] {
			continue
		}
		switch rec, rev := r.record(ctx, a.name); rec {
		case recordDeleted:
			r.remove(a.name, rev)
		case recordNone:
			// Every node reads every app's spec: one whose spec starts
			// nothing here, and that runs nothing here, or was refused
			// as narun-apps held it, has nothing to run from its cache
			// either.
			if refused := a.cacheRefused(); refused != nil || a.runsHere() {
				r.lost(a.name, refused)
			}
		}
	}
	entries, err := os.ReadDir(r.specsDir())
	if err != nil {
		r.log.Warn("read cached specs", "err", err)
		return
	}
	var gone, lost []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".toml")
		if !ok || keep[name] || spec.ValidName(name) != nil {
			continue
		}
		r.mu.Lock()
		running := r.apps[name] != nil
		r.mu.Unlock()
		if running {
			continue
		}
		switch rec, _ := r.record(ctx, name); rec {
		case recordDeleted:
			gone = append(gone, name)
		case recordNone:
			lost = append(lost, name)
		}
	}
	// An app that runs removes its own cached spec when it is deleted;
	// r.mu keeps one from being created meanwhile.
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range gone {
		if r.apps[name] != nil {
			continue
		}
		r.forgetSpec(name)
		if err := os.Remove(filepath.Join(r.specsDir(), name+".toml")); err != nil && !os.IsNotExist(err) {
			r.log.Warn("remove cached spec of a deleted app", "app", name, "err", err)
		}
	}
	for _, name := range lost {
		if r.apps[name] != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(r.specsDir(), name+".toml"))
		if err != nil {
			r.lost(name, fmt.Errorf("read: %w", err))
			continue
		}
		// Started from a spec that does not parse, it would say that it
		// runs from it, then that it refused it.
		sp, _, _, err := r.parse(name, raw)
		if err != nil {
			r.lost(name, err)
			continue
		}
		if sp.ReplicasOn(r.node, r.labels) == 0 {
			// Cached by an earlier release, which cached the specs that
			// select other nodes too: nothing of it runs here.
			continue
		}
		r.lost(name, nil)
		r.startApp(name).setSpec(raw, 0)
	}
}

// lost says that narun-apps has no record of app name, and what runs it
// instead: its cached spec, or, when that spec was refused for damaged,
// nothing.
func (r *Runner) lost(name string, damaged error) {
	file := filepath.Join(r.specsDir(), name+".toml")
	if damaged != nil {
		r.log.Error("app cannot start: narun-apps has no record of this app, neither its spec nor its deletion, as the NATS store lost it (a damaged or replaced JetStream directory), and its cached spec is damaged: deploy it again, or remove the file if the app is no longer wanted (narun ctl app delete finds no node that runs it)",
			"app", name, "file", file, "err", damaged)
		return
	}
	r.log.Error("narun-apps has no record of this app, neither its spec nor its deletion: the NATS store lost it (a damaged or replaced JetStream directory); it runs from its cached spec. Deploy it again to store it, or delete it with narun ctl app delete",
		"app", name, "file", file)
}

// appRecord is what narun-apps knows of an app that it does not list.
type appRecord int

const (
	// recordUnknown: narun-apps could not be asked; nothing is decided.
	recordUnknown appRecord = iota
	// recordDeleted: its history ends with a deletion.
	recordDeleted
	// recordNone: it has no entry at all, not even a deletion.
	recordNone
)

// record tells an app deleted through narun-apps, and the revision of its
// deletion, from one that narun-apps has no entry for: ctl deletes by
// storing a delete marker, which the bucket's history keeps, so only a
// store that lost its data, or one replaced by an empty one, has nothing
// for an app a node has a spec of.
func (r *Runner) record(ctx context.Context, name string) (appRecord, uint64) {
	res := r.res.Load()
	if res == nil {
		return recordUnknown, 0
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hist, err := res.apps.History(ctx, name, jetstream.MetaOnly())
	switch {
	case err == nil && hist[len(hist)-1].Operation() == jetstream.KeyValuePut:
		// Stored after the listing: the watch brings it.
		return recordUnknown, 0
	case err == nil:
		return recordDeleted, hist[len(hist)-1].Revision()
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// The revision recorded is of the store that had the app: a
		// deploy to this one, numbered from 1 again, must not be held
		// back for it.
		r.mu.Lock()
		delete(r.revs, name)
		r.mu.Unlock()
		return recordNone, 0
	default:
		r.log.Warn("cannot tell whether an app narun-apps does not list was deleted; left as it is until the next resync", "app", name, "err", err)
		return recordUnknown, 0
	}
}

// forget drops an app that has nothing left to run, unless a new spec
// arrived meanwhile; true if it was dropped.
func (r *Runner) forget(a *app) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.apps[a.name] != a || a.hasSpec() {
		return false
	}
	delete(r.apps, a.name)
	return true
}

// retryPrepares has every instance that waits to fetch again (its
// binary, files or secrets) try now: the store it waited for answers, and
// after a long outage its backoff would hold it down for minutes more.
func (r *Runner) retryPrepares() {
	for _, a := range r.appList() {
		for _, in := range a.instanceList() {
			in.sup.Retry()
		}
	}
}

func (r *Runner) appList() []*app {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := make([]*app, 0, len(r.apps))
	for _, a := range r.apps {
		list = append(list, a)
	}
	slices.SortFunc(list, func(x, y *app) int { return strings.Compare(x.name, y.name) })
	return list
}

// startListingWait bounds how long a runner connected to NATS at its start
// waits for narun-apps before it starts its apps from the cached specs.
const startListingWait = 3 * time.Second

// awaitListing lets the apps start from narun-apps, which may have changed
// while this node was down (a new version, a deleted app): started from
// the cached specs first, they would run an outdated spec until the
// listing replaced it. The cached specs are used only when NATS is not
// connected, or does not list narun-apps within startListingWait.
func (r *Runner) awaitListing(ctx context.Context) {
	why, attrs := "nats not connected", []any{}
	if r.opts.Conn.IsConnected() {
		t := time.NewTimer(startListingWait)
		defer t.Stop()
		select {
		case <-r.listed:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			why, attrs = "narun-apps not read in time", []any{"waited", startListingWait}
		}
	}
	var starts []string
	raws := map[string][]byte{}
	for _, name := range r.cachedSpecs() {
		raw, err := os.ReadFile(filepath.Join(r.specsDir(), name+".toml"))
		if err != nil {
			r.log.Warn("read cached spec", "app", name, "err", err)
			continue
		}
		// An earlier release cached the specs of every app, those that
		// select other nodes too. One that does not read is started all
		// the same, for its app to say what is wrong with it.
		if sp, _, _, err := r.parse(name, raw); err == nil && sp.ReplicasOn(r.node, r.labels) == 0 {
			continue
		}
		starts, raws[name] = append(starts, name), raw
	}
	if len(starts) == 0 {
		// A fresh data dir: saying apps start from the cache would have
		// an operator look for apps that never come.
		r.log.Warn(why+"; no app specs cached for this node, so no app starts until narun-apps is read", attrs...)
		return
	}
	r.log.Warn(why+"; starting apps from the cached specs", append(attrs, "apps", len(starts))...)
	for _, name := range starts {
		r.applyCached(name, raws[name])
	}
}

// markListed records that narun-apps was listed in full.
func (r *Runner) markListed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.listed:
	default:
		close(r.listed)
	}
}

// cachedSpecs names the apps whose last known specs the data dir holds,
// which a runner restarted while NATS is down starts from, so that its
// apps still come up.
func (r *Runner) cachedSpecs() []string {
	entries, err := os.ReadDir(r.specsDir())
	if err != nil {
		r.log.Warn("read cached specs", "err", err)
		return nil
	}
	var apps []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".toml")
		if ok && spec.ValidName(name) == nil {
			apps = append(apps, name)
		}
	}
	return apps
}

// applyCached is apply for a cached spec: under r.mu, so that a listing
// that completes meanwhile either comes after it, and removes it if the
// app was deleted, or prevents it.
func (r *Runner) applyCached(name string, raw []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.listed:
		return
	default:
	}
	if _, ok := r.apps[name]; ok {
		return
	}
	r.startApp(name).setSpec(raw, 0)
}

// instances returns the status of every instance on this node.
func (r *Runner) instances() []state.Instance {
	var all []state.Instance
	for _, a := range r.appList() {
		for _, in := range a.instanceList() {
			all = append(all, r.decorate(in.sup.Status()))
		}
		if st, ok := a.rolledBackState(); ok {
			all = append(all, st)
		}
	}
	return all
}

// restamp gives the times of in, read from this process's clock, on the
// wall clock's reading at now, as onClock does.
func (r *Runner) restamp(in state.Instance, now time.Time) state.Instance {
	in.Since = onClock(in.Since, now, r.wall(now))
	in.Started = onClock(in.Started, now, r.wall(now))
	return in
}

// onClock is t, a reading of time.Now, as far before wall, the wall
// clock's reading at now, as it was before now by the monotonic clock. A
// stamp keeps the wall clock of when it was read, and a device without a
// real-time clock, which boots at 1970 or at the time fake-hwclock saved,
// steps it by months when NTP first answers: a heartbeat's time less an
// instance's start, both on the node's clock, would count the step as
// uptime, and ctl's --wait an instance healthy for a second as healthy
// since before the step, past its min_healthy.
func onClock(t, now, wall time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return wall.Add(-now.Sub(t))
}

// heartbeats writes this node's state to narun-nodes on its own goroutine,
// so nothing an app does can make the node look dead: every heartbeat
// interval, and soon after instance state changes (see poke), so that
// `narun ctl app status` is current right after a rollout.
func (r *Runner) heartbeats(ctx context.Context) {
	t := time.NewTicker(r.opts.Config.HeartbeatInterval.D())
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.beat:
			// A burst of state changes makes one heartbeat.
			if wait := minBeatGap - time.Since(last); wait > 0 && !sleep(ctx, wait) {
				return
			}
		}
		if res := r.res.Load(); res != nil {
			r.heartbeat(ctx, res)
			last = time.Now()
		}
	}
}

// minBeatGap is the least time between two heartbeats.
const minBeatGap = 200 * time.Millisecond

// poke asks for a heartbeat soon; it never blocks.
func (r *Runner) poke() {
	select {
	case r.beat <- struct{}{}:
	default:
	}
}

func (r *Runner) heartbeat(ctx context.Context, res *resources) {
	st := r.nodeState()
	b, trimmed, err := encodeHeartbeat(st, int(r.opts.Conn.MaxPayload())-heartbeatRoom)
	if (err != nil || trimmed) && time.Since(r.beatWarned) >= time.Minute {
		// Once a minute: the heartbeats are every few seconds.
		r.beatWarned = time.Now()
		if err != nil {
			r.log.Error("heartbeat not written: this node looks gone to narun ctl, and rollouts to it never finish, until it runs fewer instances or [nats] max_payload is raised", "err", err)
		} else {
			r.log.Warn("heartbeat written without the instances' reasons, which would not fit in a NATS message ([nats] max_payload): narun ctl app status shows no reason", "instances", len(st.Instances))
		}
	}
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Config.HeartbeatInterval.D())
	defer cancel()
	// Written on top of this runner's last heartbeat, it costs no read to
	// find that another runner wrote since.
	if r.beatRev != 0 {
		rev, err := res.nodes.Update(ctx, r.node, b, r.beatRev)
		if err == nil {
			r.beatRev = rev
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if ctx.Err() == nil {
				r.log.Debug("heartbeat", "err", store.Tidy(err))
			}
			return
		}
		r.checkDuplicate(ctx, res)
	}
	rev, err := res.nodes.Put(ctx, r.node, b)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Debug("heartbeat", "err", store.Tidy(err))
		}
		return
	}
	r.beatRev = rev
}

// heartbeatRoom is what a heartbeat's message needs beside its data: the
// headers of a KV update.
const heartbeatRoom = 256

// encodeHeartbeat encodes n in at most limit bytes (no limit when limit is
// not positive). One whose instances do not fit goes without their reasons
// (trimmed), which take half of an instance's share when present: about
// 2 000 instances of a heartbeat with reasons fill 1 MiB, 4 000 without
// (docs/PERFORMANCE.md, "Many instances"). A heartbeat too large for a
// message used to fail at every write, said only in debug logs, and its
// node to drop out of narun-nodes.
func encodeHeartbeat(n state.Node, limit int) (b []byte, trimmed bool, err error) {
	b, err = json.Marshal(n)
	if err != nil {
		return nil, false, fmt.Errorf("encode heartbeat: %w", err)
	}
	if limit <= 0 || len(b) <= limit {
		return b, false, nil
	}
	full := len(b)
	n.Instances = slices.Clone(n.Instances)
	for i := range n.Instances {
		n.Instances[i].Reason = ""
	}
	b, err = json.Marshal(n)
	if err != nil {
		return nil, false, fmt.Errorf("encode heartbeat: %w", err)
	}
	if len(b) > limit {
		return nil, false, fmt.Errorf("encode heartbeat of %d instances: %d bytes, %d without their reasons, above the %d a NATS message may carry", len(n.Instances), full, len(b), limit)
	}
	return b, true, nil
}

func (r *Runner) nodeState() state.Node {
	instances := r.instances()
	// Read after the instances: one that changed state in between would
	// otherwise be in it since after the heartbeat's time.
	now := time.Now()
	for i := range instances {
		instances[i] = r.restamp(instances[i], now)
	}
	return state.Node{
		ID:                 r.node,
		Version:            buildinfo.Get().Version,
		OS:                 runtime.GOOS,
		Arch:               runtime.GOARCH,
		Labels:             r.labels,
		Capabilities:       r.caps,
		SignaturesRequired: r.signatures.Enabled(),
		TrustedKeys:        r.opts.Config.TrustedKeys,
		SigningKeyFile:     r.opts.SigningKeyFile,
		SecretKeys:         r.secretKeys(),
		Instances:          instances,
		Started:            onClock(r.started, now, r.wall(now)),
		Time:               r.wall(now),
		Interval:           r.opts.Config.HeartbeatInterval.D(),
		Host:               r.host,
		Boot:               r.boot,
		Duplicates:         r.dups.recent(now),
		AwaitingSpecs:      r.awaitingSpecs.Load(),
	}
}

// secretKeys says which keys the secret key file holds. The file is read
// again only when it changed (keyFile), so a heartbeat costs a stat; one
// that cannot be read names no key, as it opens no secret.
func (r *Runner) secretKeys() *state.SecretKeys {
	k := &state.SecretKeys{File: r.keys.path != ""}
	if !k.File {
		return k
	}
	ring, err := r.keys.load()
	r.keysWarned.Lock()
	defer r.keysWarned.Unlock()
	if err != nil {
		// Once as it turns unreadable: every heartbeat reads it, and
		// otherwise only the next start of an app with secrets would say.
		if !r.keysWarned.on {
			r.keysWarned.on = true
			r.log.Warn(keyFileUnreadable, "file", r.keys.path, "err", err)
		}
		return k
	}
	r.keysWarned.on = false
	k.IDs = ring.IDs()
	return k
}

// keyFileUnreadable is the warning of a secret key file that cannot be
// used, at a start, at a --check and as it turns so.
const keyFileUnreadable = "secret key file unreadable: instances that use secrets cannot start, and retry with their backoff, until it is mended"

// WarnKeyFile logs, as a start does, that the secret key file at path
// cannot be used; nothing for none configured. A start goes on without
// it, so a --check passes, and says so before a restart would.
func WarnKeyFile(log *slog.Logger, path string) {
	if path == "" {
		return
	}
	k := keyFile{path: path}
	if _, err := k.load(); err != nil {
		log.Warn(keyFileUnreadable, "file", path, "err", err)
	}
}

// outboxFlush bounds how long a stopping runner waits for NATS to take the
// events and output lines of its last moments.
const outboxFlush = 2 * time.Second

// publishEvent sends an instance state change; it never blocks (outbox).
func (r *Runner) publishEvent(in state.Instance) {
	now := time.Now()
	b, err := json.Marshal(state.Event{Instance: r.restamp(r.decorate(in), now), Time: r.wall(now)})
	if err != nil {
		return
	}
	r.out.publish(names.EventSubject(in.App, in.Node), b)
	r.poke()
}

// publishLog sends an output line of an instance, encoded as b
// (encodeLog); it never blocks (outbox).
func (r *Runner) publishLog(l state.LogLine, b []byte) {
	r.out.publish(names.LogSubject(l.App, l.Node, l.Instance), b)
}

// removeExecLinks removes the links of every app. Only starts of this
// runner's instances use them, so it runs while none can start: before
// the apps and after they stopped, and those of a runner that crashed go.
// nodeIDFile records, in the data dir, the node id the runner last ran
// under.
const nodeIDFile = "node-id"

// checkNodeID warns when this data dir last ran under another node id.
// The default id is the host name, which DHCP, cloud-init or a re-imaged
// device can change: every spec that names the old id then stops here,
// and nothing else says why.
func (r *Runner) checkNodeID() {
	path := filepath.Join(r.opts.DataDir, nodeIDFile)
	b, err := os.ReadFile(path)
	last := strings.TrimSpace(string(b))
	if errors.Is(err, fs.ErrNotExist) {
		last, err = r.legacyNodeID(), nil
	}
	switch {
	case err == nil && last == r.node:
		return
	case err == nil && last != "":
		r.log.Warn("node id changed since this data dir last ran: apps whose spec names the old id in nodes stop here; set [runner] node_id (or --node-id) to the old id to keep them",
			"old", last, "new", r.node, "file", path)
	case err != nil:
		r.log.Warn("read the node id this data dir last ran under", "file", path, "err", err)
	}
	if err := atomicfile.Write(path, []byte(r.node+"\n"), 0o600); err != nil {
		r.log.Warn("record the node id", "file", path, "err", err)
	}
}

// legacyNodeID is the id a release that wrote no node-id file ran this
// data dir under, when it differs from today's default and is known: a
// host named by its address had only the first label ("10" of 10.0.0.5).
// Cached specs show that such a release ran apps here; a data dir without
// them has none that could stop.
func (r *Runner) legacyNodeID() string {
	if r.opts.Config.NodeID != "" {
		return ""
	}
	if _, err := netip.ParseAddr(r.host); err != nil {
		return ""
	}
	entries, _ := os.ReadDir(r.specsDir())
	if !slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return strings.HasSuffix(e.Name(), ".toml") }) {
		return ""
	}
	first, _, _ := strings.Cut(r.host, ".")
	if id := hostNodeID(first); id != r.node {
		return id
	}
	return ""
}

// removeTemporaries removes the temporary files of writes that a crash or
// power cut interrupted: nothing else does, gc leaves them to the fetches
// in flight, and each can be as large as a binary, which a device with a
// small disk cannot afford after a few cuts. Called while this runner
// holds the data dir's lock, before it writes anything.
func (r *Runner) removeTemporaries() {
	var removed int
	for _, dir := range []string{r.cache.dir, r.filesDir(), r.fileDigestsDir(), r.filesPinnedDir(), r.specsDir(), r.sealedDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			r.log.Warn("look for temporary files left by an interrupted write", "dir", dir, "err", err)
			continue
		}
		for _, e := range entries {
			// writeVerified's .tmp-*, atomicfile's .<name>.tmp-*.
			if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), ".") || !strings.Contains(e.Name(), ".tmp-") {
				continue
			}
			if r.removeTemporary(filepath.Join(dir, e.Name())) {
				removed++
			}
		}
	}
	// The data dir itself holds the files of others too (the gateway's
	// routes cache under narun up, which may be writing it now): only the
	// temporaries of the runner's own files there go. sequences.json is
	// written at every deploy, so each power cut during one left another.
	for _, name := range []string{sequencesFile, nodeIDFile} {
		left, _ := atomicfile.Leftovers(filepath.Join(r.opts.DataDir, name))
		for _, p := range left {
			if r.removeTemporary(p) {
				removed++
			}
		}
	}
	if removed > 0 {
		r.log.Info("removed temporary files left by interrupted writes", "files", removed)
	}
}

// removeTemporary removes the temporary file p, reporting whether it did.
func (r *Runner) removeTemporary(p string) bool {
	if err := os.Remove(p); err != nil {
		r.log.Warn("remove a temporary file left by an interrupted write", "file", p, "err", err)
		return false
	}
	return true
}

func (r *Runner) removeExecLinks() {
	if err := r.links.removeExcept(func(string) bool { return false }); err != nil {
		r.log.Warn("remove the links binaries were executed by", "err", err)
	}
}

// gc removes the cached binaries, files, pinned file contents and sealed
// secrets that no app on this node refers to any more, and the links to
// binaries that its app does not run any more.
func (r *Runner) gc() {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	r.gcLocked()
}

// collect runs gc for a deleted app, whose cached files and sealed
// secrets would otherwise stay on the node until the next resync, which
// does not come while NATS is away. A collect that finds another waiting
// leaves it to that one, which lists the apps once it runs: a thousand
// apps deleted at once make a few gcs, not a thousand.
func (r *Runner) collect() {
	if !r.gcWaiting.CompareAndSwap(false, true) {
		return
	}
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	r.gcWaiting.Store(false)
	r.gcLocked()
}

// gcLocked is gc; r.gcMu must be held.
func (r *Runner) gcLocked() {
	listed := time.Now()
	// Under r.mu no app is created, and only an app's own instances make
	// links in its directory.
	r.mu.Lock()
	err := r.links.removeExcept(func(app string) bool { return r.apps[app] != nil })
	r.mu.Unlock()
	if err != nil {
		r.log.Warn("remove the links of deleted apps", "err", err)
	}
	keep := map[string]bool{}
	files, pinned, sealed := map[string]bool{}, map[string]bool{}, map[string]bool{}
	unpinned := map[string]bool{}
	for _, a := range r.appList() {
		a.pruneLinks()
		for _, sp := range a.specs() {
			if b, ok := sp.Binary(runtime.GOARCH); ok {
				keep[b.SHA256] = true
			}
			for _, f := range sp.Files {
				files[f.Object] = true
				if _, ok := sp.FileDigests[f.Object]; !ok {
					unpinned[f.Object] = true
				}
			}
			for _, d := range sp.FileDigests {
				pinned[d] = true
			}
			for _, s := range sp.Secrets {
				sealed[s.Name] = true
			}
		}
	}
	// What placeFile kept of an object a spec does not pin is the cache's
	// copy, until a fetch replaces it: a deploy that pins it restarts
	// nothing (adopt), and the instance's restart after a files put then
	// needs those bytes.
	for obj := range unpinned {
		if b, err := os.ReadFile(filepath.Join(r.fileDigestsDir(), obj)); err == nil {
			if d := store.DigestHex(&jetstream.ObjectInfo{Digest: string(b)}); d != "" {
				pinned[d] = true
			}
		}
	}
	for _, d := range r.cache.gc(keep, listed) {
		r.log.Info("removed unused binary", "sha256", d)
	}
	// A file's digest goes before its copy: a copy without its digest is
	// fetched again, a digest without its copy would vouch for nothing.
	for _, c := range []struct {
		dir  string
		keep map[string]bool
	}{{r.fileDigestsDir(), files}, {r.filesDir(), files}, {r.filesPinnedDir(), pinned}, {r.sealedDir(), sealed}} {
		dir, keep := c.dir, c.keep
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			// Temporary files belong to fetches in flight.
			if keep[e.Name()] || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if err := r.uses.removeUnused(p, listed); err != nil && !errors.Is(err, fs.ErrNotExist) {
				r.log.Warn("remove unused cache entry", "path", p, "err", err)
			}
		}
	}
	r.uses.forgetBefore(listed)
}

func retryDelay(attempt int) time.Duration {
	d := min(100*time.Millisecond<<min(attempt, 10), 10*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
