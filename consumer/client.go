package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Transport is an http.RoundTripper that sends each request to a narun
// service over NATS, speaking the protocol the gateway speaks
// (docs/PROTOCOL.md): the request's URL host is the service's subject, its
// path and query are what the service's handler sees. So one app calls
// another as the gateway would, without passing through it, also from a
// sandbox whose only way out is NATS:
//
//	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
//	resp, err := client.Get("http://hello/greet?lang=en")
//
// sends GET /greet?lang=en to the service on subject hello. Request bodies
// of any size travel (in chunks, as the service pulls them), responses are
// read as the service streams them, with the flow control of the protocol,
// and a response body closed early, or a request whose context ends,
// cancels the service's handler.
//
// What the gateway turns into an HTTP status is an error here, as a
// connection refused is for net/http's Transport: ErrNoService when no
// instance serves the subject, the context's error at its deadline, and
// ErrBrokenReply for a reply that breaks the protocol. A service's NATS
// Micro error (a handler's panic, say) is a response, with the error's code
// as status when it is one of 400-599, else 502, and its text as body
// (without one, error code "409", as the gateway names it).
//
// The request's context bounds the whole exchange, reading the response
// body included; without a deadline, Timeout does. Headers travel as
// given, except hop-by-hop ones and those of the protocol and of NATS
// (Narun-, Nats-). A call whose context is, or derives from, that of a
// request Serve handed the handler carries that request's X-Request-Id,
// Traceparent and Tracestate on where it sets none itself, so that one id
// and one trace name the whole chain. A gRPC call (Content-Type
// application/grpc) goes as HTTP/2, as the gateway sends one, so that a
// gRPC handler serves it; its status is in the response's Trailer.
//
// A Transport is safe for concurrent use; like net/http's, it is meant to
// be made once and kept, not copied once used. Its replies come through
// one subscription of its own, made at the first call.
type Transport struct {
	// Conn is the NATS connection requests go out on; a Transport shares
	// it with whatever else uses it. It must not change once used.
	Conn *nats.Conn
	// Timeout bounds an exchange whose request context has no deadline
	// (default 30 s, the gateway's default route timeout).
	Timeout time.Duration

	mu      sync.Mutex
	replies *replyMux
}

// replyMux hands the messages of every call's inbox, one wildcard
// subscription, to the call they are for. A subscription per call would
// have the server change its subject index at every call and its
// end, and so match anew the subjects every other client of the account
// publishes on (nats.go's requests share one the same way).
type replyMux struct {
	prefix string
	sub    *nats.Subscription
	mu     sync.Mutex
	calls  map[string]*call
	next   uint64
}

// mux is the Transport's replyMux, subscribed at the first call.
func (t *Transport) mux() (*replyMux, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.replies != nil {
		return t.replies, nil
	}
	r := &replyMux{prefix: t.Conn.NewInbox() + ".", calls: make(map[string]*call)}
	var err error
	if r.sub, err = t.Conn.Subscribe(r.prefix+"*", r.route); err != nil {
		return nil, fmt.Errorf("narun transport: subscribe to the replies: %w", err)
	}
	t.replies = r
	return r, nil
}

// add gives x an inbox of its own under the mux's prefix.
func (r *replyMux) add(x *call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	token := strconv.FormatUint(r.next, 36)
	x.inbox, x.token, x.replies = r.prefix+token, token, r
	r.calls[token] = x
}

func (r *replyMux) remove(token string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.calls, token)
}

// route hands m to its call; a message for a call that has ended is
// dropped.
func (r *replyMux) route(m *nats.Msg) {
	r.mu.Lock()
	x := r.calls[strings.TrimPrefix(m.Subject, r.prefix)]
	r.mu.Unlock()
	if x != nil {
		x.route(m)
	}
}

var (
	// ErrNoService is the error of a request to a subject no instance
	// serves (the gateway's 503).
	ErrNoService = errors.New("no instance of the service is running")
	// ErrBrokenReply is the error of a reply that breaks the protocol (the
	// gateway's 502).
	ErrBrokenReply = errors.New("the service's reply breaks the narun protocol")
	// ErrServiceGone is the error of an exchange whose service promised
	// alive frames and then fell silent: killed mid-request, most likely.
	ErrServiceGone = errors.New("the service stopped answering")
)

