package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// h2Settings is what an HTTP/2 server announces as a connection opens.
type h2Settings struct {
	maxStreams   uint32 // SETTINGS_MAX_CONCURRENT_STREAMS
	streamWindow uint32 // SETTINGS_INITIAL_WINDOW_SIZE: a stream's receive window
	connWindow   int64  // the connection's receive window
}

// readH2Settings speaks HTTP/2 on c (prior knowledge, or h2 chosen by ALPN)
// and reads what the server announces until it answers a PING sent with the
// preface. Go's server queues its SETTINGS and the WINDOW_UPDATE that widens
// the connection's window before it reads the preface, so they come before
// the PING's answer; its SETTINGS ack jumps that queue.
func readH2Settings(c net.Conn) (h2Settings, error) {
	// The values a server that announces nothing has (RFC 9113, 6.5.2).
	s := h2Settings{maxStreams: math.MaxUint32, streamWindow: 65535, connWindow: 65535}
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return s, err
	}
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	const emptySettings = "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
	const ping = "\x00\x00\x08\x06\x00\x00\x00\x00\x00" + "narun h2"
	if _, err := io.WriteString(c, preface+emptySettings+ping); err != nil {
		return s, fmt.Errorf("writing the preface: %w", err)
	}
	for {
		var head [9]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return s, fmt.Errorf("reading a frame head: %w", err)
		}
		payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return s, fmt.Errorf("reading a frame payload: %w", err)
		}
		typ, ack, stream := head[3], head[4]&1 != 0, binary.BigEndian.Uint32(head[5:])&math.MaxInt32
		switch {
		case typ == 0x6 && ack:
			return s, nil
		case typ == 0x4 && !ack:
			for p := payload; len(p) >= 6; p = p[6:] {
				switch v := binary.BigEndian.Uint32(p[2:]); binary.BigEndian.Uint16(p) {
				case 0x3:
					s.maxStreams = v
				case 0x4:
					s.streamWindow = v
				}
			}
		case typ == 0x8 && stream == 0:
			s.connWindow += int64(binary.BigEndian.Uint32(payload) & math.MaxInt32)
		}
	}
}

// TestHTTP2ConnectionWindowCoversEveryStream reads the flow control windows
// the HTTP/2 listeners announce: the connection's must hold every stream's
// whole window at once, or streams whose bodies wait for their services
// fill it and hold up the other requests of their connection.
func TestHTTP2ConnectionWindowCoversEveryStream(t *testing.T) {
	t.Parallel()
	_, listeners := h2Listeners(t, nil)
	for _, listener := range listeners {
		t.Run(listener.name, func(t *testing.T) {
			c := listener.conn(t)
			s, err := readH2Settings(c)
			if err != nil {
				t.Fatal(err)
			}
			if all := int64(s.maxStreams) * int64(s.streamWindow); s.connWindow < all {
				t.Errorf("connection window %d bytes, less than its %d streams' windows of %d bytes (%d): uploads whose services do not read them can fill it and hold the connection's other requests",
					s.connWindow, s.maxStreams, s.streamWindow, all)
			}
		})
	}
}

// h2Listener dials one listener of a gateway in HTTP/2.
type h2Listener struct {
	name string
	dial func() (net.Conn, error)
}

