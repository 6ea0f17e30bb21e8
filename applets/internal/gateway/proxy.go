package gateway

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// hopByHop headers describe one connection, not the message (RFC 9110 7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Transfer-Encoding", "Upgrade"}

// exchange is the per-request state, pooled: its fixed arrays back the
// header values of the request head so the hot path does not allocate them.
type exchange struct {
	vals   [13]string
	hdr    nats.Header // reused: cleared, never reallocated
	timer  *time.Timer // reused: stopped before going back to the pool
	msg    nats.Msg
	status int
	in     int64
	out    int64
	grpc   bool // the client speaks gRPC: errors go out as gRPC statuses
	// req is the request, whose RPC protocol (Connect, gRPC-Web) fail
	// reads only when the gateway answers itself: told on every request,
	// it cost the request path the lookups for an error that rarely comes.
	req *http.Request
	// timeout bounds the exchange: the route's, or a gRPC or Connect
	// client's deadline when that is shorter.
	timeout time.Duration
	// hasBody is set for a request with a body; bounded once proxy has
	// bounded the reads and writes of the exchange by the route's timeout
	// (until then fail bounds those of its answer).
	hasBody, bounded bool
	// fullDuplex is set once an HTTP/1 request's body is read in full
	// duplex, alongside the response (see closeIfBodyLeft).
	fullDuplex bool
	lost       <-chan struct{}
	// body lives here rather than on the stack: a duplex exchange hands it
	// to a goroutine, which would move it to the heap on every request.
	body bodySource
	// timed bounds the waits of body; a body of unknown length, read by a
	// goroutine that may outlive the exchange, gets one of its own.
	timed timedBody
	// frames follows the messages of a streamed gRPC-Web or Connect
	// response, so that an error of the gateway after its head can still
	// reach the client as its protocol's, between two messages.
	frames rpcFrames
}

func (ex *exchange) reset() {
	ex.vals = [13]string{}
	clear(ex.hdr)
	ex.msg = nats.Msg{}
	ex.status, ex.in, ex.out = 0, 0, 0
	ex.grpc, ex.lost, ex.timeout = false, nil, 0
	ex.req = nil
	ex.hasBody, ex.bounded, ex.fullDuplex = false, false, false
	ex.frames = rpcFrames{}
}

var exchangePool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &exchange{hdr: make(nats.Header, 24), timer: t}
}}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	liftForHTTP1(r)
	if r.RequestURI == "*" && r.Method == http.MethodOptions {
		serverOptions(w, r)
		return
	}
	start := time.Now()
	g.metrics.inflight.Add(1)
	ex := exchangePool.Get().(*exchange)
	ex.reset()
	rm := g.noRoute
	var rt *route
	defer func() {
		took := time.Since(start)
		if r.Method == http.MethodHead {
			// net/http discards what the gateway wrote (the service's
			// body, the gateway's error): no body went out.
			ex.out = 0
		}
		rm.observe(ex.status, took, ex.in, ex.out)
		// After the observation: a scrape that sees no request in flight
		// sees every finished one counted.
		g.metrics.inflight.Add(-1)
		if g.accessLog.Load() {
			g.logAccess(r, rm.label, rt, ex, took)
		}
		exchangePool.Put(ex)
		if r.ProtoMajor == 1 && (r.Close || listed(w.Header()["Connection"], "close")) {
			// Answered, and the connection closes next: net/http may
			// yet wait for the client to read the answer, which must
			// not hold a place of max_connections.
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				g.conns.closing(c)
			}
		}
	}()

	rid := r.Header.Get("X-Request-Id")
	// One the client's Connection header names is for the gateway alone
	// (RFC 9110 7.6.1), as every header it names: not the request's id.
	if conn := r.Header["Connection"]; len(conn) > 0 && listed(conn, "X-Request-Id") || !saneRequestID(rid) {
		rid = g.newRequestID()
	}
	ex.vals[0] = rid
	ex.grpc = isGRPC(r.Header["Content-Type"])
	ex.req = r
	ex.hasBody = r.Body != nil && r.Body != http.NoBody
	// Not backed by ex.vals: the server may write these headers after the
	// exchange went back to the pool.
	w.Header()["X-Request-Id"] = []string{rid}

	if r.ProtoMajor == 1 && r.ProtoMinor == 0 && !r.Close {
		// net/http drops an HTTP/1.0 request's Transfer-Encoding, unseen
		// here, and reads the body by Content-Length or as none: on a
		// kept-alive connection the rest of a chunked body would be read
		// as the client's next request, one that an intermediary before
		// the gateway took for body bytes. RFC 9112 6.1 has the
		// connection closed after such a request, Content-Length or not;
		// as no HTTP/1.0 request here shows whether it had one, each
		// closes (keep-alive is an opt-in extension in HTTP/1.0).
		w.Header().Set("Connection", "close")
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 && !r.Close {
		// net/http reads a chunked request that also has a
		// Content-Length as chunked and drops the length unseen: an
		// intermediary in front that went by the length took what
		// follows the chunked body for body bytes, and the gateway would
		// read it as the client's next request. RFC 9112 6.3 has the
		// connection closed after such a request; as no chunked request
		// here shows whether it had one, each closes.
		w.Header().Set("Connection", "close")
	}
	if host := r.Header["Host"]; host != nil && (len(host) != 1 || !strings.EqualFold(host[0], r.Host)) {
		// An HTTP/2 request's host field, which net/http leaves in the
		// header, naming another host than its :authority, by which the
		// request is routed: malformed (RFC 9113 8.3.1), and a service
		// that read the field would take the request for another host's.
		g.fail(w, ex, http.StatusBadRequest, "the host header names another host than :authority", rid)
		return
	}
	if r.ProtoMajor == 2 && !lengthAgrees(r.Header["Content-Length"], r.ContentLength, ex.hasBody) {
		// net/http's HTTP/2 server takes the first value for the body's
		// length and checks no other, nor any for a body the HEADERS
		// frame ends: the service read a Content-Length of 7 for an empty
		// body, or two lengths. Malformed (RFC 9113 8.1.1, RFC 9110 8.6),
		// as HTTP/1.1's server answers it itself, before the handler.
		// Not logged: a client's doing.
		g.refuse(w, r, ex, http.StatusBadRequest, "the content-length header does not give the body's length", rid)
		return
	}
	if r.RequestURI == "*" {
		// The asterisk form is for OPTIONS alone (RFC 9112 3.2.4), which
		// is answered above: routed, "*" reached the service as "/%2A",
		// a request for another resource than the client named. As
		// net/http's ServeMux answers it. Not logged: a client's doing.
		g.refuse(w, r, ex, http.StatusBadRequest, "the request target * is for OPTIONS only", rid)
		return
	}
	if r.Method == http.MethodConnect {
		// A CONNECT names a host to open a tunnel to, not a path: routed
		// as "/", a service's 200 would tell the client its tunnel is
		// open. Not logged, as a 404 is not: a client's doing.
		g.refuse(w, r, ex, http.StatusNotImplemented, "CONNECT is not supported: the gateway is not a forward proxy", rid)
		return
	}
	if expect := r.Header["Expect"]; len(expect) > 0 && expect[0] != "" && !listed(expect[:1], "100-continue") {
		// An expectation the gateway cannot meet (RFC 9110 10.1.1), judged
		// as net/http's HTTP/1 server judges it, by the first value, and
		// answers it before any handler; its HTTP/2 server passes it on,
		// to a service that would ignore it.
		g.refuse(w, r, ex, http.StatusExpectationFailed, "only the expectation 100-continue is supported", rid)
		return
	}
	host, ok := requestHost(r.Host)
	if !ok {
		// Routed by the name before it, the rest reached the service in
		// X-Forwarded-Host: "a.example.com:,evil.com" is "evil.com" to
		// Werkzeug's ProxyFix, which takes the last of its
		// comma-separated values, a host no route admitted. Not logged:
		// a client's doing.
		g.refuse(w, r, ex, http.StatusBadRequest, "the host's port is not a number", rid)
		return
	}
	p := cleanPath(r.URL.Path)
	var refused *route
	var allow []string
	rt, refused, allow = g.table.Load().match(host, p, r.Method)
	if rt == nil {
		if refused != nil {
			rm = refused.metrics
			w.Header().Set("Allow", strings.Join(allow, ", "))
			g.refuse(w, r, ex, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed here", rid)
			return
		}
		g.refuse(w, r, ex, http.StatusNotFound, "no route for "+p, rid)
		return
	}
	rm = rt.metrics
	if upgradesTo(r.Header["Upgrade"], "websocket") {
		// Forwarded as a plain GET, without its Upgrade header (hop by
		// hop), the handshake reached the service as a request that no
		// WebSocket library accepts, and the client got a puzzling
		// answer; nothing in the protocol can carry the connection after
		// it, so the gateway says so itself. Not logged, as a 404 is not:
		// a client's doing, which a browser may repeat at will.
		g.refuse(w, r, ex, http.StatusNotImplemented, "WebSocket is not supported: the gateway relays HTTP requests and responses, not upgraded connections", rid)
		return
	}
	// Taken before the connection is checked: a loss while the body is
	// read (which may take a while) must still end the exchange.
	ex.lost = g.mux.connectionLost()
	if !g.nc.IsConnected() {
		g.metrics.outcomes[outcomeError].Add(1)
		w.Header().Set("Retry-After", "1")
		closeUnread(w, r)
		g.failLogged(w, ex, rt, http.StatusServiceUnavailable, "not connected to NATS", "", rid)
		return
	}
	if r.ContentLength > rt.maxBody {
		closeUnread(w, r)
		g.failLogged(w, ex, rt, http.StatusRequestEntityTooLarge, bodyTooLarge(rt.maxBody).Error(), "", rid)
		return
	}
	ex.timeout = rt.timeout
	// A gRPC (gRPC-Web) or Connect client gives up at its deadline, which the
	// service must then know: a responder in another language reads only
	// Narun-Timeout.
	if d, ok := clientDeadline(r.Header, ex.grpc); ok && d < ex.timeout {
		ex.timeout = d
	}
	g.proxy(w, r, ex, rt, p, rid, start.Add(ex.timeout))
}

// serverOptions answers OPTIONS *, a question about the server rather
// than a resource, as net/http's own handler does (200, empty), which the
// servers leave to the gateway (DisableGeneralOptionsHandler): that one
// reads up to 4 KiB of a body with no deadline, and writes with none, so
// a client that announced a body and sent none, or sent request after
// request and read no answer, held its connection for ever. Like a 404,
// no service sees it and it is neither counted nor logged.
func serverOptions(w http.ResponseWriter, r *http.Request) {
	bound(w, r.Body != nil && r.Body != http.NoBody)
	w.Header().Set("Content-Length", "0")
}

// logAccess writes the access log line of a finished request. The route is
// label, the one the request is counted under in the metrics (a 405's is
// the route that refused the method); the service is named only for a
// request routed to it. The URI is the client's, query included, as nginx
// and Caddy log it.
func (g *Gateway) logAccess(r *http.Request, route string, rt *route, ex *exchange, took time.Duration) {
	service := ""
	if rt != nil {
		service = rt.cfg.Service
	}
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("uri", r.RequestURI),
		slog.String("proto", r.Proto),
		slog.Int("status", ex.status),
		slog.Int64("bytes_in", ex.in),
		slog.Int64("bytes_out", ex.out),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
		slog.String("route", route),
		slog.String("service", service),
		slog.String("client", r.RemoteAddr),
		slog.String("request_id", ex.vals[0]),
	)
}

