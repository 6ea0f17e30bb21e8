package consumer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// errBadRequest marks a request head that does not follow the protocol.
var errBadRequest = errors.New("bad request head")

// defaultTimeout is the time left of a request without HeaderTimeout: the
// gateway's default route timeout.
const defaultTimeout = 30 * time.Second

// decodeRequest turns a request head into an *http.Request whose body is
// the payload, followed by pulled chunks when the head says so.
// The request's context is served, filled in; nil takes a new one.
func decodeRequest(ctx context.Context, m *nats.Msg, arrived time.Time, pull func(context.Context) (*nats.Msg, error), served *servedContext) (*http.Request, context.CancelFunc, error) {
	h := m.Header
	stream := h.Get(HeaderBody) == BodyStream
	method := h.Get(HeaderMethod)
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return nil, nil, fmt.Errorf("%w: method %q", errBadRequest, method)
	}
	path := h.Get(HeaderPath)
	if path == "" {
		path = "/"
	}
	if path[0] != '/' && path != "*" {
		return nil, nil, fmt.Errorf("%w: path %q does not start with /", errBadRequest, path)
	}
	uri := path
	if q := h[HeaderQuery]; len(q) > 0 {
		// Even empty: the client asked for "/a?", not "/a".
		uri += "?" + q[0]
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	proto := h.Get(HeaderProto)
	if proto == "" {
		proto = "HTTP/1.1"
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return nil, nil, fmt.Errorf("%w: proto %q", errBadRequest, proto)
	}
	// A request made by hand (nats request) may come without a timeout.
	// Without a deadline a wait nobody will end (an ack of a streamed
	// response, whose requester read the head and left; a pull) would
	// hold its worker for ever, and Serve's return with it.
	left := defaultTimeout
	if t := h.Get(HeaderTimeout); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, nil, fmt.Errorf("%w: timeout %q", errBadRequest, t)
		}
		left = time.Duration(min(ms, int64(math.MaxInt64/time.Millisecond))) * time.Millisecond
	}
	// A time left from when the message arrived (PROTOCOL.md), not from
	// when a worker got to it.
	ctx, cancel := context.WithDeadline(ctx, arrived.Add(left))
	// The message's header map becomes the request's: the message is ours,
	// and reusing the map saves a copy per request.
	hdr := http.Header(h)
	host, remote := h.Get(HeaderHost), h.Get(HeaderRemoteAddr)
	https := strings.EqualFold(h.Get(HeaderScheme), "https")
	for k, v := range h {
		if notHTTP(k) {
			delete(hdr, k)
			continue
		}
		if ck := http.CanonicalHeaderKey(k); ck != k {
			delete(hdr, k)
			hdr[ck] = append(hdr[ck], v...)
		}
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	r := http.Request{
		Method:     method,
		URL:        u,
		Proto:      proto,
		ProtoMajor: major,
		ProtoMinor: minor,
		Header:     hdr,
		Host:       host,
		RemoteAddr: remote,
		RequestURI: uri,
	}
	if https {
		// Handlers tell an https client by r.TLS, as net/http's server
		// sets it (redirect-to-https middleware, secure cookies). The
		// gateway holds the TLS connection, so its state is not known
		// here: the value is empty, but not nil.
		r.TLS = &tls.ConnectionState{}
	}
	// A body the client sent without Content-Length (chunked, or HTTP/2
	// without content-length) has an unknown length, as net/http's server
	// tells it, whether or not it fits in one message: a handler that
	// wants a length (411 Length Required) sees the same for a small
	// upload as for a large one.
	declared := int64(-1)
	if v := hdr["Content-Length"]; len(v) == 1 {
		if cl, err := strconv.ParseInt(v[0], 10, 64); err == nil && cl >= 0 {
			declared = cl
		}
	}
	switch {
	case stream:
		r.ContentLength = declared
		pctx, stop := context.WithCancel(ctx)
		r.Body = &pullReader{ctx: pctx, stop: stop, end: cancel, pull: pull, buf: m.Data}
	case len(m.Data) == 0:
		r.Body = http.NoBody
	default:
		r.ContentLength = int64(len(m.Data))
		if declared < 0 {
			r.ContentLength = -1
		}
		b := &bytesBody{}
		b.r.Reset(m.Data)
		r.Body = b
	}
	if r.ContentLength < 0 && major == 1 {
		// HTTP/1 has no other way to send a body of unknown length.
		r.TransferEncoding = []string{"chunked"}
	}
	if served == nil {
		served = new(servedContext)
	}
	served.Context, served.header = ctx, hdr
	return r.WithContext(served), cancel, nil
}

