// Package consumer serves an http.Handler as a NATS Micro service behind the
// narun gateway: each HTTP request arrives as a NATS request (see
// docs/PROTOCOL.md) and is handed to the handler as a real *http.Request.
//
// Transport is the other side: an http.RoundTripper with which an app calls
// another app's service over NATS, as the gateway would.
//
// gRPC services are served the same way: a *grpc.Server from grpc-go is an
// http.Handler for the HTTP/2 requests the gateway forwards from gRPC
// clients, so ListenAndServe(ctx, cfg, grpcServer) serves unary and
// streaming calls; route the gateway's path "/<package>.<Service>/" to it.
//
// The request is the one the client sent the gateway, as net/http's server
// would hand it over: Host, RemoteAddr, the headers and the cookies are the
// client's, ContentLength is the client's Content-Length (-1 for a body
// sent without one), the body streams in when it is large, and the
// context ends when the client goes away or the route's timeout passes
// (it always has that deadline; 30 s for a request made by hand without
// Narun-Timeout), before a read of the body that fails because the
// gateway ended the exchange returns, as behind net/http's server. For a client that used https, r.TLS is
// an empty, non-nil tls.ConnectionState (the gateway holds the TLS
// connection, so its details are not known here). What differs from a
// request served by net/http directly:
//   - r.URL is always a path and query (no Scheme or Host), and so is
//     r.RequestURI, even for a client that sent an absolute URL
//     (GET http://host/x), which net/http keeps in both;
//   - on a route with strip_prefix, r.URL and r.RequestURI both hold the
//     path without the prefix (where http.StripPrefix keeps the client's
//     RequestURI), so ServeMux patterns, r.PathValue and r.Pattern see the
//     stripped path. The prefix removed is in X-Forwarded-Prefix (/api
//     for the route /api/): prepend it to absolute links and redirects,
//     or they lead the client out of the route. That includes a redirect
//     http.Redirect makes absolute from r.URL.Path, and those
//     http.ServeMux makes itself (/sp to /sp/ for the pattern "/sp/",
//     307); the StripPrefix example wraps a handler to put the prefix
//     back in every Location. A Location relative to the request, written
//     in the header by hand, needs nothing;
//   - hop-by-hop headers (Connection, Keep-Alive, TE, Upgrade...) are the
//     gateway's and are not seen, so r.Close is false; an Expect:
//     100-continue header is seen, and the client is asked for a large
//     body, or one of unknown length, only when the handler first reads
//     it, as net/http does (for one that fits in one message, before the
//     handler runs);
//   - r.RemoteAddr is the gateway's client, which is the client itself
//     unless a proxy stands in front of the gateway (X-Forwarded-For then
//     lists the addresses);
//   - client headers whose names start with Narun- or Nats- are dropped,
//     X-Forwarded-Host, X-Forwarded-Proto and X-Forwarded-Prefix are
//     the gateway's, never the client's, and a client's Forwarded,
//     X-Forwarded-Port, X-Forwarded-Ssl and X-Forwarded-Scheme are
//     dropped;
//   - r.Trailer is nil: the gateway relays no request trailers;
//   - the context holds no http.ServerContextKey or
//     http.LocalAddrContextKey value: there is no *http.Server, and the
//     connection is the gateway's.
//
// The ResponseWriter behaves as net/http's, with these differences: the
// connection cannot be hijacked (the gateway holds it), of the interim
// 1xx responses only 103 Early Hints and the others from 102 up reach the
// client (100 Continue is the gateway's to send, and 101 is ignored), a
// second WriteHeader is ignored without a log line, a status from 600 to
// 999 is sent in Narun-Status as net/http's server sends it, but reaches
// the client as 502 Bad Gateway (it is no HTTP status, RFC 9110 §15, and
// the gateway takes it for a malformed reply and cancels the request),
// hop-by-hop headers (Connection: close) are dropped and do not close the
// client's connection, headers whose names start with Narun- or Nats-
// are dropped too, as is X-Request-Id (the client gets the gateway's id),
// trailers reach the client over HTTP/1 only in a
// chunked response (one whose length was not set before the body), a
// Trailer header only when the response streams (it has trailers, or was
// flushed), and of http.ResponseController's deadlines only the zero time
// (no deadline) is accepted, the route's timeout bounding the exchange,
// and the response's headers must fit in one NATS message (max_payload,
// 1 MiB unless the server says otherwise): larger ones fail the request
// with a 500 that gives both sizes. A response with a status of 500 or more counts as an error in `nats micro
// stats`, as do panics and requests the gateway gave up on. A panic, or a
// runtime.Goexit (t.FailNow in a handler), fails the request with a 500,
// or aborts a response already started. A handler still running at the
// request's deadline gets its caller a 504 as a NATS Micro error, whatever
// it writes, unless it flushed its head before: the gateway has answered
// its client so, and a service that calls this one over NATS and waits a
// little longer must not take a late head for the answer.
//
// # Running under narun, and locally
//
// Deployed by narun, the app's spec routes paths to a service, by
// default the app's own name ([[routes]] path = "/api/"): make that
// Config.Name, and call ListenAndServe. It connects as the runner says
// in the app's environment (NARUN_NATS_URL and the credentials files),
// and names the instance (NARUN_INSTANCE) in the service's metadata,
// which is how the runner's health check, a NATS Micro ping of the
// route's service, tells a new instance from the one it replaces (with
// Serve, set narun_instance in Config.Metadata yourself). Stop on SIGTERM,
// the runner's default stop_signal, by cancelling the context: Serve then
// lets the requests in flight finish, and the runner kills what still
// runs after the spec's stop_timeout.
//
// On a development machine, `narun up` runs NATS and the gateway (on
// ports 4222 and 8080) and serves the routes of its narun.toml
// (./narun.toml, else /etc/narun/narun.toml):
//
//	[[gateway.routes]]
//	path = "/api/"
//	service = "api"
//
// The same program, run without NARUN_NATS_URL, connects to
// nats://127.0.0.1:4222, and `curl http://127.0.0.1:8080/api/` reaches it.
// The handler is a plain http.Handler, so unit tests can call it with
// net/http/httptest, without NATS or gateway.
//
// It imports only the standard library and nats.go, so that any Go program
// can use it without pulling in the rest of narun.
package consumer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Config describes the service. Only Name is required.
type Config struct {
	// Name is the NATS Micro service name ([A-Za-z0-9_-]+), shown by
	// `nats micro ls`.
	Name string
	// Subject is the subject the gateway sends requests to (a route's
	// service); "" means Name. It must be a literal subject, outside the
	// $, _INBOX. and _NARUN. ones. Under narun leave it "": the runner's
	// health check pings the route's service by name, so Name must be it.
	Subject string
	// Version is a SemVer version; "" means "0.0.0".
	Version string
	// Description is shown by `nats micro info`; "" shows nothing.
	Description string
	// Metadata is shown by `nats micro info`; nil means none.
	Metadata map[string]string
	// QueueGroup spreads requests over instances; "" means "q", as in
	// nats.go/micro.
	QueueGroup string
	// MaxConcurrent bounds the requests handled at the same time; 0 means
	// 64 × GOMAXPROCS, and a negative value is an ErrConfig. Further requests wait their turn; their timeout
	// runs while they wait, and one that ends (or that the gateway
	// cancels) before a worker is free is dropped without calling the
	// handler, and counted as an error.
	MaxConcurrent int
	// ErrorHandler receives errors that cannot be returned to a caller: a
	// failed reply, a handler's panic (with its request id and stack) and, with
	// ListenAndServe, each disconnect from NATS, a server out of reach,
	// a stop that waits for one to take the last replies and what
	// nats.go reports asynchronously (a permissions violation, a slow
	// consumer), which it would otherwise print on stderr. It is
	// called from many goroutines at once, and may still be called for a
	// moment after ListenAndServe returned. nil logs them with the log
	// package's standard logger, as net/http's Server does without an
	// ErrorLog.
	ErrorHandler func(error)
}

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("invalid consumer config")
	// ErrConnClosed reports that the NATS connection closed while serving.
	ErrConnClosed = errors.New("nats connection closed")
)