// proxy runs the exchange with the service: request head, body pulls,
// response head and response frames, all before deadline.
func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, cleaned, rid string, deadline time.Time) {
	// The route timeout covers the whole exchange, the client's part too:
	// a client that stops sending its body, or stops reading the response,
	// would otherwise hold this handler and its buffers for as long as it
	// likes. Writes get answerTime more, so that the gateway's own answer
	// to a timeout still goes out. The read deadline is set only if there
	// is a body to read: once there is none left, HTTP/1's server reads
	// the connection in the background to notice the client hanging up,
	// and a deadline would end that read as if it had (net/http clears
	// the deadline when it starts that read).
	conn := deadlines(w)
	hasBody := ex.hasBody
	if conn != nil {
		_ = conn.SetWriteDeadline(deadline.Add(answerTime))
		if hasBody {
			_ = conn.SetReadDeadline(deadline)
		}
	}
	ex.bounded = true
	// The head is built in the pooled map rather than in r.Header: no map
	// allocation or growth per request.
	h := ex.hdr
	skip := r.Header["Connection"]
	for k, v := range r.Header {
		// Trailer is end to end (RFC 9110 6.6.2), but the gateway relays
		// no request trailers: the service would wait for ones that never
		// come.
		// An HTTP/2 request's host field, the :authority by now (see
		// ServeHTTP), travels as Narun-Host and X-Forwarded-Host alone.
		// The edge's own forwarding headers other than X-Forwarded-For,
		// which the gateway sets itself or not at all, are never the
		// client's (see isEdgeHeader).
		if consumer.IsReserved(k) || isNATSHeader(k) || isHopByHop(k) || k == "Trailer" || k == "Host" || isEdgeHeader(k) || (len(skip) > 0 && listed(skip, k)) {
			continue
		}
		if strings.IndexByte(k, '_') >= 0 && isGuardedTwin(k) {
			continue
		}
		h[k] = v
	}
	// TE is hop-by-hop, but its "trailers" says the client takes trailers,
	// which a service that sends them (gRPC's grpc-status) may want to
	// know: passed on as that value alone, as httputil.ReverseProxy passes
	// it, even when the client's Connection names TE, as HTTP asks of a
	// client that sends TE (RFC 9110 10.1.4).
	if te := r.Header["Te"]; len(te) > 0 && listed(te, "trailers") {
		h["Te"] = teTrailers
	}
	if cl := h["Content-Length"]; len(cl) > 1 {
		// The same length more than once (ServeHTTP refused others): a
		// service takes one length, as HTTP/1.1's server sends it.
		h["Content-Length"] = cl[:1:1]
	}
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	// A link-local client's zone names an interface of this host, which
	// means nothing to the service, and net.ParseIP refuses an address
	// with one; nginx leaves it out too. Narun-Remote-Addr keeps it.
	ip, _, _ = strings.Cut(ip, "%")
	// The client's value as copied above: one its Connection header names
	// is for the gateway alone (RFC 9110 7.6.1), and goes no further.
	ex.vals[1] = appendForwardedFor(h["X-Forwarded-For"], ip)
	escaped := r.URL.EscapedPath()
	if cleaned != r.URL.Path {
		escaped = (&url.URL{Path: cleaned}).EscapedPath()
	}
	if rt.cfg.StripPrefix {
		escaped = stripEscaped(escaped, rt)
	}
	// The prefix a service behind strip_prefix needs to build links the
	// client can follow, as Traefik's StripPrefix sends it. The gateway is
	// the edge, as for X-Forwarded-Host and -Proto: a client's value never
	// passes, or the client would choose where the service's links point.
	if rt.cfg.StripPrefix && rt.escPrefix != "" {
		ex.vals[11] = rt.escPrefix
		h["X-Forwarded-Prefix"] = ex.vals[11:12:12]
	} else {
		delete(h, "X-Forwarded-Prefix")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
		h[consumer.HeaderScheme] = httpsValue
	}
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		ex.vals[9] = r.Proto
		h[consumer.HeaderProto] = ex.vals[9:10:10]
	}
	ex.vals[2] = r.Host
	ex.vals[3] = scheme
	ex.vals[4] = r.Method
	ex.vals[5] = escaped
	ex.vals[6] = r.URL.RawQuery
	ex.vals[7] = r.RemoteAddr
	h["X-Request-Id"] = ex.vals[0:1:1]
	h["X-Forwarded-For"] = ex.vals[1:2:2]
	// An HTTP/1.0 client may send no Host: the service then gets none,
	// not an empty one, and never the client's own X-Forwarded-Host.
	if r.Host != "" {
		h["X-Forwarded-Host"] = ex.vals[2:3:3]
		h[consumer.HeaderHost] = ex.vals[2:3:3]
	} else {
		delete(h, "X-Forwarded-Host")
		delete(h, consumer.HeaderHost)
	}
	h["X-Forwarded-Proto"] = ex.vals[3:4:4]
	h[consumer.HeaderMethod] = ex.vals[4:5:5]
	h[consumer.HeaderPath] = ex.vals[5:6:6]
	// Empty for a bare "?": "/a?" is another URL than "/a" to a signature
	// or a cache key.
	if ex.vals[6] != "" || r.URL.ForceQuery {
		h[consumer.HeaderQuery] = ex.vals[6:7:7]
	}
	h[consumer.HeaderRemoteAddr] = ex.vals[7:8:8]
	h[consumer.HeaderTimeout] = ex.vals[8:9:9]

	chunk := g.chunkSize()
	if mp := int64(g.nc.MaxPayload()); hasBody && mp > 0 && (r.ContentLength < 0 || r.ContentLength+maxHeadSize > mp) {
		// The head's part of the body shares its message with the
		// headers, which a client may make larger than the room
		// chunkSize leaves them (a long Host travels twice, as
		// Narun-Host and X-Forwarded-Host; raw bytes in the path three
		// times as long, escaped): the body then starts smaller, rather
		// than the head fail as a message too large. A body that leaves
		// room for the largest head needs no measuring: most do.
		if room := int(mp) - natsHeaderSize(h) - headSlack; room < chunk {
			chunk = max(room, 1)
		}
	}
	body := &ex.body
	*body = bodySource{r: r.Body, limit: rt.maxBody, chunk: chunk, pool: &g.bigBufs, budget: g.bodies, ctx: r.Context(), deadline: deadline}
	defer body.release()
	// A gRPC stream over HTTP/2 (or a Connect one, framed alike) may be
	// bidirectional: its body is read a
	// message at a time, and by a goroutine of its own (pulls below), so
	// that waiting for the client's next message never holds up the reply
	// it waits for. For the same reason the head cannot wait for the
	// client's first message: the server may speak first, and the client
	// wait for it. It waits firstMessageWait at most, which a message sent
	// with the request's head (a unary call's) beats: that saves the
	// service a pull round trip. HTTP/2 only: there closing the body ends
	// a blocked read.
	duplex := r.ProtoMajor == 2 && r.ContentLength < 0 && (ex.grpc || isConnectStream(r.Header["Content-Type"]))
	body.messages = duplex
	// body_idle_timeout bounds each wait for the body, except a duplex
	// stream's: its client may rightly send nothing for a long time (it
	// waits for the server, or for its user), and only the route's
	// timeout bounds it. A body of unknown length is read by a goroutine
	// of its own, whose failure the exchange must tell from the client
	// gone (see timedBody) even without that bound; a body of known
	// length is read by the exchange itself, which needs no more than
	// the connection's deadline then.
	var timed *timedBody
	var bodyIn io.Reader = r.Body
	idle := time.Duration(g.bodyIdle.Load())
	if idle >= ex.timeout {
		idle = 0
	}
	if conn != nil && hasBody && !duplex && (idle > 0 || r.ContentLength < 0) {
		timed = &ex.timed
		if r.ContentLength < 0 {
			timed = new(timedBody)
		}
		timed.start(r.Body, conn, idle, deadline)
		bodyIn, body.r = timed, timed
		defer func() {
			timed.stop()
			if timed == &ex.timed {
				// Pooled: it must not keep the request.
				timed.r, timed.conn = nil, nil
			}
		}()
	}
	// body_idle_timeout bounds each write of the response too, but a
	// duplex stream's, for the reason above: its client may rightly read
	// nothing while it sends.
	send := sendBound{conn: conn, idle: idle, until: deadline.Add(answerTime)}
	if duplex {
		send.idle = 0
	}
	var first []byte
	var more bool
	// awaitContinue is set while the client waits for 100 Continue, which
	// net/http sends on the body's first read, the first pull's.
	var awaitContinue bool
	var pulls *puller
	var stream *bodyStream
	defer func() {
		if stream != nil {
			stream.stop()
		}
		if pulls != nil {
			// Closing an HTTP/2 body ends a blocked read; an HTTP/1 one
			// would wait for it.
			var closer io.Closer
			if r.ProtoMajor == 2 {
				closer = r.Body
			}
			pulls.stop(closer)
		}
		if stream != nil {
			stream.done()
		}
	}()
	var err error
	switch {
	case duplex:
		// The puller may wait for body memory when the exchange ends (the
		// service answered without pulling): its stop must end that wait,
		// or the reply's end would wait for the route's deadline. Deferred
		// after the stop, this runs before it.
		ctx, endBody := context.WithCancel(r.Context())
		defer endBody()
		body.ctx = ctx
		pulls = g.startPuller(body, &ex.in, rid)
		first, more, err = pulls.early(ex.timer, g.firstWait)
	case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody:
		// With Expect: 100-continue the client sends nothing before the
		// first read: the head does not wait for it, and the first pull
		// reads (see below for a body of known length).
		expect := expectsContinue(r.Header["Expect"])
		var held int64
		if held, err = g.bodies.take(r.Context(), deadline, int64(streamStart(chunk))); err != nil {
			break
		}
		stream = startStream(bodyIn, rt.maxBody, chunk, &g.bigBufs, expect, g.bodies, held)
		pulls = g.startStreamPuller(stream, &ex.in, rid)
		if expect {
			more, awaitContinue = true, true
		} else {
			first, more, err = stream.head(ex.timer, g.firstWait)
			// A head with no payload and no Narun-Body is a request
			// without a body, of length 0; an empty chunked body's
			// length was no more known than another's, and the service
			// learns it from the first pull's empty end.
			more = more || len(first) == 0
		}
	case r.ContentLength > int64(body.chunk) && expectsContinue(r.Header["Expect"]):
		// net/http asks the client for its body (100 Continue) on the
		// first read: left to the service's first pull, a large upload
		// that the service refuses unread is never sent, as when the
		// service is served by net/http itself. The head carries none of
		// it.
		body.cl, more = r.ContentLength, true
		awaitContinue = true
	default:
		if hasBody && r.ContentLength != 0 && expectsContinue(r.Header["Expect"]) {
			askForBody(w, r, &send)
		}
		first, more, err = body.first(r.ContentLength)
	}
	if err != nil {
		g.bodyError(w, r, ex, rt, err, rid)
		return
	}
	if more && r.ProtoMajor == 1 {
		// The service may start its response before it pulled the whole
		// body. By default HTTP/1's server would then discard the rest
		// (up to 256 KiB; the service's next pull fails), taking the
		// body's lock to do so, which a stream's read in progress holds.
		_ = http.NewResponseController(w).EnableFullDuplex()
		ex.fullDuplex = true
	}
	if more {
		ex.vals[10] = consumer.BodyStream
		h[consumer.HeaderBody] = ex.vals[10:11:11]
	}
	ex.in = int64(len(first))

	window, held := g.windows.take()
	defer g.windows.give(held)
	if window != maxWindow {
		ex.vals[12] = strconv.FormatInt(window, 10)
		h[consumer.HeaderWindow] = ex.vals[12:13:13]
	}
	wt := g.mux.open(window)
	defer g.mux.release(wt)
	lost := ex.lost
	// Set only now: reading the body's first part may have used some of
	// the time the service is told it has.
	ex.vals[8] = timeLeft(rt, ex.timeout, ex.timeout-time.Until(deadline))
	ex.msg = nats.Msg{Subject: rt.cfg.Service, Reply: wt.reply, Header: nats.Header(h), Data: first}
	if err := g.nc.PublishMsg(&ex.msg); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			// The headers alone do not fit in a message: the client's
			// doing, which a retry would not mend.
			g.failLogged(w, ex, rt, http.StatusRequestHeaderFieldsTooLarge, "request headers too large to send to the service", "publish to NATS: "+err.Error(), rid)
			return
		}
		g.metrics.outcomes[outcomeError].Add(1)
		w.Header().Set("Retry-After", "1")
		g.failLogged(w, ex, rt, http.StatusServiceUnavailable, "the request could not be sent to the service", "publish to NATS: "+err.Error(), rid)
		return
	}
	body.sent()
	if stream != nil {
		stream.release()
	}

	timer := ex.timer
	timer.Reset(time.Until(deadline))
	defer timer.Stop()
	done := r.Context().Done()
	cut := g.cut
	headSeen := false
	// flush reports a failed write, which http.Flusher would not: a part
	// that fits net/http's buffer fails only when flushed.
	var flush *http.ResponseController
	// The head's Connection header names hop-by-hop headers for the whole
	// response, trailers included. A slice of the head's own value: no
	// allocation, and nil when there is none.
	var headConn []string
	// declared is a streamed head's Content-Length, -1 for none: a body
	// that ends short of it must reach the client as aborted. Over HTTP/2
	// net/http would end the stream as if it were whole, a response HTTP
	// calls malformed (RFC 9113 8.1.1) and some clients take as complete.
	declared := int64(-1)
	// alive bounds the silence of a service that sent an alive frame, from
	// the end of what the gateway did with its last message: an instance
	// killed mid-request sends no end, and NATS says nothing of it.
	var alive *time.Timer
	var aliveC <-chan time.Time
	var aliveFor time.Duration
	for {
		if alive != nil {
			alive.Reset(aliveFor)
		}
		var m *nats.Msg
		var pullErr <-chan error
		if pulls != nil {
			pullErr = pulls.failed
		}
		// A response under way may still end within the wait for the
		// 503s; Close cuts it if not.
		var cutNow <-chan struct{}
		if !headSeen {
			cutNow = cut
		}
		select {
		case err := <-pullErr:
			g.cancel(rt, wt)
			if headSeen {
				g.bodyErrorAfterHead(w, r, ex, rt, err, rid)
				return
			}
			g.bodyError(w, r, ex, rt, err, rid)
			return
		case m = <-wt.ch:
			if !headSeen {
				// A service whose body read failed at the refusal may
				// answer (an empty 200 from a handler that ignores the
				// error) as fast as select gets here: the client, who
				// did not send the whole body, hears why instead.
				select {
				case err := <-pullErr:
					g.cancel(rt, wt)
					g.bodyError(w, r, ex, rt, err, rid)
					return
				default:
				}
			}
			if !headSeen && !time.Now().Before(deadline) {
				// A reply that came once the time was up is too late,
				// whether or not the timer has fired yet (the runtime
				// runs timers late under load) or select took the
				// reply of the two: otherwise a service's answer at its
				// own deadline, often an empty 200, would win the race.
				g.timedOut(w, r, ex, rt, wt, timed, false, rid)
				return
			}
		case <-done:
			g.cancel(rt, wt)
			if err := timed.failure(); err != nil {
				// Over HTTP/1 net/http cancels the request's context when
				// a read of its body fails: here the client is still
				// there, and must hear why.
				if headSeen {
					g.bodyErrorAfterHead(w, r, ex, rt, err, rid)
					return
				}
				g.bodyError(w, r, ex, rt, err, rid)
				return
			}
			if headSeen && !bodyAllowed(ex.status) {
				// A 204 or 304 is whole with its head: a client that
				// closes its connection then, as one without keep-alive
				// does, left after its response, not before it.
				g.metrics.outcomes[outcomeOK].Add(1)
				return
			}
			g.clientGone(w, r, ex, rt, headSeen, rid)
			return
		case <-cutNow:
			g.cancel(rt, wt)
			g.cutAtShutdown(w, r, ex, rt, false, rid)
			return
		case <-lost:
			// In a cluster the service may still be connected: nats.go
			// sends the cancel once the gateway is connected again.
			g.cancel(rt, wt)
			g.metrics.outcomes[outcomeError].Add(1)
			if headSeen {
				g.abortOrStatus(w, r, ex, rt, http.StatusBadGateway, "connection to NATS lost", rid, "connection to NATS lost")
				return
			}
			g.failLogged(w, ex, rt, http.StatusBadGateway, "connection to NATS lost before the reply", "", rid)
			return
		case <-timer.C:
			g.timedOut(w, r, ex, rt, wt, timed, headSeen, rid)
			return
		case <-aliveC:
			g.cancel(rt, wt)
			g.metrics.outcomes[outcomeError].Add(1)
			why := "the service stopped answering: nothing from it for " + aliveFor.String() + " after it said it was still working"
			if headSeen {
				g.abortOrStatus(w, r, ex, rt, http.StatusBadGateway, why, rid, why)
				return
			}
			g.failLogged(w, ex, rt, http.StatusBadGateway, why, "", rid)
			return
		}
		if wt.overflow.Load() {
			// m is not written: answered with cancel, as release
			// answers the frames still queued behind it.
			g.mux.over(m)
			g.protocolError(w, r, ex, rt, wt, headSeen, "service sent more messages than flow control allows", rid)
			return
		}
		if _, bad := m.Header[undecodableKey]; bad {
			g.protocolError(w, r, ex, rt, wt, headSeen, "header block that does not decode", rid)
			return
		}
		meta := scanMeta(m.Header)
		if meta.ambiguous {
			g.protocolError(w, r, ex, rt, wt, headSeen, "Narun-Frame, Narun-Status or Narun-Body with two different values", rid)
			return
		}
		switch meta.frame {
		case "":
			if headSeen {
				g.protocolError(w, r, ex, rt, wt, headSeen, "second response head", rid)
				return
			}
			hd, err := decodeHead(m, meta)
			if err != nil {
				g.protocolError(w, r, ex, rt, wt, false, err.Error(), rid)
				return
			}
			if hd.noResponders {
				g.metrics.outcomes[outcomeNoResponders].Add(1)
				w.Header().Set("Retry-After", "1")
				g.failLogged(w, ex, rt, http.StatusServiceUnavailable, "no instance of the service is running", "no responders", rid)
				return
			}
			status := hd.status
			if hd.errMsg != "" {
				g.metrics.outcomes[outcomeOK].Add(1)
				g.fail(w, ex, status, "service error: "+hd.errMsg, rid)
				return
			}
			if meta.badField != "" {
				// Checked before any header is copied: the 502 must not
				// carry the service's headers, the bad one among them.
				g.protocolError(w, r, ex, rt, wt, false, "header "+strconv.Quote(meta.badField)+" has a control character", rid)
				return
			}
			if hd.stream && awaitContinue && r.Method != http.MethodHead {
				// The service may pull after its head, and HTTP allows
				// no 100 Continue after the final head: asked now, or
				// the client never sends its body (curl and Go's client
				// send it unasked after a second; others wait for ever).
				// Written before the head's headers are copied: net/http
				// sends those in w with a 1xx. A body nobody pulls is not
				// read: over HTTP/1.1 net/http's head says Connection:
				// close for a body not read to its end, and over HTTP/2
				// the stream ends with the response. Bound as the head
				// that follows it is, which arms again.
				send.arm()
				w.WriteHeader(http.StatusContinue)
				awaitContinue = false
			}
			conn := copyReplyHeaders(w.Header(), m.Header)
			ex.closeIfBodyLeft(w)
			if !bodyAllowed(status) {
				// No body follows, whatever length the service gives (HTTP
				// allows a 304 the length of GET's): net/http's HTTP/2
				// server sends it as is, and its client waits for the body.
				delete(w.Header(), "Content-Length")
			}
			headSeen = true
			ex.status = status
			// Not disarmed once the response is whole: net/http writes
			// what is left of it after proxy returns.
			send.arm()
			if !hd.stream {
				g.metrics.outcomes[outcomeOK].Add(1)
				if !bodyAllowed(status) {
					w.WriteHeader(status)
					return
				}
				// The answer to HEAD has no body but tells the length
				// of the one GET would get: the service's to say, and
				// when it says nothing, nothing is said (0 would be a
				// claim about GET).
				switch {
				case r.Method != http.MethodHead || len(m.Data) > 0:
					w.Header()["Content-Length"] = []string{strconv.Itoa(len(m.Data))}
				case !validLength(w.Header()["Content-Length"]):
					delete(w.Header(), "Content-Length")
				}
				w.WriteHeader(status)
				n, _ := send.write(w, m.Data)
				ex.out += int64(n)
				return
			}
			// net/http sends every value of a handler's Content-Length,
			// and two make a response no client reads; one that is no
			// number it drops, saying so in the log. Without it the body
			// goes chunked.
			if cl, ok := w.Header()["Content-Length"]; ok {
				if !validLength(cl) {
					delete(w.Header(), "Content-Length")
				} else if bodyAllowed(status) {
					declared, _ = strconv.ParseInt(cl[0], 10, 64)
				}
			}
			// Over HTTP/1 trailers need a chunked body, which HTTP/1.0 and a
			// head with Content-Length rule out.
			if r.ProtoAtLeast(1, 1) && bodyAllowed(status) && (r.ProtoMajor > 1 || !validLength(w.Header()["Content-Length"])) {
				announceTrailers(w.Header(), m.Header, conn)
			}
			if r.Method == http.MethodHead {
				// A HEAD response has no body: the stream is not read,
				// and the service hears it can stop.
				g.cancel(rt, wt)
				g.metrics.outcomes[outcomeOK].Add(1)
				w.WriteHeader(status)
				return
			}
			headConn = conn
			if !ex.grpc && bodyAllowed(status) && declared < 0 {
				ex.frames.follow(r)
			}
			w.WriteHeader(status)
			if declared >= 0 && int64(len(m.Data)) > declared {
				// Refused whole, as a frame that would pass the length
				// is: net/http's HTTP/1 server refuses the write, which
				// would leave the exchange waiting for frames, and its
				// HTTP/2 one sends it, past the length, when it sends the
				// head.
				g.protocolError(w, r, ex, rt, wt, true, "body does not match its Content-Length "+strconv.FormatInt(declared, 10), rid)
				return
			}
			var n int
			if bodyAllowed(status) {
				// A 204's or 304's payload is dropped, as its frames'
				// are (below): net/http refuses the write.
				n, err = send.write(w, m.Data)
				ex.frames.feed(m.Data[:n])
			}
			ex.out += int64(n)
			flush = http.NewResponseController(w)
			if err == nil {
				err = flush.Flush()
			}
			send.disarm()
			if err != nil {
				// The client is gone, or takes nothing: the service must
				// hear it before it sends more.
				g.cancel(rt, wt)
				g.clientGone(w, r, ex, rt, true, rid)
				return
			}
		case consumer.FrameInterim:
			// After the head the client has its final status. One with a
			// control character is dropped, not the exchange failed: an
			// interim response is advice the client can do without, as
			// for the interim frames interim drops.
			if !headSeen && meta.badField == "" {
				interim(w, r, &send, m.Header, meta.status)
			}
		case consumer.FramePull:
			if m.Reply == "" {
				continue
			}
			if awaitContinue && !headSeen {
				askForBody(w, r, &send)
			}
			awaitContinue = false
			if pulls != nil {
				select {
				case pulls.replies <- m.Reply:
				default:
					g.protocolError(w, r, ex, rt, wt, headSeen, "pulls sent before earlier ones were answered", rid)
					return
				}
				continue
			}
			chunk, last, err := body.next()
			if err != nil {
				g.cancel(rt, wt)
				g.refusePull(m.Reply)
				if headSeen {
					g.bodyErrorAfterHead(w, r, ex, rt, err, rid)
					return
				}
				g.bodyError(w, r, ex, rt, err, rid)
				return
			}
			g.sendChunk(m.Reply, chunk, last, &ex.in, rid)
		case consumer.FrameData, consumer.FrameEnd:
			if !headSeen {
				g.protocolError(w, r, ex, rt, wt, false, "body frame before the response head", rid)
				return
			}
			if meta.frame == consumer.FrameEnd && (meta.errCode != "" || meta.errText != "") {
				// The status is already sent: cutting the connection is the
				// only way left to tell the client the body is incomplete,
				// but for gRPC, whose status is in the trailers.
				g.metrics.outcomes[outcomeOK].Add(1)
				hd, _ := decodeHead(m, meta)
				g.abortOrStatus(w, r, ex, rt, hd.status, "service error: "+hd.errMsg, rid, "service error after the head: "+hd.errMsg)
				return
			}
			// A 204 or 304 is whole with its head. What a responder that
			// streams every response alike sends after it is dropped and
			// acked, as its payload in the head is: the response went out
			// as the service meant it, and the write would fail
			// (ErrBodyNotAllowed) and answer cancel, as to a client gone.
			bodiless := !bodyAllowed(ex.status)
			if meta.frame == consumer.FrameEnd && !bodiless && meta.badField != "" {
				// Its trailers cannot go out, and without them the
				// response is not whole: cut before the last part, as
				// for an end frame with an error.
				g.protocolError(w, r, ex, rt, wt, true, "trailer "+strconv.Quote(meta.badField)+" has a control character", rid)
				return
			}
			var err error
			switch {
			case bodiless:
			case declared >= 0 && ex.out+int64(len(m.Data)) > declared:
				// Refused whole, as net/http's HTTP/1 server refuses it
				// (its HTTP/2 one says so in an error of its own).
				err = http.ErrContentLength
			default:
				send.arm()
				var n int
				n, err = send.write(w, m.Data)
				ex.frames.feed(m.Data[:n])
				ex.out += int64(n)
			}
			if declared >= 0 && ex.out < declared && (meta.frame == consumer.FrameEnd || errors.Is(err, http.ErrContentLength)) {
				// The body ends short of its length, or the frame that
				// would pass it was not written: no whole response can
				// reach the client any more.
				if meta.frame == consumer.FrameData && m.Reply != "" {
					_ = g.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameCancel}}})
				}
				g.protocolError(w, r, ex, rt, wt, true, "body does not match its Content-Length "+strconv.FormatInt(declared, 10), rid)
				return
			}
			if meta.frame == consumer.FrameEnd {
				g.metrics.outcomes[outcomeOK].Add(1)
				if !bodiless {
					setTrailers(w.Header(), m.Header, headConn)
				}
				return
			}
			if err == nil && !bodiless {
				// Before the ack: a frame the client did not get is
				// answered with cancel, and the exchange ends now, not
				// when the next frame finds the client gone.
				err = flush.Flush()
			}
			send.disarm()
			if m.Reply != "" {
				wt.acked(m)
				kind := consumer.FrameAck
				if err != nil {
					kind = consumer.FrameCancel
				}
				_ = g.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {kind}}})
			}
			if err != nil {
				g.cancel(rt, wt)
				g.clientGone(w, r, ex, rt, headSeen, rid)
				return
			}
		case consumer.FrameAlive:
			if d, ok := aliveTimeout(m.Header); ok {
				aliveFor = d
				if alive == nil {
					alive = time.NewTimer(d)
					aliveC = alive.C
				}
			}
		default:
			// Unknown frames are ignored so later protocol additions do not
			// break older gateways.
		}
	}
}