// servedContext is the context of a request Serve hands a handler: it
// holds the request's header, from which Transport carries the request's
// id and trace on to the services the handler calls with it.
type servedContext struct {
	context.Context
	header http.Header
}

type servedKey struct{}

func (c *servedContext) Value(key any) any {
	if key == (servedKey{}) {
		return c.header
	}
	return c.Context.Value(key)
}

// servedHeader is the header of the request being served whose context
// ctx is, or derives from; nil for none.
func servedHeader(ctx context.Context) http.Header {
	h, _ := ctx.Value(servedKey{}).(http.Header)
	return h
}

// bytesBody is a whole body in memory: one allocation where
// io.NopCloser(bytes.NewReader(...)) takes two. It is only a reader, as
// net/http's request body is, and refuses reads after Close as that does.
// Close may come while another goroutine reads, as net/http's allows.
type bytesBody struct {
	r      bytes.Reader
	closed atomic.Bool
}

func (b *bytesBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.Read(p)
}

func (b *bytesBody) Close() error {
	b.closed.Store(true)
	return nil
}

// validToken reports whether s is an HTTP token, as a method or a header
// name must be (RFC 9110 5.6.2); NATS header names are the same set.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChars[s[i]] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = !strings.ContainsRune(`()<>@,;:\"/[]?={}`, c)
	}
	return t
}()

// pullReader reads a request body that the gateway hands out chunk by
// chunk: one pull in flight at a time is the flow control.
type pullReader struct {
	ctx context.Context
	// stop ends ctx, and the pull in flight with it, when the body is
	// closed: a handler may close it while another goroutine reads, as
	// grpc-go's does before it waits for that reader, and net/http's
	// server unblocks such a read.
	stop context.CancelFunc
	// end ends the request's context: a cancel frame in answer to a
	// pull says the exchange is over (the client gone, the body refused),
	// and net/http's server ends the context before a read that fails
	// for a client gone returns, so that a handler tells that case from
	// a bad body by r.Context().Err().
	end    context.CancelFunc
	closed atomic.Bool
	pull   func(context.Context) (*nats.Msg, error)
	buf    []byte
	eof    bool
	err    error
}

// errReadAfterClose is net/http's error for a read after Close; the
// gateway is not pulled for the rest.
var errReadAfterClose = fmt.Errorf("read request body: %w", http.ErrBodyReadAfterClose)

func (r *pullReader) Read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, errReadAfterClose
	}
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.eof {
			return 0, io.EOF
		}
		m, err := r.pull(r.ctx)
		if r.closed.Load() {
			return 0, errReadAfterClose
		}
		if err != nil {
			r.err = fmt.Errorf("read request body: %w", err)
			if errors.Is(err, nats.ErrNoResponders) {
				// The gateway's inbox is gone (it restarted): the
				// exchange is over, as a cancel would say.
				r.end()
			}
			continue
		}
		switch m.Header.Get(HeaderFrame) {
		case FrameData:
			r.buf = m.Data
		case FrameEnd:
			r.buf, r.eof = m.Data, true
		default:
			r.err = fmt.Errorf("read request body: gateway ended the exchange (%q)", m.Header.Get(HeaderFrame))
			r.end()
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *pullReader) Close() error {
	r.closed.Store(true)
	r.stop()
	return nil
}