var (
	nameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// SemVer 2.0's own grammar, as nats.go/micro checks it: no empty or
	// zero-led numeric identifier in a pre-release, no empty identifier.
	semverRe = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

func (c *Config) validate() error {
	if !nameRe.MatchString(c.Name) {
		return fmt.Errorf("%w: name %q: want letters, digits, '-' or '_'", ErrConfig, c.Name)
	}
	if c.Subject == "" {
		c.Subject = c.Name
	}
	if !literalSubject(c.Subject) {
		return fmt.Errorf("%w: subject %q: want a literal NATS subject", ErrConfig, c.Subject)
	}
	if c.Version == "" {
		c.Version = "0.0.0"
	}
	if !semverRe.MatchString(c.Version) {
		return fmt.Errorf("%w: version %q: want SemVer such as 1.2.3", ErrConfig, c.Version)
	}
	if IsReservedSubject(c.Subject) {
		return fmt.Errorf("%w: subject %q: the $, _NARUN. and _INBOX. subjects are NATS's and narun's own", ErrConfig, c.Subject)
	}
	if c.QueueGroup == "" {
		c.QueueGroup = micro.DefaultQueueGroup
	}
	if strings.ContainsAny(c.QueueGroup, " \t\r\n*>") {
		return fmt.Errorf("%w: queue group %q: want a name without spaces, '*' or '>'", ErrConfig, c.QueueGroup)
	}
	if c.MaxConcurrent < 0 {
		return fmt.Errorf("%w: max concurrent %d: want 0 (the default) or more", ErrConfig, c.MaxConcurrent)
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 64 * runtime.GOMAXPROCS(0)
	}
	// Served by $SRV.INFO while the caller may still hold the map.
	c.Metadata = maps.Clone(c.Metadata)
	return nil
}

// Serve registers the service on nc and serves h until ctx is cancelled; it
// then stops taking requests, lets the ones in flight finish and returns nil.
// An invalid cfg is an error wrapping ErrConfig, returned at once.
// A nil h means http.DefaultServeMux, as for net/http's server.
// The handlers' contexts are not cancelled by that: a handler that may run
// long (a stream) should also watch a signal of its own. Serve returns
// ErrConnClosed if nc is closed, or closes first; the handlers' contexts
// then end, as no reply can go out, and Serve returns once the handlers
// have.
func Serve(ctx context.Context, nc *nats.Conn, cfg Config, h http.Handler) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if nc.IsClosed() {
		return ErrConnClosed
	}
	if h == nil {
		// As http.ListenAndServe(addr, nil): handlers registered with
		// http.HandleFunc serve, where nil would panic on every request.
		h = http.DefaultServeMux
	}
	s := newServer(nc, cfg, h)
	return s.run(ctx)
}