// clientQueue bounds the messages of one exchange waiting for the caller:
// a service keeps at most 8 data frames unacknowledged, and sends no alive
// frame while any is (PROTOCOL.md §3).
const clientQueue = 32

// RoundTrip sends req to the service named by its URL's host and returns
// the service's response head; the body follows as the service sends it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil && req.Body != nil {
		req.Body.Close()
	}
	return resp, err
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	if t.Conn == nil {
		return nil, errors.New("narun transport: no NATS connection (Transport.Conn)")
	}
	if req.URL == nil {
		return nil, errors.New("narun transport: request without URL")
	}
	subject := req.URL.Hostname()
	if err := checkCallSubject(subject); err != nil {
		return nil, fmt.Errorf("narun transport: URL %q: %w", req.URL.Redacted(), err)
	}
	if req.Body == nil && req.ContentLength != 0 {
		return nil, fmt.Errorf("narun transport: Request.ContentLength=%d with nil Body", req.ContentLength)
	}
	ctx, cancel := req.Context(), context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		timeout := t.Timeout
		if timeout <= 0 {
			timeout = defaultTimeout
		}
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	x := &call{
		nc:         t.Conn,
		ctx:        ctx,
		cancel:     cancel,
		subject:    subject,
		msgs:       make(chan *nats.Msg, clientQueue),
		pulls:      make(chan *nats.Msg, clientQueue),
		broken:     make(chan struct{}),
		done:       make(chan struct{}),
		bodyFailed: make(chan error, 1),
		alive:      make(chan time.Duration, 1),
		heard:      make(chan struct{}, 1),
	}
	if req.Body != nil && req.Body != http.NoBody {
		x.body = req.Body
	}
	head, streamBody, err := x.requestHead(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if !streamBody {
		if x.body != nil {
			x.body.Close()
		}
		x.body = nil
	}
	replies, err := t.mux()
	if err != nil {
		cancel()
		return nil, err
	}
	// Known to the mux only once complete: its route reads x from the
	// subscription's goroutine.
	replies.add(x)
	head.Reply = x.inbox
	if streamBody {
		go x.pump()
	}
	head.Header.Set(HeaderTimeout, strconv.FormatInt(max(time.Until(deadlineOf(ctx)).Milliseconds(), 0), 10))
	if err := t.Conn.PublishMsg(head); err != nil {
		x.finish(false)
		return nil, fmt.Errorf("narun transport: send the request to %q: %w", subject, err)
	}
	resp, err := x.response(req)
	if err != nil {
		x.finish(!errors.Is(err, ErrNoService))
		return nil, err
	}
	return resp, nil
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// checkCallSubject refuses a host that is no subject a service may serve:
// a request there would go to the server's API or to another client's
// replies, with the caller's login.
func checkCallSubject(s string) error {
	if s == "" {
		return errors.New("no host: the URL's host is the service's subject (http://hello/path)")
	}
	if !literalSubject(s) {
		return fmt.Errorf("host %q is no NATS subject", s)
	}
	if IsReservedSubject(s) {
		return fmt.Errorf("host %q is a subject of NATS or narun, not of a service", s)
	}
	return nil
}

// call is one exchange: its request, the replies on its inbox and, for a
// streamed request body, the pulls the service sends for it.
type call struct {
	nc      *nats.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	subject string
	inbox   string
	token   string
	replies *replyMux
	msgs    chan *nats.Msg
	pulls   chan *nats.Msg
	// broken is closed when a message found its queue full: the service
	// sent more than the protocol lets it.
	broken     chan struct{}
	brokenOnce sync.Once
	done       chan struct{}
	finishOnce sync.Once
	// bodyFailed takes the error of a request body that could not be
	// read: the exchange fails with it, as net/http's Transport fails.
	bodyFailed chan error
	body       io.ReadCloser
	// length is the body's ContentLength, 0 when not given: it then
	// travels in whole chunks, else in what each read gives.
	length int64
	// silence is how long the service may stay quiet once it sent an
	// alive frame; zero until then.
	silence time.Duration
	// alive holds the silence of the latest alive frame not yet taken.
	// Alive frames do not go to msgs: a quiet service sends them for as
	// long as the caller leaves its stream unread, and queued they would
	// fill msgs and fail the exchange as a broken reply.
	alive chan time.Duration
	// heard says that a pull came, or was answered: the service is not
	// silent while it pulls its request body, as the gateway hears it.
	heard chan struct{}
}

// hear tells the reader of the response that the service was heard from.
func (x *call) hear() {
	select {
	case x.heard <- struct{}{}:
	default:
	}
}

// hopHeaders are the headers of one connection, which a proxy does not
// forward (RFC 9110 7.6.1), and those of a request's framing, which the
// protocol carries its own way.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Transfer-Encoding": true, "Upgrade": true,
	"Trailer": true, "Host": true, "Content-Length": true,
}

