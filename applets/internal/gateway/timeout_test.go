package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// dialRaw opens a plain TCP connection to the test server, for clients that
// misbehave in ways net/http's client never would.
func dialRaw(t *testing.T, e *env) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sendRaw sends request, as it is, on a new connection whose reads and
// writes fail after 10 s, and returns the connection to read the answer.
func sendRaw(t *testing.T, e *env, request string) net.Conn {
	t.Helper()
	c := dialRaw(t, e)
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	return c
}

// rawExchange sends request, as it is, on a new connection and returns the
// response with its body read whole.
func rawExchange(t *testing.T, e *env, request string) (*http.Response, string) {
	t.Helper()
	c := dialRaw(t, e)
	_, _ = io.WriteString(c, request)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response to %q: %v", request, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestStalledBodyTimesOut sends part of a request body and then nothing:
// the route's timeout, or body_idle_timeout long before it, must end the
// exchange with a 408 that names the bound, close the connection (the rest
// of the body must not be read as a next request), tell a service that
// waits for the body and let the handler go, whether the gateway waits for
// the part that travels with the request head, for a chunk the service
// pulled, or for more of a body of unknown length (where net/http's
// cancelling the request as the read fails made it look like a client
// gone: a 200 with no body, or a 504, and the connection kept).
func TestStalledBodyTimesOut(t *testing.T) {
	t.Parallel()
	for _, bound := range []struct {
		name        string
		route, idle time.Duration
		named       string
	}{
		// Long enough for the head and its first chunk to reach the
		// service on a loaded machine (race detector, parallel tests): a
		// request that arrives after its deadline is dropped unhandled,
		// and the pull case would test nothing.
		{"route timeout", 2 * time.Second, 0, "within 2s"},
		{"body_idle_timeout", 30 * time.Second, time.Second, "for 1s"},
	} {
		t.Run(bound.name, func(t *testing.T) {
			t.Parallel()
			cfg := gwConfig(config.Route{Path: "/", Service: "upload", Timeout: config.Duration(bound.route)})
			cfg.BodyIdleTimeout = config.Duration(bound.idle)
			stalledBodies(t, newEnv(t, cfg), bound.named)
		})
	}
}

// stalledBodies runs TestStalledBodyTimesOut's cases against e, whose
// service "upload" reads the body, expecting 408s whose body has named.
func stalledBodies(t *testing.T, e *env, named string) {
	readErr := make(chan error, 1)
	e.serve(t, "upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		select {
		case readErr <- err:
		default:
		}
	}))
	for _, tc := range []struct {
		name   string
		header string
		sent   []byte
		pulled bool
	}{
		{"before the head", "Content-Length: 100000", make([]byte, 5), false},
		{"during a pull", "Content-Length: 3145728", make([]byte, 1<<20+100), true},
		{"unknown length", "Transfer-Encoding: chunked", []byte("5\r\nhello\r\n"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e)
			fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\n%s\r\n\r\n", tc.header)
			if _, err := c.Write(tc.sent); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), named) || !resp.Close {
				t.Errorf("got %d %q, Connection %q; want 408 naming %q, and close", resp.StatusCode, body, resp.Header.Get("Connection"), named)
			}
			if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("connection still open after the 408 (%v)", err)
			}
			if tc.pulled {
				select {
				case err := <-readErr:
					if err == nil {
						t.Error("the service read a complete body")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the service's read of the body neither failed nor ended 10s after the 408")
				}
			}
			testutil.Eventually(t, 10*time.Second, "no request in flight", func() bool {
				return e.gw.metrics.inflight.Load() == 0
			})
		})
	}
}