// minAliveTimeout bounds the silence an alive frame may ask for from
// below: the gateway's own scheduling under load must not end exchanges.
const minAliveTimeout = time.Second

// aliveTimeout reads an alive frame's HeaderAliveTimeout; one without a
// number of milliseconds is ignored, as an unknown frame is. The name is
// matched in any case and the value without the spaces after it, as
// scanMeta reads the other protocol headers: a responder in another
// language may lower-case it, and its frame, ignored, left a killed
// instance waited for until the route's timeout.
func aliveTimeout(h nats.Header) (time.Duration, bool) {
	v := h[consumer.HeaderAliveTimeout]
	if v == nil {
		for k, vs := range h {
			if strings.EqualFold(k, consumer.HeaderAliveTimeout) {
				v = append(v, vs...)
			}
		}
	}
	if len(v) != 1 {
		return 0, false
	}
	ms, err := strconv.ParseInt(trimOWS(v[0]), 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0, false
	}
	return max(time.Duration(ms)*time.Millisecond, minAliveTimeout), true
}

// interim relays an interim (1xx) response to the client, as net/http
// writes a handler's: with the headers in w at the time, which are then
// cleared, since the final head brings its own. 100 Continue is the
// gateway's own to send (Expect), 101 would switch protocols, and HTTP
// forbids sending any to an HTTP/1.0 client (RFC 9110 15.2). The write is
// bounded by send, as the response's others are: net/http reports no
// failure of it, but ends the request's context.
func interim(w http.ResponseWriter, r *http.Request, send *sendBound, src nats.Header, status string) {
	code, err := strconv.Atoi(status)
	if err != nil || code < 102 || code > 199 || !r.ProtoAtLeast(1, 1) {
		return
	}
	h := w.Header()
	rid := h["X-Request-Id"]
	// The gateway's Connection: close (a chunked request's, whose
	// connection must not serve what follows its body) is for the final
	// response, and must outlive the clearing below. A service's
	// Connection header is never copied, so this one is the gateway's.
	closing := h["Connection"]
	copyReplyHeaders(h, src)
	send.arm()
	w.WriteHeader(code)
	send.disarm()
	clear(h)
	h["X-Request-Id"] = rid
	if closing != nil {
		h["Connection"] = closing
	}
}