// ListenAndServe connects to NATS as the narun runner tells apps to, then
// calls Serve (so a nil h is http.DefaultServeMux). It reads NARUN_NATS_URL (default nats://127.0.0.1:4222; a
// comma-separated list names several servers, tried in order) and the
// optional credentials files NARUN_NATS_CREDS (JWT + seed) and
// NARUN_NATS_NKEY (nkey seed). With NARUN_NATS_CA (the servers' CA) it
// connects over TLS, presenting NARUN_NATS_CERT and NARUN_NATS_KEY when
// set, and checks the server's certificate for NARUN_NATS_TLS_NAME when
// set (the runner sets it behind its NATS bridge, where the URL's host is
// the bridge's). NATS being down at start is not an error:
// the connection keeps retrying, and the ErrorHandler hears of it, once
// until a connection succeeds. NARUN_INSTANCE and NARUN_NODE, when set,
// are added to the metadata as narun_instance and narun_node, so the
// runner's health check and `nats micro info` can tell instances apart,
// and NARUN_APP_VERSION, the version deployed, as narun_version; it is
// also the service's version when cfg gives none and it is SemVer, as
// micro wants, so that `nats micro info` shows the version that runs.
// Once Serve returns, it waits until the server has every reply the
// handlers sent, for up to nats.go's DrainTimeout (30 s), then closes the
// connection; if the server did not confirm them (the wait timed out, the
// link was lost), it returns an error saying that they may be lost.
// Stopped while NATS is out of reach, it waits as long for a server to
// take the replies given meanwhile, which nats.go holds, and the
// ErrorHandler hears of that wait; with none to send it stops at once.
func ListenAndServe(ctx context.Context, cfg Config, h http.Handler) error {
	cfg.Metadata = withRunnerMetadata(cfg.Metadata)
	if v := os.Getenv("NARUN_APP_VERSION"); cfg.Version == "" && semverRe.MatchString(v) {
		cfg.Version = v
	}
	report := cfg.report
	// Said once until a connection succeeds: nats.go retries every few
	// seconds. The first connection's failure says only "no servers
	// available"; the retries that follow say why.
	var unreachable atomic.Bool
	// Set below from the certificate tlsFromEnv loads, before nats.go
	// can call the handlers that read it.
	var certNote string
	opts := []nats.Option{
		nats.ConnectHandler(func(*nats.Conn) { unreachable.Store(false) }),
		nats.ReconnectHandler(func(*nats.Conn) { unreachable.Store(false) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				report(fmt.Errorf("nats disconnected: %w", err))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if !errors.Is(err, nats.ErrNoServers) && !unreachable.Swap(true) {
				report(fmt.Errorf("nats not reachable, retrying: %w%s", err, certRefusedHint(err, certNote)))
			}
		}),
		// Without a handler nats.go prints these on stderr; the library
		// does not log.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				err = fmt.Errorf("nats subscription on %s: %w", sub.Subject, err)
			}
			report(err)
		}),
		nats.Name(cfg.Name),
	}
	url, envOpts, note, err := fromEnv()
	if err != nil {
		return err
	}
	certNote = note
	nc, err := connect(url, append(envOpts, opts...))
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := Serve(ctx, nc, cfg, h); err != nil {
		return err
	}
	return confirmReplies(nc, report)
}