// serve handles one request head to completion and accounts for it.
func (s *server) serve(j job) {
	start := time.Now()
	m := j.m
	reply := m.Reply
	if reply == "" {
		// Nothing can answer a request without a reply subject.
		s.record(time.Since(start), "request without reply subject")
		return
	}
	var pull func(context.Context) (*nats.Msg, error)
	// Only a streamed body pulls: most requests do not pay for the closure.
	if m.Header.Get(HeaderBody) == BodyStream {
		pull = func(ctx context.Context) (*nats.Msg, error) {
			return s.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: reply, Header: nats.Header{HeaderFrame: {FramePull}}})
		}
	}
	// The window is read before decodeRequest, which takes the request's
	// headers from m.
	w := &responseWriter{s: s, reply: reply, hdr: make(http.Header), window: windowOf(m.Header)}
	r, cancel, err := decodeRequest(s.base, m, j.arrived, pull, &w.served)
	if err != nil {
		s.respondError(reply, http.StatusBadRequest, err.Error())
		s.record(time.Since(start), err.Error())
		return
	}
	if r.Context().Err() != nil {
		// The gateway has answered the client already (504).
		cancel()
		s.record(time.Since(start), "timed out waiting for a worker")
		return
	}
	w.ctx, w.over, w.head = r.Context(), cancel, r.Method == http.MethodHead
	w.chunk = w.frameSize()
	w.live.sent(start)
	s.mu.Lock()
	s.inflight[reply] = running{cancel: cancel, w: w}
	s.mu.Unlock()
	// A cancel that came after the queue let go of the request and
	// before it was registered above was kept: take it now.
	if s.q.takeEarly(reply) {
		cancel()
		s.mu.Lock()
		delete(s.inflight, reply)
		s.mu.Unlock()
		s.record(time.Since(start), "cancelled before its handler started")
		return
	}
	// Deferred, and the text set before run, for a handler that calls
	// runtime.Goexit: run then never returns.
	errText := errGoexit
	// The body as decoded: a handler may set r.Body to a wrapper of it.
	body := r.Body
	defer func() {
		// As net/http's server closes it once the handler returned: a
		// goroutine the handler left reading it fails with
		// http.ErrBodyReadAfterClose. Before the context ends, so that
		// one that waits for the end reads a closed body.
		_ = body.Close()
		cancel()
		s.mu.Lock()
		delete(s.inflight, reply)
		s.mu.Unlock()
		s.record(time.Since(start), errText)
	}()
	errText = w.run(r)
}

// errGoexit is the error counted for a handler that called runtime.Goexit.
const errGoexit = "handler exited its goroutine"

func (s *server) respondError(reply string, code int, text string) {
	err := s.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{
		HeaderServiceErrorCode: {strconv.Itoa(code)},
		HeaderServiceError:     {text},
	}})
	if err != nil {
		s.asyncErr(fmt.Errorf("reply to %s: %w", reply, err))
	}
}

// ackWindow is how many response chunks may await the gateway's ack: enough
// to keep the pipe full, few enough to bound memory on a slow client.
const ackWindow = 4

// DefaultWindow is the response window of a request without HeaderWindow.
const DefaultWindow = 4 << 20

// windowOf reads the gateway's HeaderWindow: DefaultWindow without one, or
// with one that is no size.
func windowOf(h nats.Header) int {
	v := h.Get(HeaderWindow)
	if v == "" {
		return DefaultWindow
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return DefaultWindow
	}
	return n
}

// responseWriter buffers a small response into one reply message and turns
// into a stream of frames when the handler flushes or writes more than a
// message holds.
type responseWriter struct {
	s     *server
	reply string
	ctx   context.Context
	// over ends ctx: an answer to a data frame other than an ack (a
	// cancel, or no responders from a gateway gone) says the exchange is
	// over, and no cancel may follow it.
	over context.CancelFunc
	// served is the request's context, kept here to save an allocation
	// per request.
	served servedContext
	hdr    http.Header
	// sent is hdr as it was when the status was set: what goes out in
	// the response head, as net/http's server ignores changes made
	// after WriteHeader (except trailers).
	sent        http.Header
	status      int
	wroteHeader bool
	streaming   bool
	buf         []byte
	acks        chan *nats.Msg
	ackSub      *nats.Subscription
	chunk       int
	// window is the request's response window; unackedBytes is
	// the body in the data frames not acked yet, whose sizes ackedSizes
	// keeps in the order the acks come.
	window       int
	unackedBytes int
	ackedSizes   [ackWindow]int
	oldest       int
	err          error
	// live is what keepAlive reads to tell a quiet exchange, the count of
	// data frames not acked yet among it.
	live liveness
	// head is set for a HEAD request: the body is counted, not sent, as
	// net/http's server does, and headLen is its length.
	head    bool
	headLen int
	// sniff holds, for a HEAD response without a Content-Type, the first
	// bytes written before the head goes out: net/http's server guesses
	// the type from up to 512 of them, whatever the writes that made
	// them, and the gateway gets no body to guess from.
	sniff []byte
	// declared is the Content-Length the handler set before the status,
	// -1 for none, and written what it wrote of the body since.
	declared int64
	written  int64
	// overran is set by the first write past declared: net/http's server
	// refuses every write from then on, so the body stays short and the
	// response is aborted, rather than end whole with later writes.
	overran bool
}