// askForBody sends the 100 Continue that a client which sent Expect:
// 100-continue waits for before its body, bounded by send as the
// response's writes are. net/http would send it on the body's first read,
// bounded by the exchange's deadline only, and over HTTP/1 with that read
// waiting behind it: a client that read nothing held the exchange, and the
// service that pulled, until the route's timeout. Sent by the handler, it
// is the only one: net/http's HTTP/1 server sends its own no more once the
// handler wrote a 100, its HTTP/2 server none once the stream has a head.
// HTTP forbids it to an HTTP/1.0 client (RFC 9110 15.2).
func askForBody(w http.ResponseWriter, r *http.Request, send *sendBound) {
	if !r.ProtoAtLeast(1, 1) {
		return
	}
	send.arm()
	w.WriteHeader(http.StatusContinue)
	send.disarm()
}

// timedOut ends an exchange whose timeout is over.
func (g *Gateway) timedOut(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, wt *waiter, timed *timedBody, headSeen bool, rid string) {
	g.cancel(rt, wt)
	if err := timed.failure(); err != nil && !headSeen {
		// The client had not sent the whole body either.
		g.bodyError(w, r, ex, rt, err, rid)
		return
	}
	g.metrics.outcomes[outcomeTimeout].Add(1)
	if headSeen {
		g.abortOrStatus(w, r, ex, rt, http.StatusGatewayTimeout, "not finished within "+ex.timeout.String(), rid, "not finished within "+timeoutOrigin(rt, ex)+ex.timeout.String())
		return
	}
	g.failLogged(w, ex, rt, http.StatusGatewayTimeout, "no reply within "+ex.timeout.String(), "no reply within "+timeoutOrigin(rt, ex)+ex.timeout.String(), rid)
}