// requestHead builds the request's first message. A body that fits in it
// travels in it; a larger one, or one of unknown length, is pulled.
func (x *call) requestHead(req *http.Request) (m *nats.Msg, stream bool, err error) {
	h := make(nats.Header, len(req.Header)+6)
	for k, vs := range req.Header {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if hopHeaders[ck] || notHTTP(ck) || len(vs) == 0 {
			continue
		}
		if !validToken(ck) {
			return nil, false, fmt.Errorf("narun transport: header name %q is no HTTP token", k)
		}
		// nats.go would send a line break as a space: a value the
		// caller did not give.
		if slices.ContainsFunc(vs, badFieldValue) {
			return nil, false, fmt.Errorf("narun transport: invalid header field value for %q", k)
		}
		h[ck] = append(h[ck], vs...)
	}
	for _, k := range strings.Split(strings.Join(req.Header.Values("Connection"), ","), ",") {
		delete(h, textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)))
	}
	if served := servedHeader(req.Context()); served != nil {
		carryOn(h, served)
	}
	// As the gateway does: it tells a handler that the caller takes
	// trailers, which this transport always does.
	if te := strings.ToLower(strings.Join(req.Header.Values("Te"), ",")); strings.Contains(te, "trailers") {
		h.Set("Te", "trailers")
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return nil, false, fmt.Errorf("narun transport: invalid method %q", method)
	}
	h.Set(HeaderMethod, method)
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	h.Set(HeaderPath, path)
	if req.URL.RawQuery != "" || req.URL.ForceQuery {
		h.Set(HeaderQuery, req.URL.RawQuery)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	h.Set(HeaderHost, host)
	// As the gateway sends a gRPC client's: grpc-go's handler answers one
	// of another version 505.
	if IsGRPC(req.Header.Get("Content-Type")) {
		h.Set(HeaderProto, "HTTP/2.0")
	}
	if req.ContentLength > 0 && x.body != nil {
		h.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	}
	m = &nats.Msg{Subject: x.subject, Header: h}
	if x.body == nil {
		return m, false, nil
	}
	room := int64(chunkFor(x.nc.MaxPayload()) - headerSize(h))
	if req.ContentLength > 0 && req.ContentLength <= room {
		data := make([]byte, req.ContentLength)
		if err := readKnown(x.body, data, 0, req.ContentLength); err != nil {
			return nil, false, fmt.Errorf("narun transport: read the request body: %w", err)
		}
		m.Data = data
		return m, false, nil
	}
	h.Set(HeaderBody, BodyStream)
	x.length = max(req.ContentLength, 0)
	return m, true, nil
}

// readKnown fills p from a body of contentLength bytes, sent of which
// came before p. A body that gives fewer bytes, or more once p reaches
// its length, fails the request as it fails net/http's Transport: the
// service must not take a body cut short, or one cut off, for the whole.
// As net/http's, it reads what is past the length to say how long the
// body was.
func readKnown(body io.Reader, p []byte, sent, contentLength int64) error {
	n, err := io.ReadFull(body, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return lengthMismatch(contentLength, sent+int64(n))
	}
	if err != nil || sent+int64(n) < contentLength {
		return err
	}
	extra, err := io.Copy(io.Discard, body)
	if err != nil {
		return err
	}
	if extra > 0 {
		return lengthMismatch(contentLength, contentLength+extra)
	}
	return nil
}

func lengthMismatch(contentLength, bodyLength int64) error {
	return fmt.Errorf("ContentLength=%d with Body length %d", contentLength, bodyLength)
}

