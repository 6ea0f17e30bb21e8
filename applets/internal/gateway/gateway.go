// Package gateway is narun's HTTP gateway: it routes HTTP requests to NATS
// Micro services with the protocol of docs/PROTOCOL.md, and serves the admin
// endpoints (/healthz, /readyz, /metrics). The gw applet and `narun up`
// both run it.
package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
)

// Options configure a Gateway.
type Options struct {
	// Config is the [gateway] table; Listen "" disables plain HTTP,
	// AdminListen "" disables the admin server, TLS needs Cert and Key.
	Config config.Gateway
	// Conn is connected or reconnecting (RetryOnFailedConnect); requests
	// get 503 while it is not connected.
	Conn *nats.Conn
	// Logger receives the gateway's logs; nil discards them.
	Logger *slog.Logger
	// ConfigPath is the narun.toml the routes came from, re-read when it
	// changes and on Reload; "" disables that.
	ConfigPath string
	// ConfigContent is ConfigPath's content as Config was read from it
	// (config.File.Content). The file may have changed since: narun up
	// waits for JetStream before the gateway starts, minutes on a cluster
	// member whose peers are down. Compared with this, such an edit is a
	// change the watch applies, and warns of when a restart must.
	ConfigContent []byte
	// OnListen, if set, is told each address Run listens on; name is
	// "http", "https" or "admin". Tests use it with ":0" addresses.
	OnListen func(name, addr string)
	// OnServing, if set, is called once every listener is bound.
	OnServing func()
	// OnStopping, if set, is called when the end of Run's context starts
	// the drain, on Run's goroutine: what it logs comes before "gateway
	// stopped". Not called when Run fails to start.
	OnStopping func()
	// WholeFile says the process runs every part of the configuration
	// file (narun up): a reload then names changes to [nats], [runner] and
	// data_dir as needing a restart too.
	WholeFile bool
	// Hurry, when closed, cuts the drain at shutdown short: in-flight
	// requests are dropped rather than waited for. nil: only
	// shutdown_timeout bounds the drain.
	Hurry <-chan struct{}
	// NodeKeys are trusted while Config's trusted_keys is empty, at start
	// and after every reload: narun up trusts its node key without a line
	// in the file, and a reload of that file must not drop the key.
	NodeKeys []string
	// RoutesCache is a file that keeps narun-routes' entries as last read,
	// served at the next start until the bucket can be read; "" keeps none.
	RoutesCache string
	// TLSListenChosen says --tls-listen was given: an HTTPS address asked
	// for, even the default one, which a file may write out unasked.
	TLSListenChosen bool
}

// Gateway proxies HTTP requests to NATS services.
type Gateway struct {
	opts    Options
	nc      *nats.Conn
	log     *slog.Logger
	mux     *inboxMux
	metrics *metrics
	noRoute *routeMetrics
	table   atomic.Pointer[table]
	chunk   atomic.Int64
	bigBufs sync.Pool

	idPrefix string
	idSeq    atomic.Uint64

	// reloadMu is held for the whole of a reload, from the file read to
	// the table stored: the watch and SIGHUP reload from goroutines of
	// their own, and of two reads of the file the later must be applied
	// last, or the gateway serves the earlier content while fileVersion
	// says the later, and no look sees anything to reload.
	reloadMu sync.Mutex

	mu  sync.Mutex // serialises route rebuilds
	cfg config.Gateway
	// signatures checks the entries of narun-routes (docs/SECURITY.md,
	// "Signed specs"); kvRaw holds those it accepted, as stored, to check
	// them again when a reload changes trusted_keys, and kvRoutes what
	// they say.
	signatures *signing.Verifier
	kvRaw      map[string][]byte
	kvRoutes   map[string][]config.Route
	// appsServed is the number of apps of kvRoutes whose routes the table
	// holds.
	appsServed int
	// order holds the highest sequence of a signed entry served per app,
	// kept beside the routes cache when there is one.
	order *signing.Order
	// unkept holds, by app, the sequence of an entry kvRaw holds that the
	// routes cache may not yet: held in order, which refuses the entries
	// below it, and written to its file once a write of the cache holds
	// the entry (keep). Written first, a power cut before the cache's
	// write, or a cache write that fails on its own (a full disk), left
	// the file ahead of the cache, and a restart without NATS refused the
	// cached entry: 404 for an app its runner starts from a cached spec.
	unkept map[string]signing.Change
	// cacheMu orders the writes of the routes cache; cacheFailed, under
	// it, says the last one failed and is to be tried again.
	cacheMu     sync.Mutex
	cacheFailed bool
	cert        atomic.Pointer[tls.Certificate]
	// tickets holds the keys of the HTTPS session tickets, made anew
	// with each certificate loaded: a session of the one before must not
	// resume once it is replaced (revoked, say), which Go's own keys,
	// kept for the process's life, would let it do for 7 days.
	tickets atomic.Pointer[ticketKeys]
	// https says the HTTPS listener runs: it starts with the gateway or
	// not at all, and its certificate is watched only if it does.
	https bool
	// certVersion is the content of the certificate pair last loaded,
	// or tried; fileVersion that of the configuration file (see version).
	certVersion string
	fileVersion string
	// started are the file's settings a reload cannot apply, as the file
	// said them when Config was read from it; warned, those of them a
	// reload warned of since, with the value it warned of.
	started, warned map[string]string
	// routeLines are the lines of the file's [[gateway.routes]] entries,
	// for errors; nil when they cannot be placed.
	routeLines []int
	accessLog  atomic.Bool
	// bodyIdle is body_idle_timeout, as a time.Duration.
	bodyIdle atomic.Int64
	// routesRead is the connection's count of reconnections when the
	// watch of narun-routes that last delivered the bucket's content was
	// started, -1 before any did (see routesCurrent).
	routesRead atomic.Int64
	// rereadRoutes asks the watch of narun-routes to read the bucket
	// again, after a reload changed trusted_keys: an entry refused before
	// may pass now, and the gateway holds only the entries it accepted.
	rereadRoutes chan struct{}
	// firstWait is firstMessageWait; a test lengthens it so that a
	// loaded machine cannot make it miss a message sent with the head.
	firstWait time.Duration
	// conns bounds the connections of the HTTP and HTTPS listeners.
	conns *connLimit
	// bodies bounds the memory of request bodies; nil bounds nothing.
	bodies *bodyBudget
	// mem hands the memory of bodies, both ways, back to the OS once the
	// gateway holds none.
	mem *memRelease
	// windows is what the response windows of the requests in flight
	// share; nil bounds nothing.
	windows *windowBudget
	// fails logs the requests the gateway fails, a few of each kind.
	fails failLog
	// cut is closed when the drain at shutdown ends and Run is to close
	// the connections left: a request still waiting for its reply's head
	// answers 503 before its connection closes, rather than the client
	// seeing the connection reset, and one whose context ends then was
	// cut by the gateway, not left by its client (cutting).
	cut     chan struct{}
	cutOnce sync.Once
	// cutWhy is the reason the requests cut give, set before cut closes:
	// a second signal may end the drain long before shutdown_timeout.
	cutWhy string
	// cutWait is cutAnswerWait; a test lengthens it to see that a hurry
	// ends it.
	cutWait time.Duration
	// draining is set when Run stops taking requests: /readyz answers
	// 503 from then on, so that a load balancer sends no more, while the
	// admin listener stays up until the drain ends.
	draining atomic.Bool
	// listen is net.Listen; a test makes its listener fail.
	listen func(network, address string) (net.Listener, error)
	// quietLimit is quietBound; a test lowers it.
	quietLimit int64
}