// timeoutOrigin names, for the log, whose timeout ended an exchange.
func timeoutOrigin(rt *route, ex *exchange) string {
	if ex.timeout < rt.timeout {
		return "the client's deadline of "
	}
	return "the route's timeout of "
}

// timeLeft is the Narun-Timeout of a head published elapsed after the
// request head came in: the exchange's timeout less elapsed, both in whole
// milliseconds, and never negative (the consumer rejects that). Most heads
// go out within the first millisecond with the route's timeout, and get the
// string formatted once per route rather than one allocated per request.
func timeLeft(rt *route, timeout, elapsed time.Duration) string {
	ms := elapsed.Milliseconds()
	if ms == 0 && timeout == rt.timeout {
		return rt.timeoutMS
	}
	return strconv.FormatInt(max(timeout.Milliseconds()-ms, 0), 10)
}

// puller answers a service's pulls of a duplex request body on a
// goroutine of its own; the protocol allows one pull in flight.
type puller struct {
	replies chan string // reply subjects of pulls
	failed  chan error  // the body could not be read; the exchange is over
	// first offers the body's first chunk to the request head, unbuffered:
	// either the head takes it or the first pull gets it, never both.
	first chan chunk
	done  chan struct{}
}

type chunk struct {
	data []byte
	last bool
	err  error
}

// firstMessageWait is how long a duplex request's head waits for the
// client's first message. A unary call's message is in the frames that
// follow its headers and arrives well within it; a client that waits for
// the server to speak delays the head by this much, once.
const firstMessageWait = time.Millisecond

func (g *Gateway) startPuller(body *bodySource, in *int64, rid string) *puller {
	p := &puller{replies: make(chan string, 1), failed: make(chan error, 1), first: make(chan chunk), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		data, last, err := body.next()
		select {
		case p.first <- chunk{data, last, err}:
		case reply, ok := <-p.replies:
			if !ok || !g.answerPull(p, reply, data, last, err, in, rid) {
				return
			}
		}
		for reply := range p.replies {
			data, last, err := body.next()
			if !g.answerPull(p, reply, data, last, err, in, rid) {
				return
			}
		}
	}()
	return p
}

// early returns the body's first chunk if the client sends it within
// wait, else nothing and more: the first pull gets it then. The
// exchange's timer is free until the head is published.
func (p *puller) early(timer *time.Timer, wait time.Duration) (data []byte, more bool, err error) {
	timer.Reset(wait)
	defer timer.Stop()
	select {
	case c := <-p.first:
		return c.data, !c.last, c.err
	case <-timer.C:
		return nil, true, nil
	}
}

// startStreamPuller answers a service's pulls of a body of unknown length
// with what arrived since the last one.
func (g *Gateway) startStreamPuller(s *bodyStream, in *int64, rid string) *puller {
	p := &puller{replies: make(chan string, 1), failed: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for reply := range p.replies {
			data, last, err := s.next()
			if !g.answerPull(p, reply, data, last, err, in, rid) {
				return
			}
			s.release()
		}
	}()
	return p
}

// answerPull sends the chunk read for a pull; false ends the puller.
func (g *Gateway) answerPull(p *puller, reply string, data []byte, last bool, err error, in *int64, rid string) bool {
	if err != nil {
		// Failed before the service hears of it: its answer to the
		// refusal must find the failure already there (proxy).
		p.failed <- err
		g.refusePull(reply)
		return false
	}
	g.sendChunk(reply, data, last, in, rid)
	return true
}

// sendChunk answers a pull with the next chunk of the request body.
func (g *Gateway) sendChunk(reply string, data []byte, last bool, in *int64, rid string) {
	*in += int64(len(data))
	kind := consumer.FrameData
	if last {
		kind = consumer.FrameEnd
	}
	if err := g.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{consumer.HeaderFrame: {kind}}, Data: data}); err != nil {
		g.log.Debug("send request body chunk", "request_id", rid, "err", err)
	}
}

// refusePull tells the service that pulled that the body will not come.
func (g *Gateway) refusePull(reply string) {
	_ = g.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameCancel}}})
}

// stop ends the puller before the exchange releases the body's buffers:
// closing an HTTP/2 request body ends a read blocked in it.
func (p *puller) stop(body io.Closer) {
	close(p.replies)
	if body != nil {
		_ = body.Close()
	}
	<-p.done
}

// answerTime is how long past the exchange deadline the gateway may take
// to write its own answer to a timeout: a short error message, which a
// client that does not read must not be able to hold up for long.
const answerTime = 2 * time.Second

// sendPiece is the most of a response the gateway writes to the client
// under one bound of body_idle_timeout: a large body that a slow client
// takes steadily is not cut for taking longer than that in all, while one
// that takes less than this much in that time is taken for stalled.
const sendPiece = 16 << 10

// sendBound bounds each write of the response to the client by
// body_idle_timeout (idle), within the exchange's own bound on writes
// (until), as nginx's send_timeout does (60 s there): a client that takes
// nothing of the response, an SSE feed's say, would otherwise hold the
// exchange, its connection or stream, and the service's stream until the
// route's timeout, an hour for a route made for feeds. Between writes,
// while the gateway waits for the service, the exchange's bound is back:
// a feed that is quiet for a while has no stalled client, and over HTTP/2
// a stream's write deadline resets the stream when it passes, whether or
// not a write waits.
type sendBound struct {
	conn  deadliner     // nil: none to bound (a test recorder)
	idle  time.Duration // 0: the exchange's bound only
	until time.Time
	armed bool
}