// carryOn gives h, a call's header, the request id and trace of served,
// the header of the request being served, where the call sets none of
// its own. Tracestate goes with the Traceparent it belongs to.
func carryOn(h nats.Header, served http.Header) {
	if _, ok := h["X-Request-Id"]; !ok {
		if v := served["X-Request-Id"]; len(v) > 0 {
			h["X-Request-Id"] = v[:1:1]
		}
	}
	if _, ok := h["Traceparent"]; ok {
		return
	}
	if v := served["Traceparent"]; len(v) > 0 {
		h["Traceparent"] = v[:1:1]
		if s := served["Tracestate"]; len(s) > 0 {
			h["Tracestate"] = slices.Clip(s)
		}
	}
}

// route hands each message of the exchange on: pulls to the body's pump,
// the rest to whoever reads the response. It never blocks nats.go's
// delivery: a full queue means the service sent more than the protocol
// allows.
func (x *call) route(m *nats.Msg) {
	m.Header = asTheGatewayReads(m.Header)
	q := x.msgs
	frame := m.Header.Get(HeaderFrame)
	if ambiguous(m.Header) != "" {
		// For the reader of the response, which fails the exchange
		// with it.
		frame = ""
	}
	switch frame {
	case FrameAlive:
		if d, ok := aliveSilence(m.Header); ok {
			// Only the latest counts; route is the only sender.
			select {
			case <-x.alive:
			default:
			}
			select {
			case x.alive <- d:
			default:
			}
		}
		return
	case FramePull:
		x.hear()
		if x.body == nil {
			// Nothing to stream: the gateway is lenient so, and no
			// pump runs.
			if m.Reply != "" {
				_ = x.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderFrame: {FrameEnd}}})
			}
			return
		}
		q = x.pulls
	}
	select {
	case q <- m:
	default:
		x.brokenOnce.Do(func() { close(x.broken) })
	}
}

// aliveSilence is the silence an alive frame with header h allows, at
// least a second, as the gateway reads it (PROTOCOL.md §4): a frame
// without one number of milliseconds above 0 there is ignored, as an
// unknown frame is.
func aliveSilence(h nats.Header) (time.Duration, bool) {
	v := h[HeaderAliveTimeout]
	if len(v) != 1 {
		return 0, false
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0, false
	}
	return max(time.Duration(ms)*time.Millisecond, time.Second), true
}

// badFieldValue reports whether a header value has a control character
// other than tab, which HTTP forbids (RFC 9110 5.5).
func badFieldValue(v string) bool {
	return hasControl(v) || strings.ContainsAny(v, "\r\n")
}

// controlField names a header of h whose name or value has a control
// character, which the gateway takes for a broken reply (PROTOCOL.md §1),
// "" for none.
func controlField(h nats.Header) string {
	for k, vs := range h {
		if strings.ContainsFunc(k, func(c rune) bool { return c < ' ' || c == 0x7f }) || slices.ContainsFunc(vs, badFieldValue) {
			return k
		}
	}
	return ""
}