func (w *responseWriter) Header() http.Header { return w.hdr }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		// 100 Continue is the gateway's to send, when the body is first
		// pulled; 101 would switch protocols, which the gateway cannot
		// relay.
		if code != http.StatusContinue && code != http.StatusSwitchingProtocols {
			w.interim(code)
		}
		return
	}
	w.wroteHeader, w.status = true, code
	// A deep copy, as net/http's: a handler may still change a value
	// in place.
	w.sent = w.hdr.Clone()
	if w.sent == nil {
		w.sent = http.Header{}
	}
	w.declared = -1
	if v := w.sent["Content-Length"]; len(v) == 1 {
		if cl, err := strconv.ParseInt(v[0], 10, 64); err == nil && cl >= 0 {
			w.declared = cl
		}
	}
}

// interim sends an interim response at once, with the headers set so far
// but those about a body, as net/http's server writes one; they stay set
// for the final response (RFC 8297). Gateways that predate the frame
// ignore it, as every frame they do not know.
func (w *responseWriter) interim(code int) {
	h := make(nats.Header, len(w.hdr)+2)
	for k, v := range w.hdr {
		if inResponseHead(k) && k != "Content-Length" && k != "Transfer-Encoding" {
			if v, ok := sendable(v); ok {
				h[k] = v
			}
		}
	}
	h[HeaderFrame] = []string{FrameInterim}
	h[HeaderStatus] = []string{strconv.Itoa(code)}
	// Advisory: a hint lost does not fail the response.
	if err := w.s.nc.PublishMsg(&nats.Msg{Subject: w.reply, Header: h}); err != nil {
		w.s.asyncErr(fmt.Errorf("interim response to %s: %w", w.reply, err))
	}
}

// sniffLen is how much of a body http.DetectContentType looks at.
const sniffLen = 512

// typeHead sets the Content-Type of a HEAD response that has none to what
// the gateway's net/http writer would guess from the body GET gets, as
// net/http's server does for HEAD: HEAD sends no body for it to guess
// from. It is called as the head goes out, so the guess sees what was
// written until then, as net/http's sees what it buffered.
func (w *responseWriter) typeHead() {
	if len(w.sniff) > 0 {
		w.sent["Content-Type"] = []string{http.DetectContentType(w.sniff)}
		w.sniff = nil
	}
}

// bodyAllowed reports whether the status may have a body, as net/http's
// server has it: not 204 or 304.
func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		// As net/http's server takes it, whatever the status or the
		// length: no byte breaks a rule.
		return 0, nil
	}
	if w.err != nil {
		return 0, w.err
	}
	// As net/http's server refuses them, so that the handler learns of
	// its mistake where a direct client would have.
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.overran || w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		w.overran = true
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.head {
		if _, typed := w.sent["Content-Type"]; !typed && !w.streaming && len(p) > 0 && len(w.sniff) < sniffLen && w.sent.Get("Content-Encoding") == "" {
			// The gateway's net/http writer guesses nothing for an
			// encoded body, whose bytes say nothing of the type of what
			// they encode.
			if w.sniff == nil {
				w.sniff = make([]byte, 0, sniffLen)
			}
			w.sniff = append(w.sniff, p[:min(len(p), sniffLen-len(w.sniff))]...)
		}
		w.headLen += len(p)
		return len(p), nil
	}
	if len(w.buf)+len(p) <= w.chunk {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	n := len(p)
	// The buffer takes at most a chunk of p, and the rest goes out from p
	// itself: copied whole, a large write took its size again in memory,
	// and moving what was left of it down after each chunk cost time in
	// its square.
	fill := max(0, w.chunk-len(w.buf))
	w.buf, p = append(w.buf, p[:fill]...), p[fill:]
	if !w.streaming {
		// The head takes what of the buffer its headers leave room for.
		w.startStream()
	}
	if w.err == nil && len(w.buf)+len(p) >= w.chunk && len(w.buf) > 0 {
		fill = w.chunk - len(w.buf)
		w.buf, p = append(w.buf, p[:fill]...), p[fill:]
		w.sendData(w.buf)
		w.buf = w.buf[:0]
	}
	for w.err == nil && len(p) >= w.chunk {
		w.sendData(p[:w.chunk])
		p = p[w.chunk:]
	}
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	return n, nil
}