// TestStalledReaderIsCut streams a response larger than the socket buffers
// to a client that stops reading: once the route timeout passes, the gateway
// must give up the write and the connection.
func TestStalledReaderIsCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "big", Timeout: config.Duration(time.Second)}))
	const size = 32 << 20
	// The body is made only once the client has the head: a flushed head
	// waits in the service's NATS connection for its writer to run, and
	// on a loaded machine making the large body first took it past the
	// route's timeout (a 504 where the test wants a stalled reader).
	headRead := make(chan struct{})
	e.serve(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("start"))
		w.(http.Flusher).Flush()
		select {
		case <-headRead:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(make([]byte, size))
	}))
	c, closed := e.dialCountingCloses(t)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("status line %q, %v", line, err)
	}
	close(headRead)
	testutil.Eventually(t, 15*time.Second, "the gateway closes the stalled connection", func() bool {
		return closed.Load() == 1 && e.gw.metrics.inflight.Load() == 0
	})
}

// TestTimeoutHeaderIsTimeLeft sends a request head, then its body a while
// later: the request head published to the service must count that while
// out of Narun-Timeout, which runs from when the gateway got the request.
func TestTimeoutHeaderIsTimeLeft(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "left", Timeout: config.Duration(5 * time.Second)}))
	nc := natsConn(t, e)
	got := make(chan string, 1)
	if _, err := nc.Subscribe("left", func(m *nats.Msg) {
		got <- m.Header.Get("Narun-Timeout")
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, e)
	fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
	// The delay runs from when the gateway has the request, not from
	// the write: on a loaded machine its handler may start later.
	testutil.Eventually(t, 10*time.Second, "the gateway handling the request", func() bool { return e.gw.metrics.inflight.Load() == 1 })
	const delay = 300 * time.Millisecond
	time.Sleep(delay)
	fmt.Fprintf(c, "abc")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ms, err := strconv.Atoi(<-got)
	if err != nil || ms > 5000-int(delay.Milliseconds()) || ms <= 0 {
		t.Errorf("Narun-Timeout %d (%v) for a head published %v after the request, want at most %d", ms, err, delay, 5000-delay.Milliseconds())
	}
}

func TestTimeLeft(t *testing.T) {
	rt, err := compile(config.Route{Path: "/", Service: "s", Timeout: config.Duration(5 * time.Second)}, "test", time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		elapsed time.Duration
		want    string
	}{
		{0, "5000"},
		{999 * time.Microsecond, "5000"},
		{time.Millisecond, "4999"},
		{1234567 * time.Microsecond, "3766"},
		{5 * time.Second, "0"},
		{6 * time.Second, "0"},
	} {
		if got := timeLeft(rt, rt.timeout, tc.elapsed); got != tc.want {
			t.Errorf("timeLeft after %v = %q, want %q", tc.elapsed, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = timeLeft(rt, rt.timeout, 500*time.Microsecond) }); n != 0 {
		t.Errorf("timeLeft within the first millisecond allocates %v times", n)
	}
	if got := timeLeft(rt, 250*time.Millisecond, 0); got != "250" {
		t.Errorf("timeLeft of a gRPC deadline of 250ms = %q, want 250", got)
	}
}

// TestStalledUploadHTTP2 is TestStalledBodyTimesOut over HTTP/2, where
// the 408 ends the request's stream only: the connection goes on serving
// the client's other requests.
func TestStalledUploadHTTP2(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "upload", Timeout: config.Duration(300 * time.Millisecond)}))
	e.serve(t, "upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "h2c", true: "tls"}[useTLS], func(t *testing.T) {
			var conns atomic.Int64
			hs := httptest.NewUnstartedServer(e.gw.Handler())
			hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			tr := &http.Transport{Protocols: new(http.Protocols)}
			if useTLS {
				hs.EnableHTTP2 = true
				hs.StartTLS()
				tr.TLSClientConfig = hs.Client().Transport.(*http.Transport).TLSClientConfig
				tr.Protocols.SetHTTP2(true)
			} else {
				hs.Config.Protocols = new(http.Protocols)
				hs.Config.Protocols.SetUnencryptedHTTP2(true)
				hs.Start()
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			t.Cleanup(hs.Close)
			t.Cleanup(tr.CloseIdleConnections)

			stalled, pw := io.Pipe()
			t.Cleanup(func() { _ = pw.Close() })
			go func() { _, _ = pw.Write(make([]byte, 5)) }()
			req, _ := http.NewRequest("POST", hs.URL+"/x", stalled)
			req.ContentLength = 100_000
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("got %s %d %q, %v; want a whole HTTP/2 408", resp.Proto, resp.StatusCode, body, err)
			}
			req, _ = http.NewRequest("POST", hs.URL+"/x", strings.NewReader("next"))
			resp, err = tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || conns.Load() != 1 {
				t.Errorf("next request: %d on connection %d, want 200 on the first", resp.StatusCode, conns.Load())
			}
		})
	}
}