// connectionNames reports whether the values of a reply's Connection
// header name k: a header of one connection, which the gateway does not
// pass on (RFC 9110 7.6.1).
func connectionNames(connection []string, k string) bool {
	for _, c := range connection {
		for f := range strings.SplitSeq(c, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

// ambiguous names the protocol header of h that has two different values,
// which the gateway takes for a broken reply (PROTOCOL.md §1), "" for
// none.
func ambiguous(h nats.Header) string {
	for _, k := range [...]string{HeaderFrame, HeaderStatus, HeaderBody} {
		first := ""
		for _, v := range h[k] {
			if first == "" {
				first = v
			} else if v != "" && v != first {
				return k
			}
		}
	}
	return ""
}

// asTheGatewayReads is h as the gateway reads a reply (PROTOCOL.md): a
// responder in another language may spell the names in any case, and the
// spaces and tabs around a value are not part of it. h itself when it
// needs no change, as from this package's responders.
func asTheGatewayReads(h nats.Header) nats.Header {
	clean := true
	for k, vs := range h {
		if textproto.CanonicalMIMEHeaderKey(k) != k || slices.ContainsFunc(vs, padded) {
			clean = false
			break
		}
	}
	if clean {
		return h
	}
	out := make(nats.Header, len(h))
	for k, vs := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		for _, v := range vs {
			out[ck] = append(out[ck], strings.Trim(v, " \t"))
		}
	}
	return out
}

func padded(v string) bool {
	return v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t')
}

// pump answers the service's pulls with the request body, a chunk each.
func (x *call) pump() {
	buf := make([]byte, chunkFor(x.nc.MaxPayload()))
	eof := false
	var sent int64
	for {
		var pull *nats.Msg
		select {
		case pull = <-x.pulls:
		case <-x.done:
			return
		}
		if pull.Reply == "" {
			continue
		}
		answer := &nats.Msg{Subject: pull.Reply, Header: nats.Header{HeaderFrame: {FrameEnd}}}
		if !eof {
			// A reconnection may have reached a server that takes less.
			chunk := buf[:min(len(buf), chunkFor(x.nc.MaxPayload()))]
			var n int
			var err error
			if x.length > 0 {
				n = int(min(int64(len(chunk)), x.length-sent))
				err = readKnown(x.body, chunk[:n], sent, x.length)
				sent += int64(n)
				if err == nil && sent == x.length {
					err = io.EOF
				}
			} else {
				n, err = readSome(x.body, chunk)
			}
			switch {
			case err == io.EOF:
				eof = true
			case err != nil:
				answer.Header.Set(HeaderFrame, FrameCancel)
				_ = x.nc.PublishMsg(answer)
				x.bodyFailed <- err
				return
			default:
				answer.Header.Set(HeaderFrame, FrameData)
			}
			answer.Data = buf[:n]
		}
		if err := x.nc.PublishMsg(answer); err != nil {
			return
		}
		// The answer may have waited for the caller's body, a wait that
		// is no silence of the service's.
		x.hear()
	}
}

// readSome reads what the body has, at least a byte, or its end: a body of
// unknown length reaches the service as it comes, as through the gateway.
func readSome(r io.Reader, p []byte) (int, error) {
	for {
		n, err := r.Read(p)
		if n > 0 || err != nil {
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
	}
}

// next is the next message of the exchange for the response, bounded by
// the request's context and, once the service sent an alive frame, by the
// silence it allowed.
func (x *call) next() (*nats.Msg, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var silent <-chan time.Time
		if x.silence > 0 {
			if timer == nil {
				timer = time.NewTimer(x.silence)
			} else {
				timer.Reset(x.silence)
			}
			silent = timer.C
		}
		select {
		case x.silence = <-x.alive:
		case <-x.heard:
		case m := <-x.msgs:
			if k := ambiguous(m.Header); k != "" {
				return nil, fmt.Errorf("%w: %s with two different values", ErrBrokenReply, k)
			}
			return m, nil
		case <-x.broken:
			return nil, fmt.Errorf("%w: more messages than it may have in flight", ErrBrokenReply)
		case err := <-x.bodyFailed:
			return nil, fmt.Errorf("narun transport: read the request body: %w", err)
		case <-silent:
			return nil, fmt.Errorf("%w: nothing within the %v its alive frame allowed", ErrServiceGone, x.silence)
		case <-x.ctx.Done():
			return nil, fmt.Errorf("narun transport: waiting for %q: %w", x.subject, context.Cause(x.ctx))
		case <-x.done:
			return nil, fmt.Errorf("narun transport: %w", http.ErrBodyReadAfterClose)
		}
	}
}

// response waits for the response head and turns it into a response whose
// body reads the frames that follow it.
func (x *call) response(req *http.Request) (*http.Response, error) {
	var m *nats.Msg
	for {
		var err error
		if m, err = x.next(); err != nil {
			return nil, err
		}
		f := m.Header.Get(HeaderFrame)
		if f == "" {
			break
		}
		if f == FrameData || f == FrameEnd {
			return nil, fmt.Errorf("%w: a %q frame before the response head", ErrBrokenReply, f)
		}
		// Interim responses are not relayed, and frame types this
		// version does not know are ignored, as the gateway does.
	}
	resp := &http.Response{
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  make(http.Header, len(m.Header)),
		Request: req,
	}
	if code := m.Header.Get(HeaderServiceErrorCode); code != "" || m.Header.Get(HeaderServiceError) != "" {
		resp.StatusCode = microStatus(code)
		text := m.Header.Get(HeaderServiceError)
		if text == "" {
			// As the gateway names the error: an empty body says nothing.
			text = "error code " + strconv.Quote(code)
		}
		resp.Header.Set("Content-Type", "text/plain; charset=utf-8")
		resp.ContentLength = int64(len(text))
		resp.Body = io.NopCloser(strings.NewReader(text))
		resp.Status = statusText(resp.StatusCode)
		x.finish(false)
		return resp, nil
	}
	if m.Header.Get("Status") == "503" && len(m.Data) == 0 && !hasProtocolHeader(m.Header) {
		return nil, fmt.Errorf("narun transport: %q: %w", x.subject, ErrNoService)
	}
	resp.StatusCode = http.StatusOK
	if s := m.Header.Get(HeaderStatus); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil || code < 200 || code > 599 {
			return nil, fmt.Errorf("%w: status %q", ErrBrokenReply, s)
		}
		resp.StatusCode = code
	}
	resp.Status = statusText(resp.StatusCode)
	if b := m.Header.Get(HeaderBody); b != "" && b != BodyStream {
		return nil, fmt.Errorf("%w: %s %q", ErrBrokenReply, HeaderBody, b)
	}
	if k := controlField(m.Header); k != "" {
		return nil, fmt.Errorf("%w: header %q has a control character", ErrBrokenReply, k)
	}
	conn := m.Header["Connection"]
	for k, vs := range m.Header {
		if !notHTTP(k) && !hopHeaders[textproto.CanonicalMIMEHeaderKey(k)] && !connectionNames(conn, k) && k != "Status" && k != "Description" {
			resp.Header[textproto.CanonicalMIMEHeaderKey(k)] = append(resp.Header[textproto.CanonicalMIMEHeaderKey(k)], vs...)
		}
	}
	if t := m.Header.Values("Trailer"); len(t) > 0 {
		resp.Trailer = make(http.Header)
		for _, v := range t {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					resp.Trailer[textproto.CanonicalMIMEHeaderKey(k)] = nil
				}
			}
		}
	}
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	streamed := m.Header.Get(HeaderBody) == BodyStream
	switch {
	case noBody:
		if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
			resp.ContentLength = 0
		} else {
			// The length a GET would get, in the header too, as
			// net/http's client leaves it in a HEAD response. A payload
			// the service sent all the same is the body GET would get,
			// as the gateway reads it.
			resp.ContentLength = replyLength(m.Header)
			if !streamed && len(m.Data) > 0 {
				resp.ContentLength = int64(len(m.Data))
			}
			if resp.ContentLength >= 0 {
				resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
			}
		}
		resp.Body = http.NoBody
		if streamed && req.Method != http.MethodHead {
			// A streamed 204 or 304 is whole with its head, and the
			// gateway leaves its exchange open until the end frame:
			// cancelled, the handler would count it as failed.
			go x.drainBodiless()
		} else {
			x.finish(streamed)
		}
	case !streamed:
		resp.ContentLength = int64(len(m.Data))
		resp.Header.Set("Content-Length", strconv.Itoa(len(m.Data)))
		resp.Body = io.NopCloser(bytes.NewReader(m.Data))
		x.finish(false)
	default:
		resp.ContentLength = replyLength(m.Header)
		if resp.ContentLength >= 0 {
			resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
		if resp.ContentLength >= 0 && int64(len(m.Data)) > resp.ContentLength {
			return nil, fmt.Errorf("%w: a head with more body than the %d bytes it announced", ErrBrokenReply, resp.ContentLength)
		}
		resp.Body = &streamBody{x: x, buf: m.Data, read: int64(len(m.Data)), resp: resp, headConn: conn}
	}
	return resp, nil
}