// conn dials l, closed at the end of the test.
func (l h2Listener) conn(t *testing.T) net.Conn {
	t.Helper()
	c, err := l.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// h2Listeners runs a gateway with plain and TLS listeners, prepared by
// prepare when not nil, and returns it with a dialer of HTTP/2 to each:
// h2c, and h2 chosen by ALPN over TLS.
func h2Listeners(t *testing.T, prepare func(*Gateway)) (*running, []h2Listener) {
	t.Helper()
	cfg := gwConfig(config.Route{Path: "/", Service: "none"})
	pool := withTLS(t, &cfg)
	r := startRunPrepared(t, Options{Config: cfg, Conn: natstest.Connect(t, natstest.Start(t))}, prepare)
	return r, []h2Listener{
		{"h2c", func() (net.Conn, error) { return net.Dial("tcp", r.addrs["http"]) }},
		{"h2 over TLS", func() (net.Conn, error) {
			c, err := tls.Dial("tcp", r.addrs["https"], &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
			if err == nil && c.ConnectionState().NegotiatedProtocol != "h2" {
				c.Close()
				return nil, fmt.Errorf("ALPN chose %q, not h2", c.ConnectionState().NegotiatedProtocol)
			}
			return c, err
		}},
	}
}

// withTLS gives cfg a certificate pair made for the test, and returns the
// pool that trusts it.
func withTLS(t *testing.T, cfg *config.Gateway) *x509.CertPool {
	t.Helper()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := testutil.CertPair(t, certPath, keyPath, "gateway")
	cfg.TLS = config.GatewayTLS{Cert: certPath, Key: keyPath}
	return pool
}

// countingConn counts the bytes a client writes: with bodies of one
// request only, what its stream's flow control let through.
type countingConn struct {
	net.Conn
	wrote *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.wrote.Add(int64(n))
	return n, err
}

// TestSlowUploadDoesNotHoldItsConnection sends, over one HTTP/2 connection,
// an upload to a service that does not read it until told to, and then a
// small request with a body to another service: the small one must be
// answered while the upload is still held, not wait behind its unread
// bytes in the connection's flow control window.
func TestSlowUploadDoesNotHoldItsConnection(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	cfg := gwConfig(
		config.Route{Path: "/held/", Service: "held", Timeout: config.Duration(time.Minute)},
		config.Route{Path: "/quick/", Service: "quick", Timeout: config.Duration(time.Minute)},
	)
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	sizeOf := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	})
	release := make(chan struct{})
	serveOn(t, natstest.Connect(t, srv), consumerConfig("held"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		sizeOf(w, r)
	}))
	letRead := sync.OnceFunc(func() { close(release) })
	// Before the service's cleanup, which waits for its handlers.
	t.Cleanup(letRead)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("quick"), sizeOf)

	s, err := func() (h2Settings, error) {
		c, err := net.Dial("tcp", r.addrs["http"])
		if err != nil {
			return h2Settings{}, err
		}
		defer c.Close()
		return readH2Settings(c)
	}()
	if err != nil {
		t.Fatal(err)
	}

	var dials atomic.Int32
	var wrote atomic.Int64
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return countingConn{c, &wrote}, nil
	}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const uploadSize = 4 << 20
	type result struct {
		status int
		body   string
		err    error
	}
	post := func(path string, body []byte) result {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.addrs["http"]+path, bytes.NewReader(body))
		if err != nil {
			return result{err: err}
		}
		resp, err := client.Do(req)
		if err != nil {
			return result{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			err = fmt.Errorf("answered over %s, not HTTP/2", resp.Proto)
		}
		return result{resp.StatusCode, string(b), err}
	}
	upload := make(chan result, 1)
	go func() { upload <- post("/held/up", make([]byte, uploadSize)) }()

	// The gateway has read the first chunk to send it with the request's
	// head, and the service reads no more: what the client sends beyond it
	// waits in the gateway, until the stream's window is full.
	full := int64(r.gw.chunkSize()) + int64(s.streamWindow)
	testutil.Eventually(t, 20*time.Second, "the upload filling its stream's window", func() bool {
		return wrote.Load() >= full
	})

	// Larger than what is left of the stream's window once its frames'
	// heads are counted as body, so that it cannot squeeze in with the
	// connection's window full.
	const small = 16 << 10
	got := post("/quick/q", make([]byte, small))
	if got.err != nil || got.status != http.StatusOK || got.body != strconv.Itoa(small) {
		t.Fatalf("small request on the connection of a held upload: %d %q, %v; want 200 %q while the upload is held",
			got.status, got.body, got.err, strconv.Itoa(small))
	}
	select {
	case u := <-upload:
		t.Fatalf("upload answered before its service was let read it: %d %q, %v", u.status, u.body, u.err)
	default:
	}

	letRead()
	if u := <-upload; u.err != nil || u.status != http.StatusOK || u.body != strconv.Itoa(uploadSize) {
		t.Errorf("upload once released: %d %q, %v; want 200 %q", u.status, u.body, u.err, strconv.Itoa(uploadSize))
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("client opened %d connections; the test needs both requests on one", n)
	}
}

// hpackLit encodes header fields, name and value after name and value, as
// HPACK literals without indexing, names and values as they are.
func hpackLit(fields ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(fields); i += 2 {
		b = append(b, 0x00, byte(len(fields[i])))
		b = append(append(b, fields[i]...), byte(len(fields[i+1])))
		b = append(b, fields[i+1]...)
	}
	return b
}

func h2frame(typ, flags byte, stream uint32, payload []byte) []byte {
	h := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[5:], stream)
	return append(h, payload...)
}

// h2Get sends one request of fields, without a body, over a new h2c
// connection to e, and returns the status of its response. Go's server
// sends :status first, as an indexed field of HPACK's static table when
// it is one of those statuses.
func h2Get(t *testing.T, e *env, fields ...string) int {
	t.Helper()
	return h2Send(t, e, nil, fields...)
}