// Connect connects to NATS as the narun runner tells apps to, as
// ListenAndServe does (NARUN_NATS_URL, the credentials and TLS files of the
// NARUN_NATS_* variables), for a connection of the app's own: the one a
// Transport calls other services on, which Serve may share. It keeps
// reconnecting for ever, to the servers in the order listed, and NATS out
// of reach at start is no error: the connection retries, and requests fail
// until it succeeds. opts come after narun's, so they may override them
// (nats.Name, handlers: without an ErrorHandler nats.go prints
// asynchronous errors on stderr). An error names the URL without its
// password or token.
func Connect(opts ...nats.Option) (*nats.Conn, error) {
	url, envOpts, _, err := fromEnv()
	if err != nil {
		return nil, err
	}
	return connect(url, append(envOpts, opts...))
}

func connect(url string, opts []nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		err = fmt.Errorf("connect to nats %s: %w", url, err)
		return nil, loginsHidden{err, hideLogins(err.Error(), url)}
	}
	return nc, nil
}

// fromEnv reads the connection the runner gives an app from its
// environment: the URL, the options of its login and TLS, and what to add
// to an error of a refused client certificate.
func fromEnv() (url string, opts []nats.Option, certNote string, err error) {
	opts = []nats.Option{
		// In the order listed: the runner lists its device's own server
		// first, and the app should stay on it as the runner does.
		nats.DontRandomize(),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		// A cut edge link sends nothing: notice within seconds and fail
		// over to another server instead of waiting minutes.
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(3),
	}
	if f := os.Getenv("NARUN_NATS_CREDS"); f != "" {
		opts = append(opts, nats.UserCredentials(f))
	}
	if f := os.Getenv("NARUN_NATS_NKEY"); f != "" {
		o, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return "", nil, "", fmt.Errorf("read nkey %s: %w", f, err)
		}
		opts = append(opts, o)
	}
	tlsOpts, certNote, err := tlsFromEnv()
	if err != nil {
		return "", nil, "", err
	}
	opts = append(opts, tlsOpts...)
	url = os.Getenv("NARUN_NATS_URL")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	return url, opts, certNote, nil
}

// pingInterval is how often ListenAndServe's connection pings the server;
// three pings unanswered give the link up. The tests of a dead link
// shorten it so as not to wait seconds for that.
var pingInterval = 2 * time.Second

// confirmReplies waits until the server has every reply the handlers sent:
// a connection closed before leaves them on their way, which a process
// that exits then can lose. A flush's PONG comes only once the server has
// everything sent ahead of its PING; nc.Drain ends with the same flush,
// but reports its failure (a drain or flush timeout, a link lost) only to
// nats.go's async error handler, racing its own close, so a lost reply
// went unsaid. While nc reconnects, nats.go holds what is sent for the
// next server, and the flush's PING follows it there.
func confirmReplies(nc *nats.Conn, report func(error)) error {
	if nc.IsClosed() {
		return nil
	}
	wait := nc.Opts.DrainTimeout
	if nc.IsReconnecting() {
		held, err := nc.Buffered()
		if err != nil || held == 0 {
			// Nothing to send: a stop while NATS is out of reach is
			// still a clean stop.
			return nil
		}
		// The stop may now take that long: say why.
		report(fmt.Errorf("stopping while nats is out of reach: waiting up to %s for it to take the last replies (%d bytes)", wait, held))
	}
	if err := nc.FlushTimeout(wait); err != nil {
		return fmt.Errorf("nats did not confirm the last replies, which may be lost: %w", err)
	}
	return nil
}

