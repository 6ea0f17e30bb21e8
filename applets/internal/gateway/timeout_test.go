package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
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

// TestStalledUploadTimesOut sends part of a request body and then nothing:
// the route timeout must end the exchange with a 408, close the connection
// and let the handler go, whether the gateway waits for the part that
// travels with the request head or for a chunk the service pulled.
func TestStalledUploadTimesOut(t *testing.T) {
	t.Parallel()
	// Long enough for the head and its first chunk to reach the service on
	// a loaded machine (race detector, parallel tests): a request that
	// arrives after its deadline is dropped unhandled, and the pull case
	// would test nothing.
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "upload", Timeout: config.Duration(2 * time.Second)}))
	readErr := make(chan error, 1)
	e.serve(t, "upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		readErr <- err
	}))
	for _, tc := range []struct {
		name         string
		length, sent int
		pulled       bool
	}{
		{"before the head", 100_000, 5, false},
		{"during a pull", 3 << 20, 1<<20 + 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e)
			fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", tc.length)
			if _, err := c.Write(make([]byte, tc.sent)); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled upload: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "within 2s") {
				t.Errorf("got %d %q, want 408 naming the timeout", resp.StatusCode, body)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Error("connection still open after the 408")
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
	e.serve(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The head goes out at once, so the status is 200 however slowly
		// (race detector, loaded machine) the large body follows.
		_, _ = w.Write([]byte("start"))
		w.(http.Flusher).Flush()
		_, _ = w.Write(make([]byte, size))
	}))
	var closed atomic.Int64
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
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("status line %q, %v", line, err)
	}
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
		if got := timeLeft(rt, tc.elapsed); got != tc.want {
			t.Errorf("timeLeft after %v = %q, want %q", tc.elapsed, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = timeLeft(rt, 500*time.Microsecond) }); n != 0 {
		t.Errorf("timeLeft within the first millisecond allocates %v times", n)
	}
}

// TestStalledUploadHTTP2 is TestStalledUploadTimesOut over HTTP/2, where
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