// h2Send is h2Get with a body: sent in a DATA frame that ends the stream,
// after a HEADERS frame that does not, when body is not nil.
func h2Send(t *testing.T, e *env, body []byte, fields ...string) int {
	t.Helper()
	c, err := net.Dial("tcp", e.hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	const endStreamAndHeaders = 0x5
	out := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2frame(0x4, 0, 0, nil)...)
	if body == nil {
		out = append(out, h2frame(0x1, endStreamAndHeaders, 1, hpackLit(fields...))...)
	} else {
		const endHeaders, endStream = 0x4, 0x1
		out = append(out, h2frame(0x1, endHeaders, 1, hpackLit(fields...))...)
		out = append(out, h2frame(0x0, endStream, 1, body)...)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	for {
		var head [9]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			t.Fatalf("reading a frame head: %v", err)
		}
		payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			t.Fatalf("reading a frame payload: %v", err)
		}
		typ, flags, stream := head[3], head[4], binary.BigEndian.Uint32(head[5:])&math.MaxInt32
		switch {
		case typ == 0x4 && flags&1 == 0:
			if _, err := c.Write(h2frame(0x4, 1, 0, nil)); err != nil {
				t.Fatal(err)
			}
		case typ == 0x1 && stream == 1:
			static := map[byte]int{0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}
			if len(payload) == 0 || static[payload[0]] == 0 {
				t.Fatalf("response head % x does not start with an indexed :status", payload)
			}
			return static[payload[0]]
		}
	}
}

// An HTTP/2 request names its host in :authority; a host field beside it
// reaches net/http's handler in the header. The service learns the host
// from Narun-Host and X-Forwarded-Host alone, never from a Host header of
// the client's, and a request whose host field names another host than
// its :authority is malformed (RFC 9113 8.3.1): refused, not routed by one
// and read by the service as the other.
func TestHTTP2HostFieldNotForwarded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Host: "public.example.com", Path: "/", Service: "public"}))
	e.hs = startH2C(t, e)
	nc := natsConn(t, e)
	heads := make(chan nats.Header, 2)
	if _, err := nc.Subscribe("public", func(m *nats.Msg) {
		heads <- m.Header
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	req := []string{":method", "GET", ":scheme", "http", ":authority", "public.example.com", ":path", "/"}

	if got := h2Get(t, e, append(req, "host", "Public.Example.com")...); got != 200 {
		t.Fatalf("a host field that names the :authority: status %d, want 200", got)
	}
	h := <-heads
	if v, ok := h["Host"]; ok {
		t.Errorf("the client's host field reached the service as Host %q, want no Host header", v)
	}
	if got := h.Get("Narun-Host"); got != "public.example.com" {
		t.Errorf("Narun-Host %q, want the :authority", got)
	}

	if got := h2Get(t, e, append(req, "host", "admin.internal")...); got != http.StatusBadRequest {
		t.Errorf("a host field that names another host than the :authority: status %d, want 400", got)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-heads:
		t.Errorf("the request with two hosts reached the service, Host %q", h["Host"])
	default:
	}
}

// An HTTP/2 request's content-length is not checked by net/http against a
// body that the HEADERS frame ends (END_STREAM), nor for several values
// beyond the first: a service read a Content-Length of 7 for an empty
// body, or two lengths at once, where HTTP/1.1's server refuses both. The
// gateway refuses such a request (RFC 9113 8.1.1, RFC 9110 8.6: malformed)
// and sends a service one value, which is the body's length.
func TestHTTP2ContentLengthMatchesBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "cl"}))
	e.hs = startH2C(t, e)
	nc := natsConn(t, e)
	heads := make(chan *nats.Msg, 8)
	if _, err := nc.Subscribe("cl", func(m *nats.Msg) {
		heads <- m
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	req := []string{":method", "POST", ":scheme", "http", ":authority", "a.example", ":path", "/"}
	for _, c := range []struct {
		name   string
		body   []byte
		fields []string
		want   int
		cl     []string
	}{
		{"a length for no body", nil, []string{"content-length", "7"}, 400, nil},
		{"two lengths, no body", nil, []string{"content-length", "0", "content-length", "7"}, 400, nil},
		{"no number, no body", nil, []string{"content-length", "x"}, 400, nil},
		{"two lengths, the first the body's", []byte("hello"), []string{"content-length", "5", "content-length", "10"}, 400, nil},
		{"zero, no body", nil, []string{"content-length", "0"}, 200, []string{"0"}},
		{"the same length twice", []byte("hello"), []string{"content-length", "5", "content-length", "5"}, 200, []string{"5"}},
		{"the body's length", []byte("hello"), []string{"content-length", "5"}, 200, []string{"5"}},
	} {
		got := h2Send(t, e, c.body, append(req, c.fields...)...)
		if got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-heads:
			if c.want != 200 {
				t.Errorf("%s: the service got the request, Content-Length %q, body %q", c.name, m.Header["Content-Length"], m.Data)
			} else if !slices.Equal(m.Header["Content-Length"], c.cl) || string(m.Data) != string(c.body) {
				t.Errorf("%s: the service got Content-Length %q, body %q; want %q, %q", c.name, m.Header["Content-Length"], m.Data, c.cl, c.body)
			}
		default:
			if c.want == 200 {
				t.Errorf("%s: the service got no request", c.name)
			}
		}
	}
}