// TestStalledBodyIdleHTTP2 is TestStalledBodyTimesOut over HTTP/2, where the
// 408 ends the request's stream only.
func TestStalledBodyIdleHTTP2(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "idle2", Timeout: config.Duration(30 * time.Second)})
	// Long enough that a loaded machine (race detector, parallel tests)
	// does not stall what the client sent at once.
	cfg.BodyIdleTimeout = config.Duration(time.Second)
	e := newEnv(t, cfg)
	e.serve(t, "idle2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	tr := h2cClient(t, e)
	for _, length := range []int64{100_000, -1} {
		stalled, pw := io.Pipe()
		t.Cleanup(func() { _ = pw.Close() })
		go func() { _, _ = pw.Write(make([]byte, 5)) }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "POST", e.hs.URL+"/x", stalled)
		req.ContentLength = length
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("length %d: no answer to a stalled body: %v", length, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "for 1s") {
			t.Errorf("length %d: got %s %d %q, %v; want a whole HTTP/2 408 naming body_idle_timeout", length, resp.Proto, resp.StatusCode, body, err)
		}
	}
}

// TestSlowServiceIsNoStalledBody has a service wait between its reads of a
// body the client sent at once, longer than body_idle_timeout: the bound
// is on the client, and only while the gateway waits for it.
func TestSlowServiceIsNoStalledBody(t *testing.T) {
	t.Parallel()
	// Long enough that a loaded machine (race detector, parallel tests)
	// does not stall the client's sending.
	const idle = time.Second
	cfg := gwConfig(config.Route{Path: "/", Service: "slowpull", Timeout: config.Duration(time.Minute)})
	cfg.BodyIdleTimeout = config.Duration(idle)
	e := newEnv(t, cfg)
	e.serve(t, "slowpull", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		first := make([]byte, 1000)
		n, err := io.ReadFull(r.Body, first)
		h.Write(first[:n])
		if err == nil {
			// The slowness under test, not a synchronisation: the next
			// pull comes well after body_idle_timeout.
			time.Sleep(2 * idle)
			_, err = io.Copy(h, r.Body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, hex.EncodeToString(h.Sum(nil)))
	}))
	data := randomBytes(3<<20, 11)
	want := digest(data)
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	h2 := h2cClient(t, e)
	// One at a time: over HTTP/2 a body its service has not pulled yet
	// holds up the others on the connection (docs/GATEWAY.md, "Limits").
	for _, tc := range []struct {
		name   string
		tr     *http.Transport
		length bool
	}{{"HTTP/1.1", h1, true}, {"HTTP/1.1 chunked", h1, false}, {"HTTP/2", h2, true}, {"HTTP/2 unknown length", h2, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(data)
			if !tc.length {
				body = io.MultiReader(body)
			}
			req, _ := http.NewRequest("POST", "http://"+e.hs.Listener.Addr().String()+"/x", body)
			resp, err := tc.tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(got) != want {
				t.Errorf("got %d %.80q, want 200 with sha256 %s", resp.StatusCode, got, want)
			}
		})
	}
}