// Flush sends what was written so far to the client.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	if !w.streaming {
		// The head's headers may leave room for only part of what was
		// written: the rest goes below, or a handler that flushes and
		// then waits leaves its client short.
		w.startStream()
	}
	if w.err == nil && len(w.buf) > 0 {
		w.sendData(w.buf)
		w.buf = w.buf[:0]
	}
}

// FlushError is Flush that reports a failure, for http.ResponseController.
func (w *responseWriter) FlushError() error {
	w.Flush()
	return w.err
}

// EnableFullDuplex is for http.ResponseController: the body can always be
// read after the response started, since it is pulled from the gateway.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// CloseNotify is net/http's deprecated http.CloseNotifier, which frameworks
// still assert without checking (gin's Context.Stream does, and panics
// without it): the channel gets true when the exchange ends before the
// handler does, the client gone or the route's timeout passed.
func (w *responseWriter) CloseNotify() <-chan bool {
	ch := make(chan bool, 1)
	go func() {
		// The context ends when serve returns too, so this goroutine
		// never outlives the request.
		<-w.ctx.Done()
		ch <- true
	}()
	return ch
}

// SetWriteDeadline is for http.ResponseController. The route's timeout
// bounds the whole exchange and no deadline of the handler's own can be
// set; clearing one (the zero time, as streaming handlers do for
// net/http's WriteTimeout) asks for what already holds.
func (w *responseWriter) SetWriteDeadline(t time.Time) error { return noDeadline(t) }

// SetReadDeadline is SetWriteDeadline's reading twin.
func (w *responseWriter) SetReadDeadline(t time.Time) error { return noDeadline(t) }

func noDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return fmt.Errorf("%w: the route's timeout bounds the exchange", http.ErrNotSupported)
}

// notHTTP reports whether a header named k is the protocol's or NATS's,
// never the HTTP message's: from a handler, a Nats-Service-Error-Code
// would have the gateway fail a response the handler meant to succeed.
func notHTTP(k string) bool {
	return IsReserved(k) || (len(k) >= 5 && strings.EqualFold(k[:5], "Nats-"))
}

// suppressed is what stands in a response head for a header the handler
// set to nil, which net/http's server takes as "send none": the gateway
// then neither sends nor adds one (PROTOCOL.md §1). NATS drops a header
// without values, which would let the gateway guess a Content-Type.
var suppressed = []string{""}

// suppressible are the headers net/http's server adds when they are absent.
var suppressible = [...]string{"Content-Type", "Date"}

// inResponseHead reports whether the handler's header k goes out in the
// response head: protocol and NATS headers are the consumer's to set, trailers
// travel with the last frame, and a name that is no HTTP token is dropped,
// as net/http's server drops it, rather than failing the whole reply (NATS
// refuses such a name).
func inResponseHead(k string) bool {
	return !notHTTP(k) && k != "Trailer" && !strings.HasPrefix(k, http.TrailerPrefix) && validToken(k)
}

// streamHead is the head of a streamed response. It copies the header as
// sent rather than filtering it in place: trailers() reads its Trailer
// declaration when the response ends.
func (w *responseWriter) streamHead() *nats.Msg {
	w.typeHead()
	h := make(nats.Header, len(w.sent)+2)
	for k, v := range w.sent {
		// The declaration goes in a streamed head only, which the gateway
		// relays to the client (PROTOCOL.md §3): a whole reply has no end
		// frame to carry the trailers it would announce.
		if !inResponseHead(k) && k != "Trailer" {
			continue
		}
		if v, ok := sendable(v); ok {
			h[k] = v
		}
	}
	suppress(h)
	if w.status != http.StatusOK {
		h[HeaderStatus] = []string{strconv.Itoa(w.status)}
	}
	h[HeaderBody] = []string{BodyStream}
	return &nats.Msg{Subject: w.reply, Header: h}
}

