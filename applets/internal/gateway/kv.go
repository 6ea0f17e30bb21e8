package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/atomicfile"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/store"
)

// watchRoutes follows the narun-routes bucket, written by `narun ctl
// deploy`. The bucket is created when missing, so the first deploy's routes
// are seen at once rather than at the next retry; NATS may be away: that is
// retried, never fatal.
func (g *Gateway) watchRoutes(ctx context.Context) {
	js, err := jetstream.New(g.nc)
	if err != nil {
		g.log.Error("routes bucket: jetstream", "err", err)
		return
	}
	g.loadRoutesCache()
	// A watch notices a restarted server only after its heartbeats are
	// missed (15 to 20 s, during which deploys were not seen): it starts
	// again as soon as the connection is back, as the runner's does.
	reconnected := g.nc.StatusChanged(nats.CONNECTED)
	defer g.nc.RemoveStatusListener(reconnected)
	retry := time.NewTimer(0)
	defer retry.Stop()
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		case <-reconnected:
			// Not ready until the bucket is read on this connection:
			// try now rather than at the next retry.
		case <-g.rereadRoutes:
			// The watch about to start reads the bucket with the keys
			// now trusted.
		}
		at := g.reconnects()
		again, err := g.followRoutes(ctx, js, reconnected, at)
		if again {
			retry.Reset(0)
			continue
		}
		if err != nil && ctx.Err() == nil {
			switch {
			case noJetStream(err):
				// A NATS without JetStream has no deployed routes to
				// read: the configuration's are all there are, and
				// /readyz says so.
				if g.routesRead.Swap(at) < 0 {
					g.log.Info("no JetStream on this NATS: serving the configuration's routes only, until it has", "err", err)
				}
			case g.nc.IsConnected() && time.Since(warned) >= time.Minute:
				// Connected, yet JetStream does not answer (a cluster
				// without a leader, a login without the rights): deployed
				// apps' routes wait, and /readyz says 503, for a reason
				// the operator must be able to read. Once a minute, as
				// the attempts are every few seconds; a lost connection
				// is said by the connection's own log.
				warned = time.Now()
				g.log.Warn("routes bucket not read, retrying: deployed apps' routes wait for it", "bucket", names.RoutesBucket, "err", err)
			default:
				g.log.Debug("routes bucket not followed, retrying", "bucket", names.RoutesBucket, "err", err)
			}
		}
		retry.Reset(3 * time.Second)
	}
}