// New checks the configuration and subscribes the reply inbox; it does not
// listen yet (see Run).
func New(opts Options) (*Gateway, error) {
	if opts.Conn == nil {
		return nil, errors.New("gateway: no NATS connection")
	}
	g, err := configured(opts)
	if err != nil {
		return nil, err
	}
	mux, err := newInboxMux(g.nc)
	if err != nil {
		return nil, err
	}
	mux.mem = g.mem
	g.mux = mux
	return g, nil
}

// Check says whether New would accept opts' configuration (routes, TLS
// files, trusted keys), without a NATS connection and without listening.
func Check(opts Options) error {
	_, err := configured(opts)
	return err
}

// configured is a gateway with opts' configuration applied, not yet
// connected to anything.
func configured(opts Options) (*Gateway, error) {
	// The problems of the keys, the routes and the certificate are
	// independent: each is named, so that one --check finds them all.
	signatures, keysErr := trustedKeys(&opts.Config, opts.NodeKeys, opts.ConfigPath)
	orderFile := ""
	if opts.RoutesCache != "" {
		orderFile = opts.RoutesCache + orderSuffix
	}
	order, orderErr := signing.LoadOrder(orderFile)
	g := &Gateway{
		opts:       opts,
		nc:         opts.Conn,
		log:        opts.Logger,
		metrics:    newMetrics(),
		cfg:        opts.Config,
		kvRaw:      map[string][]byte{},
		unkept:     map[string]signing.Change{},
		kvRoutes:   map[string][]config.Route{},
		firstWait:  firstMessageWait,
		listen:     net.Listen,
		https:      opts.Config.TLS.Cert != "" && opts.Config.TLS.Listen != "",
		signatures: signatures,
		order:      order,
		cut:        make(chan struct{}),
		cutWait:    cutAnswerWait,
		// One request held stands for any made before the watch reads
		// the bucket again.
		rereadRoutes: make(chan struct{}, 1),
	}
	if g.nc != nil {
		g.metrics.natsConnected = g.nc.IsConnected
	}
	g.routesRead.Store(-1)
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if orderErr != nil {
		g.log.Error("signed routes entries: replays of earlier ones are refused again from the next deploy of each app", "err", orderErr)
	}
	g.noRoute = g.metrics.forRoute("")
	g.fails.log = g.log
	maxConns := int(opts.Config.MaxConnections)
	if maxConns == 0 {
		maxConns = maxConnectionsFor(memory())
	}
	g.conns = newConnLimit(maxConns, g.log)
	g.metrics.conns = g.conns
	g.quietLimit = quietBound
	bodyMemory := int64(opts.Config.MaxBodyMemory)
	if bodyMemory == 0 {
		bodyMemory = defaultBodyMemory()
	}
	g.mem = newMemRelease(releaseDelay)
	if bodyMemory > 0 {
		g.bodies = newBodyBudget(bodyMemory, g.mem)
		g.metrics.bodies = g.bodies
		g.windows = &windowBudget{size: bodyMemory}
		g.metrics.windows = g.windows
	}
	g.bigBufs.New = func() any { return new([]byte) }
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	g.idPrefix = base32.HexEncoding.EncodeToString(rnd[:]) + "-"
	if g.opts.ConfigPath != "" {
		g.fileVersion = version(opts.ConfigContent, nil)
		if f, lines, err := decodeConfigFile(g.opts.ConfigPath, opts.ConfigContent); err == nil {
			g.started = g.restartOnly(f)
			g.routeLines = placed(lines, opts.Config.Routes)
		}
	}
	g.mu.Lock()
	routesErr := g.rebuild(opts.Config, g.kvRoutes)
	g.mu.Unlock()
	var tlsErr error
	if tc := opts.Config.TLS; tc.Cert != "" || tc.Key != "" {
		if tlsErr = halfTLSPair(g.opts.ConfigPath, tc); tlsErr == nil {
			if key, err := g.loadCert(); err != nil {
				tlsErr = placeKey(g.opts.ConfigPath, key, err)
			}
		}
	} else if tc.Listen != "" && (tc.Listen != config.Defaults().Gateway.TLS.Listen || g.opts.TLSListenChosen) {
		// An address was chosen, by --tls-listen or as another than the
		// default in the file, for a listener that cannot start. A warning, not
		// Caddy's error: the gateway served plain HTTP with such a file
		// before, and an upgrade must not stop it from starting.
		g.log.Warn("gateway.tls.listen set but no gateway.tls.cert and gateway.tls.key: HTTPS is off", "tls_listen", tc.Listen)
	}
	if err := errors.Join(keysErr, routesErr, tlsErr); err != nil {
		return nil, err
	}
	return g, nil
}