// TestTimeoutAfterTimedBody has a service that never answers a request
// whose body body_idle_timeout bounded: once the body is read, net/http
// watches the connection for the client hanging up with no deadline, and
// the bound must not set one that would end that watch at the route's
// timeout as if the client had (an empty 200 rather than the 504).
func TestTimeoutAfterTimedBody(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "mute", Timeout: config.Duration(300 * time.Millisecond)})
	cfg.BodyIdleTimeout = config.Duration(100 * time.Millisecond)
	e := newEnv(t, cfg)
	e.serve(t, "mute", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	for range 3 {
		req, _ := http.NewRequest("POST", e.hs.URL+"/x", strings.NewReader("small body"))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q, want 504", resp.StatusCode, body)
		}
	}
}

// TestStalledReaderOfErrorsIsCut sends request after request for a path
// no route serves, on one connection, and reads none of the answers: the
// gateway's own answers (404 here) must not wait for such a client for
// ever, or a few of them would hold every place of max_connections, as
// the route's timeout keeps a routed request from doing.
func TestStalledReaderOfErrorsIsCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig())
	c, closed := e.dialCountingCloses(t)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	// Each 404 names the path: long ones fill the socket buffers with few
	// requests. The writer stops when the gateway stops reading (it waits
	// to write) or closes the connection.
	req := []byte("GET /" + strings.Repeat("x", 16<<10) + " HTTP/1.1\r\nHost: a\r\n\r\n")
	go func() {
		for {
			if _, err := c.Write(req); err != nil {
				return
			}
		}
	}()
	testutil.Eventually(t, 15*time.Second, "the gateway closes the connection that reads none of its answers", func() bool {
		return closed.Load() == 1 && e.gw.metrics.inflight.Load() == 0
	})
}

// TestUnsentBodyOfErrorsIsCut announces a body with a request for a path
// no route serves, and never sends it: net/http reads what is left of a
// small body, before the answer and after it, and the gateway must bound
// that read as it bounds a routed request's body, or the connection is
// held for ever.
func TestUnsentBodyOfErrorsIsCut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig())
	c, closed := e.dialCountingCloses(t)
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	// A client that sends its body keeps its connection; the one after it
	// does not send it.
	for _, body := range []string{"0123456789", ""} {
		fmt.Fprintf(c, "POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n%s", body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("body %q: no answer: %v", body, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Close != (body == "") {
			t.Errorf("body %q: status %d, closing %v; want 404, closing only without the body", body, resp.StatusCode, resp.Close)
		}
	}
	testutil.Eventually(t, 15*time.Second, "the gateway closes the connection whose body never came", func() bool {
		return closed.Load() == 1 && e.gw.metrics.inflight.Load() == 0
	})
}

// TestServerOptionsIsBounded sends an OPTIONS *, a question about the
// server that no service sees, announcing a body it never sends: the
// answer is bounded as the gateway's others are, where net/http's own
// handler for it waited for the body for ever.
func TestServerOptionsIsBounded(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	r := startRun(t, natstest.Connect(t, srv), gwConfig(), "")
	c, err := net.Dial("tcp", r.addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	for _, body := range []string{"0123456789", ""} {
		fmt.Fprintf(c, "OPTIONS * HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n%s", body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("body %q: no answer: %v", body, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(got) != 0 || resp.ContentLength != 0 || resp.Close != (body == "") {
			t.Errorf("body %q: %d %q (length %d), closing %v; want 200, empty, closing only without the body", body, resp.StatusCode, got, resp.ContentLength, resp.Close)
		}
	}
	testutil.Eventually(t, 15*time.Second, "the gateway closes the connection whose body never came", func() bool {
		return r.gw.conns.count() == 0
	})
}

// TestStalledReaderOfErrorsIsCutHTTP2 is TestStalledReaderOfErrorsIsCut
// over HTTP/2: the client reads no answer, so its flow control window
// stays shut, and the gateway's answers wait to be sent; each must give
// up at its bound and end its stream, rather than hold it for ever.
func TestStalledReaderOfErrorsIsCutHTTP2(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig())
	tr := h2cClient(t, e)
	tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10}
	// Each 404 names its path: four of these fill the connection's window.
	path := "/" + strings.Repeat("x", 16<<10)
	var bodies []io.ReadCloser
	for range 8 {
		req, err := http.NewRequest("GET", e.hs.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, resp.Body)
	}
	testutil.Eventually(t, 15*time.Second, "the gateway's answers that cannot be sent give up", func() bool {
		return e.gw.metrics.inflight.Load() == 0
	})
	for _, b := range bodies {
		b.Close()
	}
}

// dialCountingCloses serves the gateway on a server that counts the
// connections it closed, and dials it: the tests of a stalled client
// wait for the gateway to close that client's connection.
func (e *env) dialCountingCloses(t *testing.T) (net.Conn, *atomic.Int64) {
	t.Helper()
	closed := new(atomic.Int64)
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	hs.Start()
	t.Cleanup(hs.Close)
	c, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, closed
}

// floodEvents is a service that streams events until a write fails, as an
// SSE feed that has always more to say: only a client that reads ends it,
// or the gateway giving up on one that does not. ended gets the error.
func floodEvents(ended chan<- error) http.Handler {
	event := []byte("data: " + strings.Repeat("x", 16<<10) + "\n\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for {
			if _, err := w.Write(event); err != nil {
				ended <- err
				return
			}
			w.(http.Flusher).Flush()
			if err := r.Context().Err(); err != nil {
				ended <- err
				return
			}
		}
	})
}