// server is one running instance of a service.
type server struct {
	nc      *nats.Conn
	cfg     Config
	h       http.Handler
	id      string
	started time.Time
	// q holds the requests for the workers, who live as long as the
	// service.
	q  queue
	wg sync.WaitGroup
	// base is the parent of every request's context, ended when the
	// connection closes: no reply can go out any more.
	base    context.Context
	endBase context.CancelCauseFunc

	// mu is taken before q.mu where both are held (cancel), never after:
	// the other way round would deadlock.
	mu       sync.Mutex
	inflight map[string]running
	stats    micro.EndpointStats
}

func newServer(nc *nats.Conn, cfg Config, h http.Handler) *server {
	s := &server{
		nc:       nc,
		cfg:      cfg,
		h:        h,
		id:       strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix),
		started:  time.Now().UTC(),
		inflight: make(map[string]running),
		stats:    micro.EndpointStats{Name: endpointName, Subject: cfg.Subject, QueueGroup: cfg.QueueGroup},
	}
	s.base, s.endBase = context.WithCancelCause(context.Background())
	s.q.handoff = make(chan job)
	s.q.waiting = make(map[string]uint64)
	s.q.early = make(map[string]time.Time)
	return s
}

const endpointName = "http"

// chunkSize is the body size of one message: the server's max_payload less
// room for the headers. It is read for each request, not kept: a
// reconnection may reach a server with a smaller max_payload (another of
// NARUN_NATS_URL's, or the same one restarted), which refuses chunks cut
// for the one before.
func (s *server) chunkSize() int {
	mp := s.nc.MaxPayload()
	if mp <= 0 {
		// Not connected: guess the NATS default.
		return chunkFor(1 << 20)
	}
	return chunkFor(mp)
}

func chunkFor(maxPayload int64) int {
	const headroom = 64 << 10
	if maxPayload <= 2*headroom {
		return int(max(maxPayload/2, 1))
	}
	return int(maxPayload - headroom)
}

func (s *server) run(ctx context.Context) error {
	var subs []*nats.Subscription
	defer func() {
		for _, vs := range subs {
			_ = vs.Unsubscribe()
		}
	}()
	cancelSub, err := s.nc.Subscribe(CancelSubject(s.cfg.Subject), s.cancel)
	if err != nil {
		return s.failed(fmt.Errorf("subscribe to %s: %w", CancelSubject(s.cfg.Subject), err))
	}
	subs = append(subs, cancelSub)
	defer s.startKeepAlive()()
	// The request subscription comes before the discovery verbs: whoever
	// takes a ping's answer for "serving" (the runner's readiness check, so
	// ctl's --wait) then finds the request subject taken too, as the server
	// handles one connection's SUBs in order. Cancel comes first of all, so
	// that no request is taken before it can be cancelled.
	closed := make(chan struct{})
	markClosed := sync.OnceFunc(func() { close(closed) })
	sub, err := s.nc.QueueSubscribe(s.cfg.Subject, s.cfg.QueueGroup, s.dispatch)
	if err != nil {
		return s.failed(fmt.Errorf("subscribe to %s: %w", s.cfg.Subject, err))
	}
	sub.SetClosedHandler(func(string) { markClosed() })
	if !sub.IsValid() {
		// The connection closed before the handler was set, which nats.go
		// then never calls. Its last dispatch may still run: stop drops it.
		markClosed()
	}
	// Pending limits are lifted because MaxConcurrent, not the client
	// buffer, bounds the work: a "slow consumer" would drop requests.
	if err = sub.SetPendingLimits(-1, -1); err != nil {
		err = fmt.Errorf("subscribe to %s: %w", s.cfg.Subject, err)
	} else {
		var vs []*nats.Subscription
		vs, err = s.addVerbs()
		subs = append(subs, vs...)
	}
	if err != nil {
		_ = sub.Unsubscribe()
		err = s.failed(err)
	} else {
		err = s.wait(ctx, sub, closed)
	}
	// After the closed handler, no request is left to take: the workers
	// can be told to finish what is queued, and stop.
	<-closed
	if errors.Is(err, ErrConnClosed) {
		// Handlers that wait for their request to end (a stream) would
		// hold Serve until their timeout, as net/http's server ends its
		// handlers' contexts when it closes.
		s.endBase(err)
	}
	s.stop()
	s.wg.Wait()
	return err
}