// arm bounds the writes that follow by idle from now.
func (s *sendBound) arm() {
	if s.conn == nil || s.idle <= 0 {
		return
	}
	t := time.Now().Add(s.idle)
	if t.After(s.until) {
		t = s.until
	}
	_ = s.conn.SetWriteDeadline(t)
	s.armed = true
}

// disarm gives the writes the exchange's bound back.
func (s *sendBound) disarm() {
	if s.armed {
		_ = s.conn.SetWriteDeadline(s.until)
		s.armed = false
	}
}

// write writes p to w, armed, a piece of sendPiece bytes at a time, each
// bounded by idle from when it starts.
func (s *sendBound) write(w io.Writer, p []byte) (int, error) {
	n := 0
	for s.armed && len(p) > sendPiece {
		m, err := w.Write(p[:sendPiece])
		n += m
		if err != nil {
			return n, err
		}
		p = p[sendPiece:]
		s.arm()
	}
	m, err := w.Write(p)
	return n + m, err
}

// deadliner sets the deadlines of a request's connection (HTTP/1) or
// stream (HTTP/2).
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// deadlines finds the deadliner of w through wrappers, as
// http.ResponseController does; nil if there is none (a test recorder).
// ResponseController itself would allocate an error on every call there.
func deadlines(w http.ResponseWriter) deadliner {
	for {
		switch t := w.(type) {
		case deadliner:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// cancel tells the service that nobody waits for this exchange any more.
func (g *Gateway) cancel(rt *route, wt *waiter) {
	if err := g.nc.Publish(consumer.CancelSubject(rt.cfg.Service), []byte(wt.reply)); err != nil {
		g.log.Debug("publish cancel", "service", rt.cfg.Service, "err", err)
	}
}

func (g *Gateway) protocolError(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, wt *waiter, headSeen bool, why, rid string) {
	g.metrics.outcomes[outcomeMalformed].Add(1)
	g.cancel(rt, wt)
	if headSeen {
		g.abortOrStatus(w, r, ex, rt, http.StatusBadGateway, "malformed reply: "+why, rid, "malformed reply: "+why)
		return
	}
	g.failLogged(w, ex, rt, http.StatusBadGateway, "malformed reply: "+why, "", rid)
}

// bodyError answers a request whose body could not be read to its end.
// Over HTTP/1 what is left of it on the connection cannot be told from a
// next request, so the connection closes after the answer: net/http sees
// to that for a body it could not finish reading itself, but not for one
// read in full duplex whose last read failed.
func (g *Gateway) bodyError(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, err error, rid string) {
	if errors.Is(err, errBodyBudget) && r.Context().Err() != nil {
		// The client left (its stream reset) while its body waited for
		// memory: nobody reads an answer, and the failure is not the
		// gateway's to count or log. Not for a failed read: net/http ends
		// the request's context for those too.
		g.clientLeft(ex)
		return
	}
	if g.cutting() {
		// The read failed because Run closed the connection, not for
		// anything the client sent.
		g.cutAtShutdown(w, r, ex, rt, false, rid)
		return
	}
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	code, msg := bodyErrorStatus(ex.timeout, err)
	detail := ""
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
		detail = err.Error()
	}
	g.failLogged(w, ex, rt, code, msg, detail, rid)
}

// clientLeft counts an exchange whose client went away before its answer.
// clientGone ends an exchange whose client went away, its context ended
// or a write to it failed: a client gone (clientLeft), unless Run's
// shutdown closed the connection, which is the gateway's doing.
func (g *Gateway) clientGone(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, headSeen bool, rid string) {
	if g.cutting() {
		g.cutAtShutdown(w, r, ex, rt, headSeen, rid)
		return
	}
	g.clientLeft(ex)
}

func (g *Gateway) clientLeft(ex *exchange) {
	g.metrics.outcomes[outcomeCancelled].Add(1)
	ex.status = 499 // nginx's "client closed request", for the metrics only
}

// cutAtShutdown ends an exchange whose connection Run closed at the end of
// shutdown_timeout: the gateway's failure, counted and logged as a 503
// with its request id, not as a client gone (499). The answer is written
// to a closed connection: the client sees the connection end.
func (g *Gateway) cutAtShutdown(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, headSeen bool, rid string) {
	g.metrics.outcomes[outcomeCancelled].Add(1)
	if headSeen {
		g.abort(r, ex, rt, http.StatusServiceUnavailable, rid, g.cutWhy)
	}
	g.failLogged(w, ex, rt, http.StatusServiceUnavailable, g.cutWhy, "", rid)
}

// bodyErrorStatus is the status and message of a request body that could
// not be read to its end.
func bodyErrorStatus(timeout time.Duration, err error) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, errBodyStalled):
		return http.StatusRequestTimeout, err.Error()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, "request body not received within " + timeout.String()
	case errors.Is(err, errBodyBudget):
		return http.StatusServiceUnavailable, "the gateway has no room for the request body now; try again"
	}
	return http.StatusBadRequest, "read request body: " + err.Error()
}

// bodyErrorAfterHead ends a response whose request body failed after the
// response head went out.
func (g *Gateway) bodyErrorAfterHead(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, err error, rid string) {
	if r.ProtoMajor == 2 && r.Context().Err() != nil {
		// The client reset its stream (a cancelled call): it reads no
		// status, and left of its own accord. Not over HTTP/1, where
		// net/http ends the context of a request whose body read failed
		// with the client still there.
		g.clientLeft(ex)
		panic(http.ErrAbortHandler)
	}
	if g.cutting() {
		g.cutAtShutdown(w, r, ex, rt, true, rid)
		return
	}
	code, msg := bodyErrorStatus(ex.timeout, err)
	g.abortOrStatus(w, r, ex, rt, code, msg, rid, msg)
}

// abort cuts a response whose head is out, the only way left to tell the
// client it is incomplete, and logs why: a warning for code 5xx, info for
// what the client did. code, what the gateway would have answered had the
// head not gone out, is what the metrics and the access log count, not
// the head's status: a response cut short is no success.
func (g *Gateway) abort(r *http.Request, ex *exchange, rt *route, code int, rid, why string) {
	ex.status = code
	level := levelOf(code)
	g.log.LogAttrs(r.Context(), level, "response aborted",
		slog.Int("status", code),
		slog.String("reason", why),
		slog.String("route", rt.label),
		slog.String("service", rt.cfg.Service),
		slog.String("request_id", rid),
	)
	panic(http.ErrAbortHandler)
}

// abortOrStatus ends a response whose head is out, and does not return
// unless the response is gRPC's over HTTP/2: there the status goes in the
// trailers, which the client reads after the messages whatever came
// before, so the client learns the gateway's reason (DEADLINE_EXCEEDED for
// the route's timeout, with the request id) where a reset stream would
// tell it only INTERNAL. The caller then returns, and the trailers go out
// with the end of the stream.
func (g *Gateway) abortOrStatus(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, code int, msg, rid, why string) {
	if ex.frames.between() {
		g.endRPCStream(w, r, ex, rt, code, msg, rid, why)
		return
	}
	if !ex.grpc || r.ProtoMajor != 2 {
		g.abort(r, ex, rt, code, rid, why)
	}
	level := levelOf(code)
	g.log.Log(r.Context(), level, "response ended with a gRPC status", "reason", why, "status", code, "route", rt.label, "service", rt.cfg.Service, "request_id", rid)
	ex.status = code
	// The trailers wait behind what the client has not read yet: it gets
	// the time of the gateway's own answers for that, as a reset would
	// not have waited at all.
	if conn := deadlines(w); conn != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(answerTime))
	}
	h := w.Header()
	h[http.TrailerPrefix+"Grpc-Status"] = []string{strconv.Itoa(grpcCode(code))}
	h[http.TrailerPrefix+"Grpc-Message"] = []string{grpcPercentEncode(msg + " (request id " + rid + ")")}
}

// endRPCStream ends a gRPC-Web or Connect response whose head is out, and
// whose body is between two messages, with the message that carries the
// gateway's error in its protocol, as gRPC's trailers do: a cut stream
// reaches such a client as INTERNAL, which says neither that the deadline
// passed nor that a retry may help.
func (g *Gateway) endRPCStream(w http.ResponseWriter, r *http.Request, ex *exchange, rt *route, code int, msg, rid, why string) {
	g.log.Log(r.Context(), levelOf(code), "response ended with an error message of its protocol", "reason", why, "status", code, "route", rt.label, "service", rt.cfg.Service, "request_id", rid)
	ex.status = code
	if conn := deadlines(w); conn != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(answerTime))
	}
	n, err := w.Write(rpcEndMessage(ex.frames.kind, code, msg+" (request id "+rid+")"))
	ex.out += int64(n)
	if err == nil {
		err = http.NewResponseController(w).Flush()
	}
	if err != nil {
		// The client is gone or does not read: nothing reaches it.
		panic(http.ErrAbortHandler)
	}
}

// failLogged answers with an error the gateway made for a routed request,
// and logs it with what the client is not told (the service, and detail
// when there is more to say), so that the request id a user quotes leads
// to the cause: a warning for 5xx, the gateway's or the service's side,
// info for what the client did wrong.
func (g *Gateway) failLogged(w http.ResponseWriter, ex *exchange, rt *route, code int, msg, detail, rid string) {
	level := levelOf(code)
	g.fails.record(level, code, cmp.Or(detail, msg), rt.label, rt.cfg.Service, rid)
	g.fail(w, ex, code, msg, rid)
}

// refuse is fail for a request answered before its body is read.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, ex *exchange, code int, msg, rid string) {
	closeUnread(w, r)
	g.fail(w, ex, code, msg, rid)
}