// finalHead is the head of an unstreamed response, its only message. It
// is the header as sent, which is the writer's own: nats.go encodes it
// before PublishMsg returns, so it needs no copy.
func (w *responseWriter) finalHead() *nats.Msg {
	w.typeHead()
	h := w.sent
	for k, v := range h {
		if v, ok := sendable(v); ok && inResponseHead(k) {
			h[k] = v
		} else {
			delete(h, k)
		}
	}
	suppress(nats.Header(h))
	if w.head && w.headLen > 0 && h["Content-Length"] == nil {
		// The length a GET would get, as net/http's server tells it.
		h["Content-Length"] = []string{strconv.Itoa(w.headLen)}
	}
	// A reply with a Status header, no protocol header and no payload
	// looks like NATS's "no responders": Narun-Status tells them apart.
	if w.status != http.StatusOK || (len(w.buf) == 0 && h["Status"] != nil) {
		h[HeaderStatus] = []string{strconv.Itoa(w.status)}
	}
	return &nats.Msg{Subject: w.reply, Header: nats.Header(h)}
}

// sendable is vs without the values that hold a control character but
// tab, CR and LF; false if it had values and none is left. The gateway
// fails a whole reply for one such value (PROTOCOL.md §1), where net/http's
// server sends the response (its HTTP/2 server drops the value, as here).
// nats.go writes CR and LF as spaces, as net/http's HTTP/1 server does.
func sendable(vs []string) ([]string, bool) {
	for i, v := range vs {
		if !hasControl(v) {
			continue
		}
		// A copy: vs may be the handler's, which keeps it.
		out := make([]string, i, len(vs)-1)
		copy(out, vs[:i])
		for _, v := range vs[i+1:] {
			if !hasControl(v) {
				out = append(out, v)
			}
		}
		return out, len(out) > 0
	}
	return vs, true
}

func hasControl(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			return true
		}
	}
	return false
}

// suppress marks the headers that the handler set to nil as suppressed.
func suppress(h nats.Header) {
	for _, k := range suppressible {
		if v, ok := h[k]; ok && len(v) == 0 {
			h[k] = suppressed
		}
	}
}

// startStream sends the head with the first chunk, after which every chunk
// is a frame that the gateway acks once written to the client.
func (w *responseWriter) startStream() {
	w.acks = make(chan *nats.Msg, ackWindow+1)
	w.live.acks.Store(&w.acks)
	// The connection's own inbox prefix: an account may allow its
	// users to subscribe under theirs only (nats.CustomInboxPrefix).
	sub, err := w.s.nc.ChanSubscribe(w.s.nc.NewInbox(), w.acks)
	if err != nil {
		w.err = fmt.Errorf("stream response: %w", err)
		return
	}
	w.ackSub = sub
	w.streaming = true
	m := w.streamHead()
	// The head's headers may take more than the room a chunk leaves them:
	// the first part of the body is then smaller, and the rest follows.
	n := min(len(w.buf), w.chunk)
	if mp := int(w.s.nc.MaxPayload()); mp > 0 {
		n = max(0, min(n, mp-headerSize(m.Header)))
	}
	m.Data = w.buf[:n]
	w.live.sent(time.Now())
	if err := w.s.nc.PublishMsg(m); err != nil {
		w.err = fmt.Errorf("send response head: %w", err)
		w.s.asyncErr(fmt.Errorf("reply to %s: %w", w.reply, err))
		w.s.respondError(w.reply, http.StatusInternalServerError, w.unsent(m.Header, err))
		return
	}
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
}

// unsent is the error text for a response whose head h failed to go out
// with err: headers too large for a message are the handler's to mend,
// and only the sizes tell its author so.
func (w *responseWriter) unsent(h nats.Header, err error) string {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Sprintf("the response could not be sent: its headers take %d bytes, more than a NATS message holds (max_payload %d bytes)", headerSize(h), w.s.nc.MaxPayload())
	}
	return "the response could not be sent"
}

// headerSize is how many bytes h takes in a NATS message, as nats.go
// writes it.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// sendData sends data in frames the server takes now: its max_payload
// may have shrunk since the request came (a failover to a server with a
// smaller one), and a frame cut for the one before would be refused.
func (w *responseWriter) sendData(data []byte) {
	for w.err == nil && len(data) > 0 {
		n := min(len(data), w.frameSize())
		w.sendFrame(FrameData, data[:n], nil)
		data = data[n:]
	}
}