// halfTLSPair is the error of a [gateway.tls] that sets one of cert and
// key without the other, nil for one that sets both or neither. Only the
// file sets them: the line to fix is the one set.
func halfTLSPair(path string, tc config.GatewayTLS) error {
	if (tc.Cert == "") == (tc.Key == "") {
		return nil
	}
	set, missing := "gateway.tls.cert", "gateway.tls.key"
	if tc.Cert == "" {
		set, missing = missing, set
	}
	return placeKey(path, set, fmt.Errorf("set without %s: HTTPS needs both the certificate and its key", missing))
}

// chunkSize is how much body goes in one message: the server's
// max_payload, known once connected, less room for the headers.
func (g *Gateway) chunkSize() int {
	if c := g.chunk.Load(); c > 0 {
		return int(c)
	}
	mp := g.nc.MaxPayload()
	if mp <= 0 {
		mp = 1 << 20
	}
	const headroom = 64 << 10
	c := mp - headroom
	if mp <= 2*headroom {
		c = max(mp/2, 1)
	}
	g.chunk.Store(c)
	return int(c)
}

// Handler is the proxy without the listeners, for tests and embedding.
func (g *Gateway) Handler() http.Handler { return g }

func (g *Gateway) newRequestID() string {
	return g.idPrefix + strconv.FormatUint(g.idSeq.Add(1), 36)
}

// rebuild compiles the routes of cfg and of the narun-routes bucket into a
// new table. The file's routes must all be valid; a bad bucket entry only
// loses that app's routes, since one deploy must not break all the others.
// g.mu must be held.
func (g *Gateway) rebuild(cfg config.Gateway, kv map[string][]config.Route) error {
	timeout, maxBody := cfg.Timeout.D(), int64(cfg.MaxBody)
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if maxBody <= 0 {
		maxBody = 64 << 20
	}
	// Every bad value of the file is named, not only the first, so that
	// one --check or reload finds them all.
	var errs []error
	// They are the values of every route that sets none, deployed apps'
	// too: bound as compile bounds a route's own.
	if timeout > spec.MaxTimeout {
		errs = append(errs, placeKey(g.opts.ConfigPath, "gateway.timeout", fmt.Errorf("timeout %s: more than the maximum %s, a route's", timeout, spec.MaxTimeout)))
	}
	if maxBody > maxRouteBody {
		errs = append(errs, placeKey(g.opts.ConfigPath, "gateway.max_body", fmt.Errorf("max_body %d: more than the maximum %d (1TiB), a route's", maxBody, maxRouteBody)))
	}
	src := g.opts.ConfigPath
	if src == "" {
		src = "config"
	}
	var routes []*route
	for i, rc := range cfg.Routes {
		origin := fmt.Sprintf("%s route #%d (path %q)", src, i+1, rc.Path)
		at := func(string) string { return origin }
		if i < len(g.routeLines) {
			origin = fmt.Sprintf("%s:%d: route #%d (path %q)", src, g.routeLines[i], i+1, rc.Path)
			// The file is read again only for a route that has a
			// problem; its header's line stands for a key it leaves out.
			at = func(key string) string {
				where := (config.File{Path: src}).Where(fmt.Sprintf("gateway.routes[%d].%s", i, key))
				return fmt.Sprintf("%s: route #%d (path %q)", where, i+1, rc.Path)
			}
		}
		r, err := compileAt(rc, origin, at, timeout, maxBody)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		routes = append(routes, r)
	}
	if err := errors.Join(append(errs, duplicates(routes)...)...); err != nil {
		return err
	}
	skipped := 0
	routes = addAppRoutes(routes, kv, timeout, maxBody, func(app string, err error) {
		skipped++
		g.log.Error("ignoring routes of app", "app", app, "err", err)
	})
	t, err := newTable(routes)
	if err != nil {
		return err
	}
	labels := make(map[string]bool, len(t.routes))
	for _, r := range t.routes {
		r.metrics = g.metrics.forRoute(r.label)
		labels[r.label] = true
	}
	g.metrics.retain(labels)
	g.cfg = cfg
	g.kvRoutes, g.appsServed = kv, len(kv)-skipped
	g.table.Store(t)
	g.accessLog.Store(cfg.AccessLog)
	g.bodyIdle.Store(int64(cmp.Or(cfg.BodyIdleTimeout.D(), config.DefaultBodyIdleTimeout)))
	return nil
}