// closeUnread closes the HTTP/1 connection of a request answered before
// its body was read, when net/http could not keep it: it reads up to
// 256 KiB of a body left unread to keep the connection, and closes after
// a larger one, or one of unknown length, unseen by the gateway, whose
// place at max_connections it would hold while the client reads the
// answer. Said in the answer, the close lets connLimit free that place.
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && (r.ContentLength > maxDiscard || r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody) {
		w.Header().Set("Connection", "close")
	}
}

// maxDiscard is how much of a body left unread net/http's server reads
// to keep the connection (maxPostHandlerReadBytes).
const maxDiscard = 256 << 10

// closeIfBodyLeft says Connection: close in a final answer that goes out
// with more than maxDiscard of an HTTP/1 body of known length unread, as
// a service's refusal of an upload does (413, 401). Outside full duplex
// net/http says it itself; in full duplex it says nothing, then closes
// the connection after the answer all the same, unless the rest was read
// meanwhile: a client that read a keep-alive answer sent its next request
// on a connection about to close. A service that pulls the rest after its
// head loses the connection's reuse, as one served by net/http without
// full duplex does.
func (ex *exchange) closeIfBodyLeft(w http.ResponseWriter) {
	if ex.fullDuplex && ex.body.unread() > maxDiscard {
		w.Header().Set("Connection", "close")
	}
}

// fail writes an error response that names the request id, so a user can
// quote it and an operator can find it in the logs.
func (g *Gateway) fail(w http.ResponseWriter, ex *exchange, code int, msg, rid string) {
	ex.status = code
	if !ex.bounded {
		bound(w, ex.hasBody)
	}
	ex.closeIfBodyLeft(w)
	h := w.Header()
	if ex.grpc {
		writeGRPCStatus(h, code, msg+" (request id "+rid+")")
		w.WriteHeader(http.StatusOK)
		return
	}
	if kind, contentType := rpcOf(ex.req); kind != rpcNone {
		ex.out += writeRPCError(w, kind, contentType, code, msg+" (request id "+rid+")")
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(code)
	n, _ := io.WriteString(w, strconv.Itoa(code)+" "+http.StatusText(code)+": "+msg+"\nrequest id: "+rid+"\n")
	ex.out += int64(n)
}

// bound bounds the answer to a request the gateway does not forward (no
// route, a method not allowed, CONNECT...), as proxy bounds a routed one
// by its route's timeout. net/http bounds neither the write of the answer
// nor the read of what is left of the request's body, which it reads
// (up to 256 KiB, to keep the connection) before the answer and after
// it: a client that reads no answer and sends request after request, or
// never sends the body it announced, would hold its connection, or
// HTTP/2 stream, for ever. The answer is short, answerTime its bound; a
// body that does not come within answerTime closes the connection after
// the answer, which then has its answerTime from there. The read deadline
// is set only if there is a body, for the reason proxy gives.
func bound(w http.ResponseWriter, hasBody bool) {
	conn := deadlines(w)
	if conn == nil {
		return
	}
	until := time.Now().Add(answerTime)
	if hasBody {
		_ = conn.SetReadDeadline(until)
		until = until.Add(answerTime)
	}
	_ = conn.SetWriteDeadline(until)
}

// head is what a response head means for the client.
type head struct {
	status       int
	stream       bool
	errMsg       string // a NATS Micro error: status holds its HTTP code
	noResponders bool
}

// decodeHead interprets a response head; an error means the reply breaks
// the protocol (502).
func decodeHead(m *nats.Msg, meta replyMeta) (head, error) {
	if isNoResponders(m) {
		return head{status: http.StatusServiceUnavailable, noResponders: true}, nil
	}
	if meta.errCode != "" || meta.errText != "" {
		code, err := strconv.Atoi(meta.errCode)
		if err != nil || code < 400 || code > 599 {
			code = http.StatusBadGateway
		}
		msg := meta.errText
		if msg == "" {
			msg = "error code " + strconv.Quote(meta.errCode)
		}
		return head{status: code, errMsg: msg}, nil
	}
	h := head{status: http.StatusOK, stream: meta.body == consumer.BodyStream}
	if meta.status != "" {
		s, err := strconv.Atoi(meta.status)
		if err != nil || s < 200 || s > 599 {
			return h, errors.New("invalid " + consumer.HeaderStatus + " " + strconv.Quote(meta.status))
		}
		h.status = s
	}
	if meta.body != "" && !h.stream {
		return h, errors.New("unknown " + consumer.HeaderBody + " " + strconv.Quote(meta.body))
	}
	return h, nil
}

type replyMeta struct {
	frame, status, body, errCode, errText string
	// ambiguous is set when Narun-Frame, Narun-Status or Narun-Body has
	// two different values, most often under two spellings of its name
	// (a responder whose headers are case-sensitive may add both): which
	// one scanMeta met first would depend on the map's order, so the same
	// reply would be a 200 on one request and a 404 on the next.
	ambiguous bool
	// badField names a header with a control character (see
	// hasControl), "" if there is none.
	badField string
}

// scanMeta reads the protocol headers of a reply, and finds a header with a
// control character; names are matched without regard to case because
// responders in other languages may lower-case them.
func scanMeta(h nats.Header) replyMeta {
	var m replyMeta
	for k, v := range h {
		if m.badField == "" && hasControl(k, v) {
			m.badField = k
		}
		if len(v) == 0 || len(k) < 5 {
			continue
		}
		switch {
		case strings.EqualFold(k, consumer.HeaderFrame):
			m.ambiguous = setOnce(&m.frame, v) || m.ambiguous
		case strings.EqualFold(k, consumer.HeaderStatus):
			m.ambiguous = setOnce(&m.status, v) || m.ambiguous
		case strings.EqualFold(k, consumer.HeaderBody):
			m.ambiguous = setOnce(&m.body, v) || m.ambiguous
		case strings.EqualFold(k, consumer.HeaderServiceErrorCode):
			m.errCode = trimOWS(v[0])
		case strings.EqualFold(k, consumer.HeaderServiceError):
			m.errText = v[0]
		}
	}
	return m
}

// hasControl reports whether a header's name, or one of its values, has
// a control character: any in a name, any but tab in a value. HTTP forbids
// them (RFC 9110 5.5: a recipient must reject or mend a message with CR, LF
// or NUL), and net/http's HTTP/1 server sends those of a value as they are,
// but for CR and LF, to a client or proxy that reads them as it likes.
// nats.go's reader keeps all of them but LF and a CR that ends the line,
// and its writer sends all but CR and LF: any responder can send them.
func hasControl(k string, v []string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	for _, s := range v {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
				return true
			}
		}
	}
	return false
}

// setOnce sets *dst to the value of v, and reports whether v, or a value
// set before under another spelling, disagrees with it.
func setOnce(dst *string, v []string) (ambiguous bool) {
	for _, s := range v {
		s = trimOWS(s)
		if *dst == "" {
			*dst = s
		} else if s != *dst && s != "" {
			ambiguous = true
		}
	}
	return ambiguous
}

// trimOWS drops the spaces and tabs after a header value, which HTTP does
// not count as part of it (RFC 9110 5.5): nats.go's reader drops only those
// before it, and its writer both, so only a responder that writes the
// protocol itself sends them. Most values end in neither: looking at the
// last byte first spares them the work.
func trimOWS(s string) string {
	if n := len(s); n > 0 && (s[n-1] == ' ' || s[n-1] == '\t') {
		return strings.TrimRight(s, " \t")
	}
	return s
}

// isNoResponders tells the NATS server's "no responders" message (status
// 503 in a Status header, no payload) from a reply that happens to carry a
// Status header: the server's has no protocol header.
func isNoResponders(m *nats.Msg) bool {
	if len(m.Data) != 0 || m.Header.Get("Status") != "503" {
		return false
	}
	for k := range m.Header {
		if consumer.IsReserved(k) {
			return false
		}
	}
	return true
}

// headSlack is the room the request head's headers set after its size is
// taken need: Narun-Timeout, Narun-Body and Narun-Window.
const headSlack = 96

// headBound bounds a request's head over HTTP/1, request line and the
// blank line that ends it included (docs/GATEWAY.md, "Limits").
const headBound = 32 << 10

// maxHeaderBytes is the servers' MaxHeaderBytes that makes headBound the
// bound: net/http's HTTP/1 server reads 4 KiB past it before it answers
// 431 (and does not count the 14 bytes it reads of a new connection of
// the h2c listener to look for HTTP/2's preface). Its HTTP/2 server
// derives the header list's bound from it too, as MaxHeaderBytes + 320
// bytes counted as HPACK counts a list (each field's name and value, and
// 32 bytes), and HTTP2Config has no field to set that bound apart.
const maxHeaderBytes = headBound - 4<<10

// maxHeadSize bounds the headers of a request's head in NATS: the client's
// headers, its Host twice and its path three times (escaped), each at most
// a header block, and the gateway's own.
const maxHeadSize = 8 * headBound

// natsHeaderSize is how many bytes h takes in a NATS message, as nats.go
// writes it.
func natsHeaderSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// lengthAgrees reports whether a request's Content-Length values are one
// decimal number, repeated or not, that is the length of its body (0 for
// none).
func lengthAgrees(cl []string, length int64, hasBody bool) bool {
	if !hasBody {
		length = 0
	}
	for _, v := range cl {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || int64(n) != length {
			return false
		}
	}
	return true
}

// validLength reports whether a Content-Length header is one decimal number.
func validLength(v []string) bool {
	if len(v) != 1 {
		return false
	}
	_, err := strconv.ParseUint(v[0], 10, 63)
	return err == nil
}

var (
	httpsValue = []string{"https"}
	teTrailers = []string{"trailers"}
)