// noJetStream reports whether err says that no server offers JetStream.
func noJetStream(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// reconnects is the connection's count of reconnections, which tells
// one connection to a server from the next.
func (g *Gateway) reconnects() int64 {
	return int64(g.nc.Stats().Reconnects)
}

// routesCurrent says whether narun-routes was read on the connection as it
// is now. Routes read on an earlier one miss what changed while the
// gateway was away, until the watch started after the reconnection has
// delivered the bucket's content; they are served meanwhile, but /readyz
// must not call them ready.
func (g *Gateway) routesCurrent() bool {
	return g.routesRead.Load() == g.reconnects()
}

// followRoutes applies the bucket's entries until the watch ends, or the
// connection came back, which asks for a new watch at once (again). at is
// the connection's count of reconnections before the watch was asked for,
// recorded once the watch delivered the bucket's content.
func (g *Gateway) followRoutes(ctx context.Context, js jetstream.JetStream, reconnected <-chan nats.Status, at int64) (again bool, err error) {
	kv, err := store.KV(ctx, js, names.RoutesBucket, g.log)
	if err != nil {
		return false, err
	}
	return g.followBucket(ctx, store.Heartbeating(kv, g.nc), reconnected, at)
}

// followBucket is followRoutes once kv, narun-routes, is open.
func (g *Gateway) followBucket(ctx context.Context, kv jetstream.KeyValue, reconnected <-chan nats.Status, at int64) (again bool, err error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = w.Stop() }()
	// The keys of the watch's values: an entry held from before (the
	// cache, an earlier watch) that is not among its initial ones may have
	// been removed meanwhile, unless a later one stores it again.
	seen := map[string]bool{}
	initial := true
	// removed receives, once, the apps held from before that the watch
	// did not list and whose removal kv records (removedApps). Their
	// history is read beside the watch, so that a store that does not
	// answer holds up no update behind it, a deploy's included.
	var removed chan []string
	readCtx, stopReading := context.WithCancel(ctx)
	var reading sync.WaitGroup
	defer func() {
		stopReading()
		reading.Wait()
	}()
	// Routes are current, and worth caching, once the initial values are
	// applied and the removals the store records too.
	current := func() {
		g.routesRead.Store(at)
		g.saveRoutesCache()
	}
	leader := store.NewLeaderCheck(g.nc, names.RoutesBucket, g.log)
	// The entries read and not yet applied, by app: the initial values
	// are applied together when the watch says it sent them all, later
	// ones together with those the watch has ready behind them, so that a
	// start or a deploy storm rebuilds the table once, not once per entry.
	var batch []appEntry
	inBatch := map[string]bool{}
	flush := func() {
		if len(batch) > 0 {
			g.setAppEntries(batch)
			batch = batch[:0]
			clear(inBatch)
		}
	}
	add := func(app string, value []byte) {
		// An app's entries are applied in turn: the replay check of
		// one depends on the one before it.
		if inBatch[app] {
			flush()
		}
		batch = append(batch, appEntry{app, value})
		inBatch[app] = true
		seen[app] = true
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-reconnected:
			g.log.Info("reconnected to NATS; watching narun-routes again")
			return true, nil
		case <-g.rereadRoutes:
			g.log.Info("trusted_keys changed; reading narun-routes again")
			return true, nil
		case e, ok := <-w.Updates():
			if !ok {
				return false, nil
			}
			switch {
			case e == nil:
				// The end of the initial values.
				flush()
				initial = false
				unseen := g.unseen(seen)
				if len(unseen) == 0 {
					current()
					break
				}
				removed = make(chan []string, 1)
				reading.Go(func() { removed <- g.removedApps(readCtx, kv, unseen) })
			case initial:
				add(g.latest(ctx, leader, e))
			default:
				// Asked again for each batch: one failed read (an
				// election, a slow answer) would otherwise leave the
				// watch's every later entry unchecked. Not for each entry
				// of a batch, which a leader lost would hold 2 s each.
				leader.Again()
				g.readRoutesEntry(ctx, leader, e, add)
				g.readReady(ctx, w, leader, add, len(batch))
				flush()
				g.saveRoutesCache()
			}
		case apps := <-removed:
			removed = nil
			var gone []appEntry
			for _, app := range apps {
				if !seen[app] {
					gone = append(gone, appEntry{app, nil})
				}
			}
			g.setAppEntries(gone)
			current()
		}
	}
}

// readReady passes on to add the updates the watch w has ready, up to
// maxRoutesBatch in all with the held ones already read.
func (g *Gateway) readReady(ctx context.Context, w jetstream.KeyWatcher, leader *store.LeaderCheck, add func(app string, value []byte), held int) {
	for ; held < maxRoutesBatch; held++ {
		select {
		case e, ok := <-w.Updates():
			// A closed watch is seen again by the caller's next receive;
			// no marker follows the initial values' one.
			if !ok || e == nil {
				return
			}
			g.readRoutesEntry(ctx, leader, e, add)
		default:
			return
		}
	}
}

// maxRoutesBatch bounds the entries applied with one rebuild, so that a
// bucket written without pause is still applied as it goes.
const maxRoutesBatch = 1000

// readRoutesEntry passes an update of narun-routes that follows the
// watch's initial values to add, unless it is older than the leader's, as
// the leader has it when that is newer: a copy that joined on an empty
// store (a device replaced under its name) lists nothing, then hands over
// every revision it takes in from its peers, oldest first.
func (g *Gateway) readRoutesEntry(ctx context.Context, leader *store.LeaderCheck, e jetstream.KeyValueEntry, add func(app string, value []byte)) {
	if leader.Older(e) {
		g.log.Debug("skip a routes entry older than the leader's", "app", e.Key(), "revision", e.Revision(), "leader_revision", leader.Taken(e.Key()))
		return
	}
	add(g.latest(ctx, leader, e))
}

// latest is an app's entry from a watch's first values, or as the leader
// of narun-routes has it when that is newer (store.LeaderCheck): a replica
// that has just restarted would otherwise have this gateway serve routes
// replaced or removed while it was down, until it caught up.
func (g *Gateway) latest(ctx context.Context, leader *store.LeaderCheck, e jetstream.KeyValueEntry) (app string, value []byte) {
	if latest := leader.Latest(ctx, e); !latest.Deleted {
		return e.Key(), latest.Value
	}
	return e.Key(), nil
}

// unseen lists, sorted, the apps of the entries held that are not in seen.
func (g *Gateway) unseen(seen map[string]bool) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var apps []string
	for app := range g.kvRaw {
		if !seen[app] {
			apps = append(apps, app)
		}
	}
	slices.Sort(apps)
	return apps
}