// stop has the workers finish what is queued and end, and dispatch drop
// whatever comes after. Each idle worker is handed an empty job, which
// tells it to stop; a worker still serving sees stopped when it is done.
func (s *server) stop() {
	q := &s.q
	q.mu.Lock()
	q.stopped = true
	idle := q.idle
	q.idle = 0
	q.mu.Unlock()
	for range idle {
		q.handoff <- job{}
	}
}

func (s *server) wait(ctx context.Context, sub *nats.Subscription, closed <-chan struct{}) error {
	select {
	case <-ctx.Done():
		// Drain delivers what the server already sent us, so no accepted
		// request is left unanswered. Without a connection there is
		// nothing to drain, and draining would wait for a reconnect.
		if !s.nc.IsConnected() {
			_ = sub.Unsubscribe()
		} else if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			_ = sub.Unsubscribe()
			return fmt.Errorf("drain %s: %w", s.cfg.Subject, err)
		}
		return nil
	case <-closed:
		if ctx.Err() == nil {
			return s.connClosed()
		}
		return nil
	}
}

// connClosed is Serve's error for a connection that closed, with why it
// closed (refused credentials, say), which the operator needs to read in
// the app's log.
func (s *server) connClosed() error {
	if err := s.nc.LastError(); err != nil {
		return fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	return ErrConnClosed
}

// failed is Serve's error for a step of registration that failed: a
// connection that closed meanwhile is said as such, whichever step saw it.
func (s *server) failed(err error) error {
	if s.nc.IsClosed() {
		return s.connClosed()
	}
	return err
}

// dispatch runs on the subscription's goroutine and waits for nothing but
// an idle worker to be scheduled, so that every request is stamped when it
// arrives. Workers live as long as
// the service: a goroutine per request would grow a fresh stack for every
// handler, which costs more than the handler itself for small requests.
func (s *server) dispatch(m *nats.Msg) {
	j := job{m: m, arrived: time.Now()}
	q := &s.q
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	if q.cancelled(m.Reply) {
		q.mu.Unlock()
		s.record(0, "cancelled before it arrived")
		return
	}
	switch {
	case q.idle > 0:
		// That worker is on its way to receive: the send waits only
		// for it to be scheduled.
		q.idle--
		q.mu.Unlock()
		q.handoff <- j
		return
	case q.workers < s.cfg.MaxConcurrent:
		q.workers++
		s.wg.Add(1)
		go s.worker(j)
	default:
		q.push(j)
	}
	q.mu.Unlock()
}

// worker serves j (if any), then the queued jobs, then each job handed to
// it, until stop; what is queued then is still served.
func (s *server) worker(j job) {
	returned := false
	defer func() {
		if !returned {
			// A handler called runtime.Goexit, which ends this goroutine
			// whatever it defers: another takes its place in the pool,
			// which would otherwise shrink for good.
			s.wg.Add(1)
			go s.worker(job{})
		}
		s.wg.Done()
	}()
	q := &s.q
	for {
		if j.m != nil {
			s.serve(j)
		}
		q.mu.Lock()
		var queued bool
		if j, queued = q.pop(); queued {
			q.mu.Unlock()
			continue
		}
		if q.stopped {
			q.mu.Unlock()
			returned = true
			return
		}
		q.idle++
		q.mu.Unlock()
		if j = <-q.handoff; j.m == nil {
			break
		}
	}
	for {
		q.mu.Lock()
		j, queued := q.pop()
		q.mu.Unlock()
		if !queued {
			returned = true
			return
		}
		s.serve(j)
	}
}

// cancel ends the exchange the gateway gave up on: its handler's context
// if it runs, its place in the queue if it waits.
func (s *server) cancel(m *nats.Msg) {
	reply := string(m.Data)
	// One step under s.mu: a worker that registers the request between
	// the lookup and the queue's keeping of the cancel would look for a
	// kept cancel too soon, and its handler would run to its deadline.
	s.mu.Lock()
	c := s.inflight[reply].cancel
	dropped := c == nil && s.q.cancel(reply, time.Now())
	s.mu.Unlock()
	if c != nil {
		c()
		return
	}
	if dropped {
		s.record(0, "cancelled while waiting for a worker")
	}
}

func (s *server) record(d time.Duration, errText string) {
	s.mu.Lock()
	s.stats.NumRequests++
	s.stats.ProcessingTime += d
	s.stats.AverageProcessingTime = s.stats.ProcessingTime / time.Duration(s.stats.NumRequests)
	if errText != "" {
		s.stats.NumErrors++
		s.stats.LastError = errText
	}
	s.mu.Unlock()
}

func (s *server) asyncErr(err error) { s.cfg.report(err) }

// report hands err to the ErrorHandler, or without one to the standard
// logger, as net/http's Server logs without an ErrorLog: ignored, a
// handler's panic and its stack were lost.
func (c *Config) report(err error) {
	if c.ErrorHandler != nil {
		c.ErrorHandler(err)
		return
	}
	log.Printf("consumer %s: %v", c.Name, err)
}

// withRunnerMetadata returns md plus the instance, node and version the
// runner gave this process, leaving keys the caller set alone; md is not
// modified.
func withRunnerMetadata(md map[string]string) map[string]string {
	out := make(map[string]string, len(md)+3)
	maps.Copy(out, md)
	for key, env := range map[string]string{"narun_instance": "NARUN_INSTANCE", "narun_node": "NARUN_NODE", "narun_version": "NARUN_APP_VERSION"} {
		if _, set := out[key]; !set {
			if v := os.Getenv(env); v != "" {
				out[key] = v
			}
		}
	}
	return out
}

// forClients says whether cert may authenticate a TLS client: one without
// extended key usages may be used for anything, as Go's verification takes
// it.
func forClients(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.ContainsFunc(cert.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	})
}