// Reload re-reads the routes from ConfigPath. On error the current routes
// stay in place; the error says why. A gateway started without a file has
// nothing to re-read, which is no failure: SIGHUP (systemctl reload) reaches
// it as it reaches any other, and its routes from narun-routes are current.
func (g *Gateway) Reload() error {
	if g.opts.ConfigPath == "" {
		g.log.Info("nothing to reload: started without a configuration file; routes from narun-routes follow the bucket by themselves")
		return nil
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	// The version of what is read, not of what the watch saw: a change
	// made in between is seen at the next look.
	data, err := os.ReadFile(g.opts.ConfigPath)
	g.mu.Lock()
	g.fileVersion = version(data, err)
	g.mu.Unlock()
	var f config.File
	var lines []int
	if err == nil {
		f, lines, err = decodeConfigFile(g.opts.ConfigPath, data)
	}
	if err != nil {
		g.metrics.reloadErrors.Add(1)
		return fmt.Errorf("reload: %w", err)
	}
	newSignatures, err := trustedKeys(&f.Gateway, g.opts.NodeKeys, g.opts.ConfigPath)
	if err != nil {
		g.metrics.reloadErrors.Add(1)
		return fmt.Errorf("reload: %w", err)
	}
	// Refused as at start: applied, half a pair left the next start to
	// fail, or the certificate's next load to fail on a file named "".
	if err := halfTLSPair(g.opts.ConfigPath, f.Gateway.TLS); err != nil {
		g.metrics.reloadErrors.Add(1)
		return fmt.Errorf("reload: %w", err)
	}
	// The sequences held below go to their file once the cache holds
	// their entries, which it may not yet; its write takes g.mu, so it
	// runs once that is released.
	var held bool
	defer func() {
		if held {
			g.saveRoutesCache()
		}
	}()
	// Held from the entries read to the table stored, so that no entry
	// checked against the trusted_keys being replaced slips in meanwhile.
	g.mu.Lock()
	defer g.mu.Unlock()
	signatures, kv := g.signatures, g.kvRoutes
	oldLines := g.routeLines
	g.routeLines = placed(lines, f.Gateway.Routes)
	// The sequences of the entries checked again count as accepted, as
	// when they were read with these keys: keys set by this reload would
	// otherwise let an earlier entry stored next replace them.
	var seqs map[string]uint64
	keysChanged := !slices.Equal(f.Gateway.TrustedKeys, g.cfg.TrustedKeys)
	if keysChanged {
		signatures = newSignatures
		kv = make(map[string][]config.Route, len(g.kvRaw))
		seqs = make(map[string]uint64, len(g.kvRaw))
		for app, value := range g.kvRaw {
			routes, seq, err := g.appRoutes(signatures, app, value)
			if err != nil {
				g.log.Error("ignoring routes of app: entry refused by the trusted keys reloaded", "app", app, "err", err)
				continue
			}
			kv[app], seqs[app] = routes, seq
		}
	}
	if err := g.rebuild(f.Gateway, kv); err != nil {
		g.routeLines = oldLines
		g.metrics.reloadErrors.Add(1)
		return fmt.Errorf("reload: %w", err)
	}
	g.signatures = signatures
	for app, seq := range seqs {
		g.hold(app, seq, g.kvRaw[app])
	}
	if keysChanged {
		select {
		case g.rereadRoutes <- struct{}{}:
		default:
		}
	}
	held = len(seqs) > 0
	// The file's routes, as the start's line counts them: the table's
	// count, deployed apps' routes included, read as the file's.
	g.log.Info("routes reloaded", "file", g.opts.ConfigPath, "routes", len(f.Gateway.Routes), "apps", g.appsServed)
	// Each change is said once, and a change undone needs no restart.
	var changed []string
	pending := map[string]string{}
	for k, v := range g.restartOnly(f) {
		if g.started == nil || g.started[k] == v {
			continue
		}
		pending[k] = v
		if w, ok := g.warned[k]; !ok || w != v {
			changed = append(changed, k)
		}
	}
	g.warned = pending
	if len(changed) > 0 {
		slices.Sort(changed)
		g.log.Warn("configuration changed where a reload cannot apply it: the change takes effect at the next start", "file", g.opts.ConfigPath, "keys", strings.Join(changed, ", "))
	}
	return nil
}

// ReloadOnSIGHUP is Reload for a SIGHUP, its failure logged.
func (g *Gateway) ReloadOnSIGHUP() { g.reloadBy("SIGHUP") }

// reloadBy is Reload for trigger, its failure logged in the same words
// whatever triggered it, so that one search finds every failed reload.
func (g *Gateway) reloadBy(trigger string) {
	if err := g.Reload(); err != nil {
		g.log.Error("configuration not reloaded, keeping the current routes and settings", "trigger", trigger, "err", err)
	}
}

// decodeConfigFile decodes the content of a configuration file.
func decodeConfigFile(path string, data []byte) (config.File, []int, error) {
	f, _, err := config.Decode(path, data)
	if err != nil {
		return config.File{}, nil, err
	}
	return f, config.ArrayTableLines(data, "gateway.routes"), nil
}

// placed is lines if there is one for each route, else nil: routes
// written inline have no header line of their own.
func placed(lines []int, routes []config.Route) []int {
	if len(lines) != len(routes) {
		return nil
	}
	return lines
}

// RestartOnly names the settings of restartOnly for narun gw's help, in
// lines of its width; TestRestartOnlyNamesEveryKey keeps the two together.
const RestartOnly = `The listeners (listen, admin_listen, tls.listen), shutdown_timeout,
max_connections, max_body_memory, routes_cache, log_level, log_format, the NATS
connection (nats_url, nats_creds, nats_nkey, nats_ca, nats_cert, nats_key) and
turning HTTPS on or off (setting or clearing tls.cert and tls.key) need a
restart`

// restartOnly are the settings of a configuration file that a reload
// cannot apply: listeners and logging are set up once, and the drain's
// bound is read when the gateway starts. A gateway of its own also has
// its NATS login; one inside narun up has none (it is connected in
// process), but the file's other parts, which nothing reloads.
func (g *Gateway) restartOnly(f config.File) map[string]string {
	gw := f.Gateway
	keys := map[string]string{
		"gateway.listen":       gw.Listen,
		"gateway.admin_listen": gw.AdminListen,
		"gateway.tls.listen":   gw.TLS.Listen,
		// HTTPS on or off, both named as both are set or cleared; other
		// files are reloaded.
		"gateway.tls.cert":         strconv.FormatBool(gw.TLS.Cert != ""),
		"gateway.tls.key":          strconv.FormatBool(gw.TLS.Key != ""),
		"gateway.shutdown_timeout": time.Duration(gw.ShutdownTimeout).String(),
		"gateway.max_connections":  strconv.Itoa(int(gw.MaxConnections)),
		"gateway.max_body_memory":  strconv.FormatInt(int64(gw.MaxBodyMemory), 10),
		"gateway.routes_cache":     gw.RoutesCache,
		"log_level":                f.LogLevel,
		"log_format":               f.LogFormat,
	}
	if g.opts.WholeFile {
		keys["data_dir"] = f.DataDir
		keys["nats"] = fmt.Sprintf("%+v", f.NATS)
		// The runner of narun up connects in process: its nats_url, which
		// follows [nats] listen when the file leaves it out, would name
		// [runner] for an edit of [nats] alone.
		runner := f.Runner
		runner.NATSURL, runner.NATSURLFrom = "", ""
		keys["runner"] = fmt.Sprintf("%+v", runner)
	} else {
		keys["gateway.nats_url"] = gw.NATSURL
		keys["gateway.nats_creds"] = gw.NATSCreds
		keys["gateway.nats_nkey"] = gw.NATSNkey
		// Read when it connects, as the login is.
		keys["gateway.nats_ca"] = gw.NATSCA
		keys["gateway.nats_cert"] = gw.NATSCert
		keys["gateway.nats_key"] = gw.NATSKey
	}
	return keys
}

// trustedKeys makes the verifier of the narun-routes entries: cfg's
// trusted_keys or, when it lists none, nodeKeys, which it then stores in
// cfg.TrustedKeys. A malformed key of cfg is named with its line in path,
// the file cfg was read from, as the runner names one of [runner].
func trustedKeys(cfg *config.Gateway, nodeKeys []string, path string) (*signing.Verifier, error) {
	if len(cfg.TrustedKeys) == 0 {
		cfg.TrustedKeys = nodeKeys
	} else {
		var errs []error
		for i, pub := range cfg.TrustedKeys {
			if err := signing.CheckPublic(pub); err != nil {
				key := fmt.Sprintf("gateway.trusted_keys[%d]", i)
				if where := (config.File{Path: path}).Where("gateway.trusted_keys"); where != "" {
					errs = append(errs, fmt.Errorf("%s: key %q: %w", where, key, err))
				} else {
					errs = append(errs, fmt.Errorf("%s: %w", key, err))
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	return signing.NewVerifier("gateway.trusted_keys", cfg.TrustedKeys)
}

// setAppEntry applies the narun-routes entry of one app; nil removes it.
func (g *Gateway) setAppEntry(app string, value []byte) {
	g.setAppEntries([]appEntry{{app, value}})
}

// appEntry is the narun-routes entry of one app, nil when it was removed.
type appEntry struct {
	app   string
	value []byte
}

// setAppEntries applies entries, each of a different app, with one
// rebuild of the table: a rebuild compiles every route of every app, so
// one per entry made a burst of n entries (a gateway's start, a deploy
// storm) cost O(n²).
func (g *Gateway) setAppEntries(entries []appEntry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	kv := maps.Clone(g.kvRoutes)
	seqs := make([]uint64, len(entries))
	applied := make([]bool, len(entries))
	var apps []string
	for i, e := range entries {
		if e.value != nil {
			routes, s, err := g.appRoutes(g.signatures, e.app, e.value)
			if err != nil {
				// Like a runner's refused spec, it leaves the app's routes
				// as they are, and the routes cache the entry accepted
				// last: anyone who may write narun-routes, any app on a
				// default device, could otherwise take an app's routes
				// away with bytes no trusted key signed.
				g.log.Error("routes entry refused; the app's routes are left as they are", "app", e.app, "err", err)
				continue
			}
			kv[e.app], seqs[i] = routes, s
		} else {
			delete(kv, e.app)
		}
		applied[i] = true
		apps = append(apps, e.app)
	}
	if len(apps) == 0 {
		return
	}
	if err := g.rebuild(g.cfg, kv); err != nil {
		g.log.Error("routes from narun-routes not applied", "apps", apps, "err", err)
		return
	}
	var deleted []signing.Change
	for i, e := range entries {
		switch {
		case !applied[i]:
		case e.value == nil:
			delete(g.kvRaw, e.app)
			delete(g.unkept, e.app)
			// At once, as the runner does: a restart that refuses the
			// cached copy refuses what was deleted.
			deleted = append(deleted, signing.Change{Key: e.app, Deleted: true})
		default:
			g.kvRaw[e.app] = e.value
			// The sequence of the value replaced has no entry to keep
			// it with any more.
			delete(g.unkept, e.app)
			g.hold(e.app, seqs[i], e.value)
		}
	}
	if err := g.order.Apply(deleted); err != nil {
		g.log.Warn("deletions of routes entries not kept: this gateway accepts their last entries again after its restart", "err", err)
	}
}

// hold takes app's entry value, signed with seq, as accepted: at once for
// the checks of the entries that follow, in the order's file once the
// routes cache holds the entry (unkept). g.mu is held.
func (g *Gateway) hold(app string, seq uint64, value []byte) {
	// Sequence 0 is no signed sequence: an unsigned entry, or one signed
	// by a ctl of an earlier release, neither of which is ordered.
	if seq == 0 {
		return
	}
	g.order.Hold(app, seq, value)
	// Without a cache, the order has no file to keep ahead of it.
	if g.opts.RoutesCache != "" {
		g.unkept[app] = signing.Change{Key: app, Sequence: seq, Value: value}
	}
}

// tlsFiles is the [gateway.tls] table of the current configuration.
func (g *Gateway) tlsFiles() config.GatewayTLS {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.TLS
}

// loadCert loads the pair from the bytes whose version it records, so
// that a pair changed while it was read is seen as changed again. key is
// the configuration key to fix when it fails: the file that could not be
// read, else the certificate, of a pair that does not load.
func (g *Gateway) loadCert() (key string, err error) {
	tc := g.tlsFiles()
	certPEM, certErr := os.ReadFile(tc.Cert)
	keyPEM, keyErr := os.ReadFile(tc.Key)
	g.certVersion = version(certPEM, certErr) + version(keyPEM, keyErr)
	key = "gateway.tls.cert"
	if certErr == nil && keyErr != nil {
		key = "gateway.tls.key"
	}
	err = cmp.Or(certErr, keyErr)
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		return key, fmt.Errorf("load tls certificate %s with key %s: %w", tc.Cert, tc.Key, err)
	}
	// Served all the same: the clock may be what is wrong, and a client
	// that checks dates refuses it either way.
	if leaf := cert.Leaf; leaf != nil {
		switch now := time.Now(); {
		case now.After(leaf.NotAfter):
			g.log.Warn("tls certificate expired: clients that check it refuse the connection", "cert", tc.Cert, "not_after", leaf.NotAfter)
		case now.Before(leaf.NotBefore):
			g.log.Warn("tls certificate not yet valid (or this clock is behind): clients that check it refuse the connection", "cert", tc.Cert, "not_before", leaf.NotBefore)
		}
	}
	g.cert.Store(&cert)
	g.tickets.Store(newTicketKeys(nil, time.Now()))
	return "", nil
}

// ticketKeys are the keys of the HTTPS session tickets: the first
// encrypts, every one decrypts. As Go's own, a new one comes every
// ticketKeyEvery and the oldest goes past ticketKeysKept, so that a key
// found later opens no more than a week of recorded TLS 1.2 sessions.
type ticketKeys struct {
	conf *tls.Config
	keys [][32]byte
	made time.Time // when keys[0] was made
}

const (
	ticketKeyEvery = 24 * time.Hour
	ticketKeysKept = 7
)

// newTicketKeys is a fresh key made at now, followed by the newest of
// kept.
func newTicketKeys(kept [][32]byte, now time.Time) *ticketKeys {
	var key [32]byte
	// crypto/rand.Read does not fail (Go 1.24+): it ends the process
	// rather than hand out a predictable key.
	_, _ = rand.Read(key[:])
	keys := append([][32]byte{key}, kept[:min(len(kept), ticketKeysKept-1)]...)
	conf := &tls.Config{}
	conf.SetSessionTicketKeys(keys)
	return &ticketKeys{conf: conf, keys: keys, made: now}
}

// rotateTicketKeys adds a new ticket key once the newest is
// ticketKeyEvery old.
func (g *Gateway) rotateTicketKeys(now time.Time) {
	if t := g.tickets.Load(); t != nil && now.Sub(t.made) >= ticketKeyEvery {
		g.tickets.Store(newTicketKeys(t.keys, now))
	}
}

// placeKey names the file and line of the configuration key an error of
// the gateway's start is about, as the file's other errors are named.
func placeKey(path, key string, err error) error {
	if where := (config.File{Path: path}).Where(key); where != "" {
		return fmt.Errorf("%s: key %q: %w", where, key, err)
	}
	return fmt.Errorf("%s: %w", key, err)
}

func (g *Gateway) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return g.cert.Load(), nil
}

// version identifies the content of a file as read (data, err): a file
// replaced by one of the same size and modification time is a change too,
// which a stamp of those would miss (cp -p, rsync -a and tar keep the
// source's time; a file system with a coarse clock gives two saves within
// one tick the same time). The files watched are small.
func version(data []byte, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	sum := sha256.Sum256(data)
	return string(sum[:])
}

func fileVersion(path string) string { return version(os.ReadFile(path)) }

// watchFiles looks at the configuration and certificate files every
// second: a read of a few small files, and no inotify dependency. It
// writes the routes cache and the order of signed entries again at the
// same pace when their last write failed: the disk may have room by then.
func (g *Gateway) watchFiles(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var seen lastLook
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.look(&seen)
		g.rotateTicketKeys(time.Now())
		g.retryRoutesCache()
		g.retryOrder()
	}
}

// lastLook is the content of the watched files at the watch's last look.
type lastLook struct{ config, cert string }

// look applies a configuration or certificate change once two looks in a
// row see the same new content. A file written in place (truncated, then
// written) may be caught half written, and half a configuration may well
// parse (an empty one does: no routes), as half a certificate pair may
// load; a whole file stays as it is.
func (g *Gateway) look(seen *lastLook) {
	if p := g.opts.ConfigPath; p != "" {
		g.mu.Lock()
		applied := g.fileVersion
		g.mu.Unlock()
		if v := fileVersion(p); v != applied && v == seen.config {
			g.reloadBy("file change")
		} else {
			seen.config = v
		}
	}
	if tc := g.tlsFiles(); g.https && tc.Cert != "" {
		if v := fileVersion(tc.Cert) + fileVersion(tc.Key); v != g.certVersion && v == seen.cert {
			if _, err := g.loadCert(); err != nil {
				g.metrics.reloadErrors.Add(1)
				g.log.Error("tls certificate change not applied, keeping the current one", "err", err)
			} else {
				g.log.Info("tls certificate reloaded", "cert", tc.Cert)
			}
		} else {
			seen.cert = v
		}
	}
}

// HTTP/2 flow control. A request body is read only as fast as its service
// pulls it; what the client sent beyond that waits in the server and counts
// against both its stream's receive window and its connection's. With
// net/http's defaults (1 MiB each) one upload whose service is slow, stalled
// or not pulling yet fills the connection's window by itself, and every
// other request of the connection that has a body (a browser's POST, a gRPC
// call) waits behind it. A connection window as large as all its streams'
// windows together leaves each stream held by its own window only; nginx
// and Apache httpd open the connection's window fully to the same end, but
// a bound keeps what one connection may make the gateway hold known
// (docs/GATEWAY.md, "Limits").
const (
	// h2MaxStreams is RFC 9113's recommended floor (6.5.2), below Go's 250
	// and nginx's 128: a request whose body is being forwarded costs some
	// 4 MiB at the default max_payload (docs/PERFORMANCE.md), whatever the
	// window, so the number of streams bounds a connection's memory most.
	// Clients queue past it, or open another connection.
	h2MaxStreams = 100
	// h2StreamWindow bounds one body's bytes in flight between client and
	// gateway, and so one upload's rate to window/RTT: 256 KiB is 5 MiB/s
	// (40 Mbit/s) at 50 ms, 2.5 MiB/s at 100 ms, as much as most uplinks to
	// an edge device carry, and no bound on a LAN. Go's 1 MiB would allow 4
	// times that and make a connection's worst case 100 MiB, not 25. Over
	// HTTP/1.1 the kernel's TCP window plays this part.
	h2StreamWindow = 256 << 10
	// net/http documents the connection's window as valid below 4 MiB, yet
	// its server takes any up to 2^31-1; TestHTTP2ConnectionWindowCoversEveryStream
	// reads what is announced, so a Go that enforced the documented bound
	// would fail it.
	h2ConnWindow = h2MaxStreams * h2StreamWindow
)

// http2Limits is the HTTP/2 configuration of the gateway's servers.
// stalled closes a connection that takes none of what waits to be written
// to it for that long: a stream's write deadline resets the stream by a
// frame that waits behind the others, so once a client reads nothing of
// its connection at all (its network gone, or its own output full) no
// deadline of the exchange can end a write that waits there. Fixed per
// server: net/http reads it when a connection starts, unsynchronised.
func http2Limits(stalled time.Duration) *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          h2MaxStreams,
		MaxReceiveBufferPerStream:     h2StreamWindow,
		MaxReceiveBufferPerConnection: h2ConnWindow,
		WriteByteTimeout:              stalled,
	}
}