// TestStalledStreamReaderIsCut has a client stop reading a stream whose
// route's timeout is far off: a write that makes no progress for
// body_idle_timeout must end the exchange, and with it the service's
// stream, as nginx's send_timeout does, rather than hold both until the
// route's timeout. Over HTTP/1.1 the connection closes; over HTTP/2 the
// stream is reset, and the client does not take the body for whole.
func TestStalledStreamReaderIsCut(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "flood", Timeout: config.Duration(10 * time.Minute)})
	// Long enough that a loaded machine does not stall a client that reads.
	cfg.BodyIdleTimeout = config.Duration(time.Second)
	t.Run("HTTP/1.1", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cfg)
		ended := make(chan error, 1)
		e.serve(t, "flood", floodEvents(ended))
		c, closed := e.dialCountingCloses(t)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("status line %q, %v", line, err)
		}
		testutil.Eventually(t, 20*time.Second, "the gateway gives up the stalled stream and its connection", func() bool {
			return closed.Load() == 1 && e.gw.metrics.inflight.Load() == 0
		})
		testutil.Eventually(t, 10*time.Second, "the service's stream ends", func() bool { return len(ended) == 1 })
	})
	t.Run("HTTP/2", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cfg)
		ended := make(chan error, 1)
		e.serve(t, "flood", floodEvents(ended))
		tr := h2cClient(t, e)
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 64 << 10}
		req, _ := http.NewRequest("GET", e.hs.URL+"/events", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		testutil.Eventually(t, 20*time.Second, "the gateway gives up the stalled stream", func() bool {
			return e.gw.metrics.inflight.Load() == 0
		})
		testutil.Eventually(t, 10*time.Second, "the service's stream ends", func() bool { return len(ended) == 1 })
		if _, err := io.Copy(io.Discard, resp.Body); err == nil {
			t.Errorf("the client read the cut stream to a clean end")
		}
	})
}