// replyLength is the Content-Length of a reply's head, -1 for none: one
// that is not one unsigned number the gateway drops, and sends the body
// without a length.
func replyLength(h nats.Header) int64 {
	v := h["Content-Length"]
	if len(v) != 1 {
		return -1
	}
	cl, err := strconv.ParseUint(v[0], 10, 63)
	if err != nil {
		return -1
	}
	return int64(cl)
}

func statusText(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// microStatus is the HTTP status of a NATS Micro error code, as the
// gateway gives it.
func microStatus(code string) int {
	if c, err := strconv.Atoi(code); err == nil && c >= 400 && c <= 599 {
		return c
	}
	return http.StatusBadGateway
}

func hasProtocolHeader(h nats.Header) bool {
	for k := range h {
		if IsReserved(k) {
			return true
		}
	}
	return false
}

// drainBodiless takes what a streamed response without a body sends after
// its head, until its end frame, as the gateway does: a data frame is
// acked and dropped.
func (x *call) drainBodiless() {
	for {
		m, err := x.next()
		if err != nil {
			x.finish(true)
			return
		}
		switch m.Header.Get(HeaderFrame) {
		case FrameData:
			if m.Reply != "" {
				_ = x.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderFrame: {FrameAck}}})
			}
		case FrameEnd:
			x.finish(false)
			return
		case "":
			// A second head breaks the protocol.
			x.finish(true)
			return
		}
	}
}