// frameSize is the most body a message of the response carries: what the
// server takes, and a share of the gateway's window that lets ackWindow
// frames travel at once.
func (w *responseWriter) frameSize() int {
	return min(w.s.chunkSize(), max(w.window/ackWindow, 1))
}

// unacked is how many data frames await their ack.
func (w *responseWriter) unacked() int { return int(w.live.unacked.Load()) }

func (w *responseWriter) sendFrame(kind string, data []byte, trailers http.Header) {
	for w.err == nil && (w.unacked() >= ackWindow || kind == FrameData && w.unacked() > 0 && w.unackedBytes+len(data) > w.window) {
		select {
		case a := <-w.acks:
			w.live.unacked.Add(-1)
			w.unackedBytes -= w.ackedSizes[w.oldest]
			w.oldest = (w.oldest + 1) % ackWindow
			if a.Header.Get(HeaderFrame) != FrameAck {
				w.err = fmt.Errorf("send response: client went away")
				w.over()
			}
		case <-w.ctx.Done():
			w.err = fmt.Errorf("send response: %w", context.Cause(w.ctx))
		}
	}
	if w.err != nil {
		return
	}
	h := make(nats.Header, len(trailers)+1)
	for k, v := range trailers {
		h[k] = v
	}
	h[HeaderFrame] = []string{kind}
	m := &nats.Msg{Subject: w.reply, Header: h, Data: data}
	if kind == FrameData {
		m.Reply = w.ackSub.Subject
		w.ackedSizes[(w.oldest+w.unacked())%ackWindow] = len(data)
		w.live.unacked.Add(1)
		w.unackedBytes += len(data)
	}
	w.live.sent(time.Now())
	if err := w.s.nc.PublishMsg(m); err != nil {
		w.err = fmt.Errorf("send response: %w", err)
	}
}

// end sends the end frame: the rest of the body and the trailers. Trailers
// that do not fit with the rest of the body let it go first, in a data
// frame. Too large for any message, they fail the response at once, as a
// head too large does, rather than leave the gateway waiting for an end
// until the route's timeout.
func (w *responseWriter) end(trailers http.Header) {
	if w.err != nil {
		return
	}
	data := w.buf
	room := headerSize(nats.Header(trailers)) + len(HeaderFrame+": "+FrameEnd+"\r\n")
	if mp := int(w.s.nc.MaxPayload()); mp > 0 && len(data) > 0 && len(data)+room > mp {
		w.sendData(data)
		data = nil
	}
	w.sendFrame(FrameEnd, data, trailers)
	if !errors.Is(w.err, nats.ErrMaxPayload) {
		return
	}
	w.s.asyncErr(fmt.Errorf("reply to %s: %w", w.reply, w.err))
	why := "the response's trailers could not be sent"
	if mp := w.s.nc.MaxPayload(); mp > 0 && int64(room) <= mp {
		// The trailers fit: the body's last part, cut for the max_payload
		// the request came with, does not fit the server's now (a
		// failover to one with a smaller max_payload).
		why = fmt.Sprintf("the response could not be sent: a frame with %d bytes of its body is larger than the server's max_payload (%d bytes)", len(w.buf), mp)
	}
	err := w.s.nc.PublishMsg(&nats.Msg{Subject: w.reply, Header: nats.Header{
		HeaderFrame:            {FrameEnd},
		HeaderServiceErrorCode: {"500"},
		HeaderServiceError:     {why},
	}})
	if err != nil {
		w.s.asyncErr(fmt.Errorf("reply to %s: %w", w.reply, err))
	}
}

// trailers collects the values of declared trailers, as net/http does:
// declared in the header as sent, set by the time the handler returns.
func (w *responseWriter) trailers() http.Header {
	var t http.Header
	for _, decl := range w.sent["Trailer"] {
		for name := range strings.SplitSeq(decl, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if v, ok := w.hdr[name]; ok && validToken(name) && !notHTTP(name) {
				if v, ok = sendable(v); !ok {
					continue
				}
				if t == nil {
					t = make(http.Header)
				}
				t[name] = v
			}
		}
	}
	for k, v := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validToken(name) && !notHTTP(name) {
			v, ok := sendable(v)
			if !ok {
				continue
			}
			if t == nil {
				t = make(http.Header)
			}
			t[http.CanonicalHeaderKey(name)] = v
		}
	}
	return t
}