// historyTimeout bounds the reading of the history of all the apps
// removedApps is asked about, whatever their number.
const historyTimeout = 10 * time.Second

// removedApps returns those of apps whose removal kv records; nil when ctx
// ends first. An entry kv has no record of at all, not even a removal, was
// lost by its store (a damaged or replaced JetStream directory): its
// runner keeps the app running from its cached spec, so the entry, perhaps
// the last copy of its routes, is kept and served. So is one whose history
// is not read within historyTimeout, until the next watch.
func (g *Gateway) removedApps(ctx context.Context, kv jetstream.KeyValue, apps []string) []string {
	hctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	var removed, unknown []string
	var unknownErr error
	for _, app := range apps {
		_, err := kv.History(hctx, app, jetstream.MetaOnly())
		switch {
		case ctx.Err() != nil:
			return nil
		case hctx.Err() != nil:
			// Checked before ErrKeyNotFound, which is what History
			// returns when the deadline ends the read of records the
			// store has.
			unknown, unknownErr = append(unknown, app), hctx.Err()
		case errors.Is(err, jetstream.ErrKeyNotFound):
			g.log.Error("narun-routes has no record of this app's routes, neither the entry nor its removal: the NATS store lost it (a damaged or replaced JetStream directory); serving them as last read. Deploy the app again to store them, or delete it with narun ctl app delete",
				"app", app, "file", g.opts.RoutesCache)
		case err != nil:
			unknown, unknownErr = append(unknown, app), err
		default:
			removed = append(removed, app)
		}
	}
	if len(unknown) > 0 {
		g.log.Warn("cannot tell whether routes narun-routes does not list were removed; kept until it can", "apps", unknown, "err", unknownErr)
	}
	return removed
}

// loadRoutesCache serves the entries of narun-routes as last read, so that
// a gateway started while JetStream cannot answer (a cluster member back
// alone, its peers still down) routes to the apps its runner starts from
// cached specs instead of answering 404. They are checked as the bucket's
// are; /readyz still waits for the bucket.
func (g *Gateway) loadRoutesCache() {
	path := g.opts.RoutesCache
	if path == "" {
		return
	}
	g.removeCacheTemporaries(path)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var entries map[string][]byte
	if err == nil {
		err = json.Unmarshal(b, &entries)
	}
	if err != nil {
		g.log.Warn("routes cache not read: deployed apps' routes wait for narun-routes", "file", path, "err", err)
		return
	}
	// An entry the trusted keys do not sign is left for the bucket to
	// settle rather than refused with an error: the cache holds what an
	// earlier configuration took, and after signing is set up it holds the
	// unsigned entries until their signed copies arrive.
	var unsigned []string
	var signed []appEntry
	g.mu.Lock()
	for app, value := range entries {
		if _, err := g.signatures.Verify(value); err != nil {
			unsigned = append(unsigned, app)
			continue
		}
		signed = append(signed, appEntry{app, value})
	}
	g.mu.Unlock()
	g.setAppEntries(signed)
	g.cacheMu.Lock()
	g.keep(entries)
	g.cacheMu.Unlock()
	if len(unsigned) > 0 {
		slices.Sort(unsigned)
		g.log.Info("routes cache entries the trusted keys do not sign are left out until narun-routes answers", "file", path, "apps", unsigned)
	}
	// Counted as served: an entry refused (replayed, or routes no request
	// can reach) was logged on its own and is not.
	g.mu.Lock()
	served := g.appsServed
	g.mu.Unlock()
	g.log.Info("serving deployed apps' routes as narun-routes last had them, until it answers", "file", path, "apps", served)
}

// orderSuffix names, beside the routes cache, the file of the sequences of
// the signed entries this gateway accepted (replay protection).
const orderSuffix = ".sequences"

// removeCacheTemporaries removes the temporary files that writes of the
// routes cache and of its sequences left when a crash or a power cut cut
// them short: the cache is written at every change of narun-routes, and
// each cut during a write left another beside it for good. It runs before
// this gateway writes either file.
func (g *Gateway) removeCacheTemporaries(path string) {
	for _, file := range []string{path, path + orderSuffix} {
		left, err := atomicfile.Leftovers(file)
		if err != nil {
			continue
		}
		for _, p := range left {
			if err := os.Remove(p); err != nil {
				g.log.Warn("remove a temporary file left by an interrupted write", "file", p, "err", err)
			}
		}
	}
}