// Run serves the listeners until ctx is done, then stops accepting, lets
// in-flight requests finish (bounded by shutdown_timeout) and returns nil.
// The admin listener serves through that drain, /readyz answering 503,
// and closes after it. A listener that fails is an error.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.mux.close()
	defer g.fails.flush()
	type srv struct {
		name string
		s    *http.Server
		ln   net.Listener
		tls  bool
	}
	var servers []srv
	closeAll := func() {
		for _, s := range servers {
			_ = s.ln.Close()
		}
	}
	errLog := log.New(serverLog{g.log}, "", 0)
	keys := map[string]string{"http": "gateway.listen", "https": "gateway.tls.listen", "admin": "gateway.admin_listen"}
	listen := func(name, addr string, h http.Handler, p *http.Protocols, useTLS bool) error {
		ln, err := g.listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("gateway %s listener: %w", name, config.PortNeedsRoot(keys[name], err))
		}
		s := &http.Server{
			Handler:           h,
			Protocols:         p,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          errLog,
			// body_idle_timeout as it is at the start: a reload
			// cannot reach a server's HTTP/2 configuration.
			HTTP2: http2Limits(time.Duration(g.bodyIdle.Load())),
		}
		if name == "admin" {
			s.WriteTimeout = adminWriteTime
		} else {
			ln = quietListener{Listener: ln, limit: g.quietLimit, closed: &g.conns.quiet}
			s.ConnState = g.conns.track
			s.ConnContext = withConn
			// The gateway answers OPTIONS * itself, within its bounds
			// (serverOptions).
			s.DisableGeneralOptionsHandler = true
		}
		if useTLS {
			s.TLSConfig = &tls.Config{GetCertificate: g.getCertificate, MinVersion: tls.VersionTLS12,
				WrapSession: func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
					return g.tickets.Load().conf.EncryptTicket(cs, ss)
				},
				// A ticket of keys replaced fails to decrypt: a full
				// handshake, with the certificate now loaded.
				UnwrapSession: func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
					return g.tickets.Load().conf.DecryptTicket(identity, cs)
				},
			}
		}
		servers = append(servers, srv{name, s, ln, useTLS})
		g.log.Info("gateway listening", "listener", name, "addr", ln.Addr().String())
		if g.opts.OnListen != nil {
			g.opts.OnListen(name, ln.Addr().String())
		}
		return nil
	}
	c := g.opts.Config
	if c.Listen != "" {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		if err := listen("http", c.Listen, g, p, false); err != nil {
			closeAll()
			return err
		}
	}
	if c.TLS.Cert != "" && c.TLS.Listen == "" {
		g.log.Warn("gateway tls: cert and key are loaded but no TLS listener is configured (gateway.tls.listen is empty), so HTTPS is off",
			"cert", c.TLS.Cert)
	}
	if g.https {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		if err := listen("https", c.TLS.Listen, g, p, true); err != nil {
			closeAll()
			return err
		}
	}
	if c.AdminListen != "" {
		if err := listen("admin", c.AdminListen, g.adminHandler(), nil, false); err != nil {
			closeAll()
			return err
		}
	}

	if g.opts.OnServing != nil {
		g.opts.OnServing()
	}
	g.mu.Lock()
	fromFile := len(g.cfg.Routes)
	g.mu.Unlock()
	attrs := []any{"routes", fromFile, "max_connections", g.conns.max}
	if g.bodies != nil {
		attrs = append(attrs, "max_body_memory_bytes", g.bodies.size, "max_body_waiters", g.bodies.maxWaiting)
	}
	g.log.Info("gateway serving: the configuration's routes now, deployed apps' as narun-routes has them", attrs...)

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { g.watchFiles(bg) })
	wg.Go(func() { g.watchRoutes(bg) })
	wg.Go(func() { g.mux.watchConnection(bg) })

	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			var err error
			if s.tls {
				err = s.s.ServeTLS(s.ln, "", "")
			} else {
				err = s.s.Serve(s.ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("gateway %s listener: %w", s.name, err)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
		if g.opts.OnStopping != nil {
			g.opts.OnStopping()
		}
	case runErr = <-errc:
	}
	g.draining.Store(true)
	stopBG()
	grace := c.ShutdownTimeout.D()
	if grace <= 0 {
		grace = 15 * time.Second
	}
	// Hurry ends both the drain and the wait for the answers of the
	// requests it cut: a second signal stops at once.
	hctx, hurry := context.WithCancel(context.WithoutCancel(ctx))
	defer hurry()
	if g.opts.Hurry != nil {
		go func() {
			select {
			case <-g.opts.Hurry:
				hurry()
			case <-hctx.Done():
			}
		}()
	}
	sctx, cancel := context.WithTimeout(hctx, grace)
	defer cancel()
	var sw sync.WaitGroup
	var admin *http.Server
	for _, s := range servers {
		if s.name == "admin" {
			admin = s.s
			continue
		}
		sw.Go(func() {
			if err := s.s.Shutdown(sctx); err != nil {
				g.log.Warn("in-flight requests cut at shutdown", "listener", s.name, "err", err)
				g.cutOnce.Do(func() {
					g.cutWhy = "cut at shutdown: not finished within shutdown_timeout"
					if hctx.Err() != nil {
						g.cutWhy = "cut at shutdown: stopped at once by a second signal"
					}
					close(g.cut)
				})
				// Long enough for the 503s to go out; a response already
				// streaming is cut by Close.
				lctx, lcancel := context.WithTimeout(hctx, g.cutWait)
				_ = s.s.Shutdown(lctx)
				lcancel()
				_ = s.s.Close()
			}
		})
	}
	sw.Wait()
	if admin != nil {
		// What the admin server has in hand is a scrape or a probe: it
		// gets as long as the 503s of the requests cut.
		actx, acancel := context.WithTimeout(hctx, g.cutWait)
		_ = admin.Shutdown(actx)
		acancel()
		_ = admin.Close()
	}
	wg.Wait()
	g.log.Info("gateway stopped")
	return runErr
}