// TestStreamPauseIsNoStalledReader has a service pause between events
// longer than body_idle_timeout, with a client that reads, after the head
// and after a data frame, each with its own return of the exchange's
// bound: the bound is on a write the client does not take, not on the time
// between writes (over HTTP/2 a stream's write deadline resets the stream
// when it passes, whether or not a write waits).
func TestStreamPauseIsNoStalledReader(t *testing.T) {
	t.Parallel()
	const idle = 500 * time.Millisecond
	cfg := gwConfig(config.Route{Path: "/", Service: "pause", Timeout: config.Duration(time.Minute)})
	cfg.BodyIdleTimeout = config.Duration(idle)
	e := newEnv(t, cfg)
	seen := make(chan struct{}, 1)
	e.serve(t, "pause", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i < 3; i++ {
			// The first event goes out with the head, the second in a
			// data frame.
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-seen:
			case <-r.Context().Done():
				return
			}
			// The pause the test is about, not a wait for anything.
			select {
			case <-time.After(2 * idle):
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "data: 3\n\n")
	}))
	h1 := http.DefaultTransport
	h2 := h2cClient(t, e)
	for name, rt := range map[string]http.RoundTripper{"HTTP/1.1": h1, "HTTP/2": h2} {
		req, _ := http.NewRequest("GET", e.hs.URL+"/events", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		br := bufio.NewReader(resp.Body)
		for i := 1; i < 3; i++ {
			if event, err := br.ReadString('\n'); event != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("%s: event %d %q, %v", name, i, event, err)
			}
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatalf("%s: the end of event %d: %v", name, i, err)
			}
			seen <- struct{}{}
		}
		rest, err := io.ReadAll(br)
		resp.Body.Close()
		if err != nil || string(rest) != "data: 3\n\n" {
			t.Errorf("%s: after the pauses %q, %v; want the last event and a clean end", name, rest, err)
		}
	}
}

// TestFailedFlushIsNoAck has a client go away (a reset) in the middle of a
// stream, and the service send a data frame after: the write of its small
// payload lands in net/http's buffer and fails only at the flush, which
// must end the exchange at once, answering the frame with cancel and
// cancelling the exchange, never acking a frame the client did not get.
// The request announces a body the client never sends (Expect:
// 100-continue), so that net/http does not read the connection: the
// failed flush, not a read that sees the reset, is what tells the gateway.
func TestFailedFlushIsNoAck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "gone", Timeout: config.Duration(10 * time.Minute)}))
	nc := natsConn(t, e)
	replies := make(chan string, 1)
	if _, err := nc.Subscribe("gone", func(m *nats.Msg) {
		head := &nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}}, Data: []byte("first\n")}
		if err := nc.PublishMsg(head); err == nil {
			replies <- m.Reply
		}
	}); err != nil {
		t.Fatal(err)
	}
	cancels, err := nc.SubscribeSync(consumer.CancelSubject("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, e)
	fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 4<<20)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []int{http.StatusContinue, http.StatusOK} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("got %v, %v; want %d", resp, err, want)
		}
		if want == http.StatusOK {
			if line, err := bufio.NewReader(resp.Body).ReadString('\n'); line != "first\n" {
				t.Fatalf("first part %q, %v", line, err)
			}
		}
	}
	reply := <-replies
	// A reset rather than a close: the gateway's next write fails at once.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	answer, err := nc.RequestMsg(&nats.Msg{Subject: reply, Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte("second\n")}, 10*time.Second)
	if err != nil {
		t.Fatalf("data frame after the client left: %v", err)
	}
	if f := answer.Header.Get("Narun-Frame"); f != "cancel" {
		t.Errorf("data frame the client could not get answered with %q, want cancel", f)
	}
	m, err := cancels.NextMsg(10 * time.Second)
	if err != nil || string(m.Data) != reply {
		t.Errorf("cancel of the exchange: %v, %v; want %q", m, err, reply)
	}
	// Counted as any client gone, not under the status the service sent.
	line := countedLine(t, e, "/")
	if !strings.Contains(line, `code="499"`) {
		t.Errorf("%s; want code 499, a client gone", line)
	}
}