// finish ends the exchange once: no more replies are taken, the pump
// stops, and with cancelService the service is told to stop its handler.
func (x *call) finish(cancelService bool) {
	x.finishOnce.Do(func() {
		x.replies.remove(x.token)
		close(x.done)
		if x.body != nil {
			// Unblocks the pump's read of a body that would never end.
			x.body.Close()
		}
		if cancelService {
			_ = x.nc.Publish(CancelSubject(x.subject), []byte(x.inbox))
		}
		x.cancel()
	})
}

// streamBody reads a streamed response: the head's payload, then each
// data frame, acknowledged as it is taken so that the service sends more.
type streamBody struct {
	x    *call
	resp *http.Response
	// headConn is the head's Connection header: the trailers it names
	// are dropped too, as the gateway drops them.
	headConn []string
	buf      []byte
	read     int64
	err      error
	mu       sync.Mutex
}

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		b.err = b.nextFrame()
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// nextFrame takes the next frame into buf, or says why there is none.
func (b *streamBody) nextFrame() error {
	m, err := b.x.next()
	if err != nil {
		b.x.finish(true)
		return err
	}
	switch m.Header.Get(HeaderFrame) {
	case FrameData:
		if m.Reply != "" {
			_ = b.x.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderFrame: {FrameAck}}})
		}
		return b.take(m.Data)
	case FrameEnd:
		if m.Header.Get(HeaderServiceErrorCode) != "" || m.Header.Get(HeaderServiceError) != "" {
			b.x.finish(false)
			return fmt.Errorf("narun transport: the service failed after its response began: %s (%w)", m.Header.Get(HeaderServiceError), io.ErrUnexpectedEOF)
		}
		if k := controlField(m.Header); k != "" {
			b.x.finish(true)
			return fmt.Errorf("%w: trailer %q has a control character (%w)", ErrBrokenReply, k, io.ErrUnexpectedEOF)
		}
		if err := b.take(m.Data); err != nil {
			return err
		}
		if b.resp.ContentLength >= 0 && b.read != b.resp.ContentLength {
			b.x.finish(false)
			return fmt.Errorf("%w: a body of %d bytes, %d announced (%w)", ErrBrokenReply, b.read, b.resp.ContentLength, io.ErrUnexpectedEOF)
		}
		for k, vs := range m.Header {
			if !notHTTP(k) && !hopHeaders[textproto.CanonicalMIMEHeaderKey(k)] && !connectionNames(m.Header["Connection"], k) && !connectionNames(b.headConn, k) {
				if b.resp.Trailer == nil {
					b.resp.Trailer = make(http.Header)
				}
				b.resp.Trailer[textproto.CanonicalMIMEHeaderKey(k)] = vs
			}
		}
		b.x.finish(false)
		return io.EOF
	case "":
		b.x.finish(true)
		return fmt.Errorf("%w: a second response head", ErrBrokenReply)
	default:
		// An interim frame after the head, or a frame type this version
		// does not know: ignored, as the gateway does.
		return nil
	}
}

// take adds a frame's payload, refusing one past the announced length.
func (b *streamBody) take(data []byte) error {
	b.read += int64(len(data))
	if b.resp.ContentLength >= 0 && b.read > b.resp.ContentLength {
		b.x.finish(true)
		return fmt.Errorf("%w: more body than the %d bytes announced", ErrBrokenReply, b.resp.ContentLength)
	}
	b.buf = data
	return nil
}

// Close ends the exchange; before the body's end, it tells the service to
// stop.
func (b *streamBody) Close() error {
	// Before the lock: a Read blocked waiting for a frame holds it, and
	// finish ends that wait.
	b.x.finish(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil || b.err == io.EOF {
		b.err = fmt.Errorf("narun transport: %w", http.ErrBodyReadAfterClose)
	}
	return nil
}