// isEdgeHeader reports whether a request header is one that only the
// edge may set, for the host, scheme or port the client used, or for the
// client's address: frameworks build absolute links and redirects from
// the first (RFC 7239 Forwarded, which Spring and Rack prefer to
// X-Forwarded-Host and -Proto; X-Forwarded-Port, -Ssl and -Scheme, which
// Rack reads), and take X-Real-Ip, True-Client-Ip and the like for the
// client's address (chi's RealIP before X-Forwarded-For; gin and echo read
// X-Real-Ip; Rails and Symfony Client-Ip and X-Client-Ip; apps made for a
// CDN its own, Cf-Connecting-Ip or Fastly-Client-Ip), for logs, rate
// limits and allow lists. The gateway is the edge: a client's would choose
// where the service's links point, or which address the service believes
// it has, as its X-Forwarded-Host would. X-Forwarded-Host, -Proto and
// -Prefix are set (or deleted) after the copy; httputil.ReverseProxy drops
// Forwarded too. The gateway sends none of the address headers of its
// own: X-Forwarded-For ends with the address it saw.
func isEdgeHeader(k string) bool {
	if len(k) < 9 || (k[0] != 'F' && k[0] != 'X' && k[0] != 'T' && k[0] != 'C') {
		return false
	}
	switch k {
	case "Forwarded", "X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Scheme",
		"X-Real-Ip", "True-Client-Ip", "Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip",
		"Cf-Connecting-Ip", "Fastly-Client-Ip":
		return true
	}
	return false
}

// isGuardedTwin reports whether k, a name with underscores, read with
// dashes is one of the headers the gateway sets or keeps from the service.
// To net/http they are two headers, but a responder that maps names onto
// CGI-style variables, as WSGI, Rack and PHP name them, takes
// X_Forwarded_Host and X-Forwarded-Host alike for HTTP_X_FORWARDED_HOST,
// and may read the client's for the gateway's; nginx and gunicorn drop
// such names. Others with underscores pass: no header of the gateway's
// can be mistaken for them.
func isGuardedTwin(k string) bool {
	d := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
	return consumer.IsReserved(d) || isNATSHeader(d) || isHopByHop(d) || isEdgeHeader(d) ||
		strings.HasPrefix(d, "X-Forwarded-") || d == "X-Request-Id" || d == "Content-Length"
}

func isHopByHop(k string) bool {
	for _, hb := range hopByHop {
		if k == hb {
			return true
		}
	}
	return false
}

// upgradesTo reports whether an Upgrade header lists protocol.
func upgradesTo(upgrade []string, protocol string) bool {
	for _, u := range upgrade {
		for p := range strings.SplitSeq(u, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), "/")
			if strings.EqualFold(name, protocol) {
				return true
			}
		}
	}
	return false
}

// expectsContinue reports whether the client waits for 100 Continue before
// it sends its body.
func expectsContinue(expect []string) bool {
	return len(expect) == 1 && strings.EqualFold(strings.TrimSpace(expect[0]), "100-continue")
}

// listed reports whether a comma-separated list header, such as
// Connection (which names hop-by-hop headers) or TE, lists k, in any case.
func listed(connection []string, k string) bool {
	for _, c := range connection {
		for f := range strings.SplitSeq(c, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

// isNATSHeader reports whether k is one of the headers the NATS server
// and its clients act on (Nats-Trace-Dest, Nats-Trace-Only, Nats-Msg-Id,
// Nats-Expected-Stream, micro's errors...). A client's must not reach the
// request head: with Nats-Trace-Dest it would have the NATS server publish
// a trace to any subject it names, and with Nats-Trace-Only keep the
// request from the service.
func isNATSHeader(k string) bool {
	return len(k) >= 5 && strings.EqualFold(k[:5], "Nats-")
}

// skipReplyHeader tells the reply headers the client never gets as they
// are: the protocol's, NATS's, hop-by-hop ones, X-Request-Id, which stays
// the gateway's so that the client's id matches the gateway's logs, and
// Trailer, which announceTrailers rebuilds.
func skipReplyHeader(k string) bool {
	if consumer.IsReserved(k) || isNATSHeader(k) || strings.EqualFold(k, "X-Request-Id") || strings.EqualFold(k, "Trailer") {
		return true
	}
	for _, hb := range hopByHop {
		if strings.EqualFold(k, hb) {
			return true
		}
	}
	return false
}

// replyConnection is a reply's Connection header: the headers it names
// are hop-by-hop too, on this side as on the request's. Responders in other
// languages may spell it in any case.
func replyConnection(h nats.Header) []string {
	if v, ok := h["Connection"]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, "Connection") {
			return v
		}
	}
	return nil
}

// copyReplyHeaders copies a response head's headers and returns its
// Connection header, which also governs the trailers.
func copyReplyHeaders(dst http.Header, src nats.Header) (connection []string) {
	connection = replyConnection(src)
	for k, v := range src {
		if skipReplyHeader(k) || (len(connection) > 0 && listed(connection, k)) {
			continue
		}
		addValues(dst, http.CanonicalHeaderKey(k), v)
	}
	// An empty Content-Type or Date is no value HTTP allows: it stands for
	// net/http's nil, which sends none and keeps net/http from guessing a
	// type from the body (or adding the date). A service that serves
	// untrusted bytes must be able to say "no type", not get text/html.
	for _, k := range [...]string{"Content-Type", "Date"} {
		if v := dst[k]; len(v) == 1 && v[0] == "" {
			dst[k] = nil
		}
	}
	return connection
}

// addValues adds the values of a reply header to dst[key]: a responder may
// spell one name in several cases (NATS keeps them apart), and each
// spelling's values are the header's. The common case, one spelling, takes
// the values as they are, without a copy.
func addValues(dst http.Header, key string, v []string) {
	if prior := dst[key]; prior != nil {
		v = append(prior[:len(prior):len(prior)], v...)
	}
	dst[key] = v
}

// setTrailers copies an end frame's headers as trailers, except those its
// own Connection header or the head's (headConn) names, and those HTTP
// forbids in trailers, which net/http drops over HTTP/2 only.
func setTrailers(dst http.Header, src nats.Header, headConn []string) {
	skip := replyConnection(src)
	for k, v := range src {
		if skipReplyHeader(k) || (len(skip) > 0 && listed(skip, k)) || (len(headConn) > 0 && listed(headConn, k)) {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		if forbiddenTrailers[ck] {
			continue
		}
		addValues(dst, http.TrailerPrefix+ck, v)
	}
}

// announceTrailers relays the Trailer header of a streamed head (src) to
// the client's response (dst, the head's other headers already in it),
// keeping the names that may arrive as trailers: setTrailers would drop
// the others, Go's client refuses a response that announces
// Content-Length, Transfer-Encoding or Trailer, and a name the head
// carries too would go out twice, in the head and as a trailer.
func announceTrailers(dst http.Header, src nats.Header, connection []string) {
	var names []string
	for k, v := range src {
		if !strings.EqualFold(k, "Trailer") {
			continue
		}
		for _, line := range v {
			for name := range strings.SplitSeq(line, ",") {
				name = http.CanonicalHeaderKey(strings.TrimSpace(name))
				if !isToken(name) || skipReplyHeader(name) || forbiddenTrailers[name] || dst[name] != nil ||
					(len(connection) > 0 && listed(connection, name)) || slices.Contains(names, name) {
					continue
				}
				names = append(names, name)
			}
		}
	}
	if len(names) > 0 {
		dst["Trailer"] = []string{strings.Join(names, ", ")}
	}
}

// forbiddenTrailers are the fields HTTP forbids in trailers (RFC 9110
// 6.5.1), as net/http's HTTP/2 server drops them (httpguts.ValidTrailerHeader).
// Its HTTP/1 server sends any trailer it is given: setTrailers drops them
// for both, so that a client or proxy that merges trailers into the header
// section takes no framing, routing or authentication field from them.
var forbiddenTrailers = map[string]bool{
	"Authorization": true, "Cache-Control": true, "Connection": true, "Content-Encoding": true,
	"Content-Length": true, "Content-Range": true, "Content-Type": true, "Expect": true,
	"Host": true, "Keep-Alive": true, "Max-Forwards": true, "Pragma": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Proxy-Connection": true,
	"Range": true, "Realm": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Www-Authenticate": true,
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2), as a field
// name must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// bodyAllowed reports whether a final status may have a body: not 204
// or 304.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// saneRequestID accepts a client's X-Request-Id only if it is short and
// printable, so it can go into logs and headers unescaped.
func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// cleanPath resolves "." and ".." so that routing sees the path the service
// will see, keeping a trailing slash. A last segment "." or ".." names a
// directory, as RFC 3986's dot-segment removal has it: "/a/." is "/a/", not
// the exact route "/a".
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") && p[0] == '/' {
		return p
	}
	np := path.Clean("/" + p)
	dir := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	if dir && np != "/" {
		np += "/"
	}
	return np
}

// levelOf is the log level of a request the gateway failed or cut short
// with code: a warning for 5xx, the gateway's or the service's side, info
// for what the client did.
func levelOf(code int) slog.Level {
	if code >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// appendForwardedFor is the client's X-Forwarded-For values with ip
// appended. A value with no address in it (an empty header line, blanks)
// is left out: ", 127.0.0.1" has an empty first entry, which some parsers
// take for the client's address and others refuse.
func appendForwardedFor(prior []string, ip string) string {
	if len(prior) == 0 {
		return ip
	}
	n := len(ip)
	for _, v := range prior {
		n += len(v) + len(", ")
	}
	var b strings.Builder
	b.Grow(n)
	for _, v := range prior {
		if strings.TrimSpace(v) == "" {
			continue
		}
		b.WriteString(v)
		b.WriteString(", ")
	}
	b.WriteString(ip)
	return b.String()
}