// pipeListener hands a server the far ends of net.Pipe connections, which
// have no buffer: a write waits until the client reads it, so a client
// that reads nothing stalls the server's first write, whatever the sizes
// of socket buffers would have been.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// dialPipe serves e's gateway over HTTP/1 on a pipeListener, and returns
// the client's end of a connection to it.
func (e *env) dialPipe(t *testing.T) net.Conn {
	t.Helper()
	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: e.gw.Handler()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close() })
	select {
	case ln.conns <- server:
	case <-time.After(10 * time.Second):
		t.Fatal("the server accepted no connection")
	}
	return client
}

// TestStalledReaderOfInterimIsCut has a client read nothing while the
// gateway writes an interim response, its own 100 Continue before a
// streamed head or a 103 the service sends: the write must give up after
// body_idle_timeout, as the response's others do, and the service's
// stream be cancelled, rather than both wait for the route's timeout.
func TestStalledReaderOfInterimIsCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, request string
		reply         nats.Header
	}{
		{"100 Continue", fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 4<<20),
			nats.Header{"Narun-Body": {"stream"}}},
		{"103 relayed", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
			nats.Header{"Narun-Frame": {"interim"}, "Narun-Status": {"103"}, "Link": {"</style.css>; rel=preload; as=style"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := gwConfig(config.Route{Path: "/", Service: "hints", Timeout: config.Duration(10 * time.Minute)})
			cfg.BodyIdleTimeout = config.Duration(time.Second)
			e := newEnv(t, cfg)
			nc := natsConn(t, e)
			if _, err := nc.Subscribe("hints", func(m *nats.Msg) {
				_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: tc.reply})
			}); err != nil {
				t.Fatal(err)
			}
			cancels, err := nc.SubscribeSync(consumer.CancelSubject("hints"))
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			c := e.dialPipe(t)
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 20*time.Second, "the gateway gives up the interim response nobody reads", func() bool {
				return e.gw.metrics.inflight.Load() == 0
			})
			if _, err := cancels.NextMsg(10 * time.Second); err != nil {
				t.Errorf("the service's stream was not cancelled: %v", err)
			}
		})
	}
}

// TestStalledHTTP2ConnectionIsCut has an HTTP/2 client open large flow
// control windows and then read nothing of its connection, as a client
// whose network is gone, or one stuck writing what it got to a full pipe
// (curl into a pager): the gateway's writes then wait in TCP, where the
// reset of the stream at its write deadline waits too, behind them, and
// cannot release the exchange. Once nothing can be written for
// body_idle_timeout the connection must close, ending the exchange and
// the service's stream, rather than hold them for as long as TCP keeps
// the connection (for ever, for a client that keeps acknowledging a
// window of 0).
func TestStalledHTTP2ConnectionIsCut(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "flood", Timeout: config.Duration(10 * time.Minute)})
	cfg.BodyIdleTimeout = config.Duration(time.Second)
	srv := natstest.Start(t)
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	ended := make(chan error, 1)
	serveOn(t, natstest.Connect(t, srv), consumer.Config{Name: "flood"}, floodEvents(ended))
	c, err := net.Dial("tcp", r.addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	const window = 1<<31 - 1
	out := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	out = append(out, h2frame(0x4, 0, 0, binary.BigEndian.AppendUint32([]byte{0, 4}, window))...)
	out = append(out, h2frame(0x8, 0, 0, binary.BigEndian.AppendUint32(nil, window-65535))...)
	const endStreamAndHeaders = 0x5
	out = append(out, h2frame(0x1, endStreamAndHeaders, 1, hpackLit(":method", "GET", ":scheme", "http", ":path", "/events", ":authority", "a"))...)
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the request reaches the service", func() bool {
		return r.gw.metrics.inflight.Load() == 1
	})
	testutil.Eventually(t, 20*time.Second, "the gateway gives up the connection nothing can be written to", func() bool {
		return r.gw.metrics.inflight.Load() == 0
	})
	testutil.Eventually(t, 10*time.Second, "the service's stream ends", func() bool { return len(ended) == 1 })
}