// saveRoutesCache writes the entries held for loadRoutesCache, then the
// sequences of the signed ones to their file (keep). A write that fails
// (a full disk) is tried again by retryRoutesCache: the file would
// otherwise keep the routes before it until they change again, and a
// restart without JetStream would serve those.
func (g *Gateway) saveRoutesCache() {
	path := g.opts.RoutesCache
	if path == "" {
		return
	}
	g.cacheMu.Lock()
	defer g.cacheMu.Unlock()
	cached, err := g.writeRoutesCache(path)
	g.cacheFailed = err != nil
	if err != nil {
		g.log.Warn("routes cache not written; tried again every second, and the sequences of the entries it misses kept then", "file", path, "err", err)
		return
	}
	g.keep(cached)
}

// retryRoutesCache writes the routes cache if its last write failed. It
// writes the entries held now, under cacheMu as saveRoutesCache does, so
// that an older copy never lands after a newer one.
func (g *Gateway) retryRoutesCache() {
	g.cacheMu.Lock()
	defer g.cacheMu.Unlock()
	if !g.cacheFailed {
		return
	}
	path := g.opts.RoutesCache
	cached, err := g.writeRoutesCache(path)
	if err != nil {
		g.log.Debug("routes cache not written again", "file", path, "err", err)
		return
	}
	g.cacheFailed = false
	g.log.Info("routes cache written, after an earlier write failed", "file", path)
	g.keep(cached)
}

// keep writes to the order's file the sequences held (unkept) of the
// entries that cached, the routes cache's content, holds: the file is
// never ahead of the cache. g.cacheMu is held, so that the sequences
// follow the cache's writes in their order.
func (g *Gateway) keep(cached map[string][]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var changes []signing.Change
	for app, c := range g.unkept {
		if v, ok := cached[app]; ok && bytes.Equal(v, c.Value) {
			changes = append(changes, c)
			delete(g.unkept, app)
		}
	}
	if err := g.order.Apply(changes); err != nil {
		g.log.Warn("sequences of routes entries not kept: this gateway accepts an earlier entry again after its restart", "err", err)
	}
}

// retryOrder writes the order of signed entries if its last write failed.
func (g *Gateway) retryOrder() {
	wrote, err := g.order.Retry()
	switch {
	case err != nil:
		g.log.Debug("sequences of routes entries not written again", "err", err)
	case wrote:
		g.log.Info("sequences of routes entries written, after an earlier write failed")
	}
}

// writeRoutesCache writes the entries held to path, unless it holds them
// already: it is saved at every start, reconnection and update of
// narun-routes, and each write costs flash a synced file, a rename and a
// synced directory. It returns the entries path holds. g.cacheMu is held.
func (g *Gateway) writeRoutesCache(path string) (map[string][]byte, error) {
	g.mu.Lock()
	cached := maps.Clone(g.kvRaw)
	g.mu.Unlock()
	b, err := json.Marshal(cached)
	if err != nil {
		return nil, fmt.Errorf("encode routes cache: %w", err)
	}
	if held, err := os.ReadFile(path); err == nil && bytes.Equal(held, b) {
		return cached, nil
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write routes cache: %w", err)
	}
	return cached, nil
}

// appRoutes reads the narun-routes entry of app and its sequence, or says
// why it is refused: no trusted key signed it, it is not valid JSON, it was
// made for another app, or it is an earlier one stored again. The
// signature's trailer goes even when no key is trusted, for JSON cannot
// hold it. The sequence counts only with trusted keys: without a
// signature, anyone could set it.
func (g *Gateway) appRoutes(signatures *signing.Verifier, app string, value []byte) ([]config.Route, uint64, error) {
	body, err := signatures.Verify(value)
	if err != nil {
		return nil, 0, err
	}
	e, err := DecodeEntry(app, body)
	if err != nil {
		return nil, 0, err
	}
	if signatures.Enabled() {
		if err := g.order.Check(app, e.Sequence, value); err != nil {
			return nil, 0, err
		}
		if !e.Named {
			// Signed by a ctl of an earlier release: refusing it would
			// take every deployed app's routes away at the upgrade
			// (docs/UPGRADING.md).
			g.log.Warn("routes of app served from an entry that does not name its app (stored by an earlier narun ctl): one planted under another app's key would be served alike; deploy the app again to name it", "app", app)
		}
	} else {
		e.Sequence = 0
	}
	if e.Routes == nil {
		e.Routes = []config.Route{}
	}
	return e.Routes, e.Sequence, nil
}