// certRefusedHint says what to set when the server refused this app's
// certificate (or its lack of one): by a TLS alert about certificates,
// or, with TLS 1.3, where a client learns of it only at its next write,
// by closing the connection right after the handshake, which says
// nothing of certificates. A timeout or a reset in the handshake is not
// it.
func certRefusedHint(err error, certNote string) string {
	var op *net.OpError
	refused := errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake")
	if errors.As(err, &op) && op.Op == "remote error" {
		refused = strings.Contains(op.Err.Error(), "certificate")
	}
	switch {
	case !refused:
		return ""
	case certNote != "":
		return " (the server refused this client in its TLS handshake: " + certNote + ")"
	}
	return " (the server refused this client in its TLS handshake: one that verifies clients wants a certificate its CA signed, NARUN_NATS_CERT and NARUN_NATS_KEY)"
}

// tlsFromEnv are the options of the TLS files the runner names in the
// environment. nats.go reads them at each connection, so a renewed
// certificate is taken at the next reconnect. certNote names what a
// server that verifies clients refuses in the certificate, for the hint
// when one does: its alert does not say why. Not an error: a server that
// does not verify clients never asks for it, and such an app runs.
func tlsFromEnv() (opts []nats.Option, certNote string, err error) {
	ca, cert, key, name := os.Getenv("NARUN_NATS_CA"), os.Getenv("NARUN_NATS_CERT"), os.Getenv("NARUN_NATS_KEY"), os.Getenv("NARUN_NATS_TLS_NAME")
	if ca != "" {
		// Read now as well: a wrong file is the app's configuration
		// error, not a server that cannot be reached, retried for ever.
		pem, err := os.ReadFile(ca)
		if err == nil && !x509.NewCertPool().AppendCertsFromPEM(pem) {
			err = errors.New("no PEM certificate in it")
		}
		if err != nil {
			return nil, "", fmt.Errorf("NARUN_NATS_CA %s: %w", ca, err)
		}
		opts = append(opts, nats.RootCAs(ca))
	}
	if (cert == "") != (key == "") {
		return nil, "", errors.New("NARUN_NATS_CERT and NARUN_NATS_KEY: set both, the certificate and its private key, or neither")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, "", fmt.Errorf("NARUN_NATS_CERT %s with NARUN_NATS_KEY %s: %w", cert, key, err)
		}
		leaf := pair.Leaf
		if leaf == nil {
			// GODEBUG=x509keypairleaf=0 leaves it unparsed.
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, "", fmt.Errorf("NARUN_NATS_CERT %s: %w", cert, err)
			}
		}
		if !forClients(leaf) {
			certNote = fmt.Sprintf("NARUN_NATS_CERT %s is not for clients: its extended key usage lacks clientAuth", cert)
		}
		opts = append(opts, nats.ClientCert(cert, key))
	}
	if name != "" {
		opts = append(opts, nats.Secure(&tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}))
	}
	return opts, certNote, nil
}