// cutting says the drain at shutdown has ended (cut).
func (g *Gateway) cutting() bool {
	select {
	case <-g.cut:
		return true
	default:
		return false
	}
}

// cutAnswerWait bounds the wait, once the drain at shutdown is over, for
// the 503s of the requests it cut to be written.
const cutAnswerWait = time.Second

// serverLog is the ErrorLog of the gateway's servers. Most of what
// net/http says there is about clients (a failed TLS handshake, a bad
// HTTP/2 preface), routine on a port open to the Internet, and goes at
// debug; but a failed accept (the process out of file descriptors, when
// connections are refused unseen) and a panic are the gateway's own
// trouble, which an operator must see.
type serverLog struct{ log *slog.Logger }

func (s serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelDebug
	if strings.HasPrefix(msg, "http: Accept error") || strings.HasPrefix(msg, "http: panic serving") || strings.HasPrefix(msg, "http2: panic serving") {
		level = slog.LevelError
	}
	s.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// adminWriteTime bounds the writing of each admin answer. The admin
// listener, on every interface by default, has no max_connections: a client
// that asked for /metrics again and again and read none of it held its
// connection for ever. Prometheus gives up on a scrape after 10 s too.
const adminWriteTime = 10 * time.Second

func (g *Gateway) adminHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if g.draining.Load() {
			http.Error(w, "draining: stopping, in-flight requests finishing, no new ones taken", http.StatusServiceUnavailable)
			return
		}
		if !g.nc.IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		if !g.routesCurrent() {
			http.Error(w, "deployed apps' routes not read from "+names.RoutesBucket+" since connecting to NATS", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	m.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := g.metrics.write(w); err != nil {
			g.log.Debug("write metrics", "err", err)
		}
	})
	return m
}