// run calls the handler and completes the response; it returns the error
// text to count in the Micro stats, "" for a success.
func (w *responseWriter) run(r *http.Request) (errText string) {
	defer func() {
		if w.ackSub != nil {
			_ = w.ackSub.Unsubscribe()
		}
	}()
	returned := false
	defer func() {
		p := recover()
		if p == nil && returned {
			return
		}
		errText = fmt.Sprintf("panic: %v", p)
		if p == nil {
			// runtime.Goexit (t.FailNow in a handler): the response is
			// aborted, as net/http's server closes the connection.
			errText = errGoexit
		} else if p == http.ErrAbortHandler {
			errText = "handler aborted the response"
		} else {
			// As net/http's server logs it: the stats keep only the
			// last error's text. The request id is the one the client's
			// 500 and the gateway's access log name, so it finds this stack.
			id := ""
			if v := r.Header.Get("X-Request-Id"); v != "" {
				id = fmt.Sprintf(" (request id %q)", v)
			}
			w.s.asyncErr(fmt.Errorf("panic serving %s %s%s: %v\n%s", r.Method, r.URL.RequestURI(), id, p, debug.Stack()))
		}
		if !w.streaming {
			w.s.respondError(w.reply, http.StatusInternalServerError, "internal server error")
			return
		}
		w.sendFrame(FrameEnd, nil, http.Header{HeaderServiceErrorCode: {"500"}, HeaderServiceError: {errText}})
	}()
	w.s.h.ServeHTTP(w, r)
	returned = true
	if !w.streaming && errors.Is(w.ctx.Err(), context.DeadlineExceeded) {
		// Past Narun-Timeout the gateway has answered 504 and drops a late
		// reply, but another service calling over NATS may still wait: a
		// head sent now would pass for the handler's answer, an empty 200
		// from one that gave up at its deadline. It gets the gateway's 504.
		w.s.respondError(w.reply, http.StatusGatewayTimeout, "no reply within Narun-Timeout")
		return "request ended before the reply: " + context.Cause(w.ctx).Error()
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err.Error()
	}
	if w.written < w.declared && !w.head && w.bodyAllowed() {
		// The body is shorter than the length the head claims: sent as
		// is, the gateway would give the client a short body as whole
		// (a file truncated while served, say). A response aborted after
		// its head is what net/http's server gives the client instead.
		errText = fmt.Sprintf("handler wrote %d bytes of the %d its Content-Length declared", w.written, w.declared)
		if !w.streaming {
			w.startStream()
		}
		// What was written goes out before the end that aborts, which
		// the gateway does before writing that end's payload.
		if len(w.buf) > 0 {
			w.sendFrame(FrameData, w.buf, nil)
		}
		w.sendFrame(FrameEnd, nil, http.Header{HeaderServiceErrorCode: {"500"}, HeaderServiceError: {errText}})
		if w.err != nil {
			return w.err.Error()
		}
		return errText
	}
	tr := w.trailers()
	var m *nats.Msg
	if !w.streaming && tr == nil {
		m = w.finalHead()
		m.Data = w.buf
		// A head and a body that each fit in a message but not together
		// go streamed, the body after the head, rather than fail as a
		// reply too large.
		if mp := int(w.s.nc.MaxPayload()); mp > 0 && len(m.Data) > 0 && headerSize(m.Header)+len(m.Data) > mp {
			m = nil
		}
	}
	if m != nil {
		if err := w.s.nc.PublishMsg(m); err != nil {
			w.s.asyncErr(fmt.Errorf("reply to %s: %w", w.reply, err))
			// Headers too large for a message, say: the client gets a
			// 500 now rather than a 504 at the route's timeout.
			w.s.respondError(w.reply, http.StatusInternalServerError, w.unsent(m.Header, err))
			return err.Error()
		}
	} else {
		if !w.streaming {
			w.startStream()
		}
		w.end(tr)
		if w.err != nil {
			return w.err.Error()
		}
	}
	if err := w.ctx.Err(); err != nil && !(w.head && w.streaming) {
		// The gateway answered the client (504) or it went away: the
		// reply reached nobody, whatever the handler made of it. (A
		// flushed HEAD response is over once its head is out, and the
		// gateway says so.)
		return "request ended before the reply: " + context.Cause(w.ctx).Error()
	}
	if w.status >= 500 {
		return "HTTP " + strconv.Itoa(w.status)
	}
	return ""
}
