package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// serveSlow serves "svc" on srv: a request for /slow says so on arrived
// (room for arrivals of them) and is answered once release is closed;
// any other at once.
func serveSlow(t *testing.T, srv *embednats.Server, arrivals int) (arrived chan struct{}, release chan struct{}) {
	t.Helper()
	arrived, release = make(chan struct{}, arrivals), make(chan struct{})
	serveOn(t, natstest.Connect(t, srv), consumerConfig("svc"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	return arrived, release
}

// Connections beyond max_connections cannot take the process's memory
// and file descriptors: a new one takes the place of an idle keep-alive
// connection, and with none idle it is closed at once, while the admin
// listener still answers.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	arrived, release := serveSlow(t, srv, 2)
	cfg := gwConfig(config.Route{Path: "/", Service: "svc"})
	cfg.MaxConnections = 2
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	base := "http://" + r.addrs["http"]

	busy := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(busy.CloseIdleConnections)
	done := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := busy.Get(base + "/slow")
			if err != nil {
				done <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	<-arrived
	<-arrived

	c, err := net.Dial("tcp", r.addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		resp.Body.Close()
		t.Errorf("a third connection with two busy ones and max_connections = 2 was served: %s", resp.Status)
	}
	code, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
	for _, want := range []string{"\nnarun_gateway_connections 2\n", "\nnarun_gateway_connections_refused_total 1\n"} {
		if code != 200 || !strings.Contains(m, want) {
			t.Errorf("metrics (%d) lack %q:\n%s", code, want, m)
		}
	}

	close(release)
	for range 2 {
		if code := <-done; code != 200 {
			t.Errorf("busy request: %d, want 200", code)
		}
	}
	// Idle now, as the client keeps them: a new connection takes the
	// place of one of them.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	testutil.Eventually(t, 10*time.Second, "a new connection served in place of an idle one", func() bool {
		resp, err := fresh.Get(base + "/fast")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// A client that connects and sends nothing, or its headers a byte at a
// time, holds its place only for the grace: at max_connections a real
// request takes the place of the oldest such connection.
func TestConnectionLimitReclaimsConnectionsWithoutARequest(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("svc"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	cfg := gwConfig(config.Route{Path: "/", Service: "svc"})
	cfg.MaxConnections = 4
	r := startRun(t, natstest.Connect(t, srv), cfg, "")

	var silent []net.Conn
	for i := range int(cfg.MaxConnections) {
		c, err := net.Dial("tcp", r.addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 1 {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHo")
		}
		silent = append(silent, c)
		// One at a time, so that the first is the oldest.
		testutil.Eventually(t, 10*time.Second, "connection accepted", func() bool { return r.gw.conns.count() == i+1 })
	}

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	testutil.Eventually(t, 10*time.Second, "a request served in place of a connection without one", func() bool {
		resp, err := client.Get("http://" + r.addrs["http"] + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err := silent[0].SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := silent[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("oldest connection without a request: read %v, want EOF (closed for the new one)", err)
	}
	// The 10 s header timeout did not free the place instead.
	code, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
	if want := "\nnarun_gateway_connections_reclaimed_total{reason=\"head_incomplete\"} 1\n"; code != 200 || !strings.Contains(m, want) {
		t.Errorf("metrics (%d) lack %q:\n%s", code, want, m)
	}
}

// Within the grace a connection keeps its place; and an HTTP/2 connection
// without TLS (gRPC's), whose states the HTTP/2 server reports once it has
// read the preface, is not taken for one without a request.
func TestConnectionLimitGraceAndHTTP2(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	arrived, release := serveSlow(t, srv, 1)
	cfg := gwConfig(config.Route{Path: "/", Service: "svc"})
	cfg.MaxConnections = 2
	// The limiter's clock moves only when the test moves it.
	start := time.Now()
	var elapsed atomic.Int64
	r := startRunPrepared(t, Options{Config: cfg, Conn: natstest.Connect(t, srv)}, func(g *Gateway) {
		g.conns.now = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	})
	base := "http://" + r.addrs["http"]

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	busy := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get(base + "/slow")
		if err != nil {
			busy <- err.Error()
			return
		}
		resp.Body.Close()
		busy <- fmt.Sprintf("%s %d", resp.Proto, resp.StatusCode)
	}()
	<-arrived
	silent, err := net.Dial("tcp", r.addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	testutil.Eventually(t, 10*time.Second, "both connections accepted", func() bool { return r.gw.conns.count() == 2 })

	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := fresh.Get(base + "/fast"); err == nil {
		resp.Body.Close()
		t.Errorf("a connection within the grace gave its place: %s", resp.Status)
	}
	elapsed.Store(int64(headGrace))
	resp, err := fresh.Get(base + "/fast")
	if err != nil {
		t.Fatalf("past the grace: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("past the grace: %s", resp.Status)
	}
	if err := silent.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection without a request: read %v, want EOF (closed for the new one)", err)
	}
	close(release)
	if got := <-busy; got != "HTTP/2.0 200" {
		t.Errorf("busy HTTP/2 request: %s, want HTTP/2.0 200", got)
	}
	code, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
	for _, want := range []string{
		"\nnarun_gateway_connections_refused_total 1\n",
		"\nnarun_gateway_connections_reclaimed_total{reason=\"head_incomplete\"} 1\n",
		"\nnarun_gateway_connections_reclaimed_total{reason=\"idle\"} 0\n",
	} {
		if code != 200 || !strings.Contains(m, want) {
			t.Errorf("metrics (%d) lack %q:\n%s", code, want, m)
		}
	}
}

// TestRequestHeadTooLarge checks the bound on the request head: a header,
// or a URL (the request line counts toward it in net/http, where nginx
// answers a long one 414), past 32 KiB gets a 431, and one within it is
// served.
func TestRequestHeadTooLarge(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "svc"}), "")
	serveSlow(t, srv, 0)
	base := "http://" + r.addrs["http"]
	for _, tc := range []struct {
		name         string
		path, header string
		status       int
	}{
		{"URL within the bound", "/" + strings.Repeat("a", 30<<10), "", 200},
		{"URL past the bound", "/" + strings.Repeat("a", 40<<10), "", 431},
		{"header past the bound", "/", strings.Repeat("h", 40<<10), 431},
	} {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		if tc.header != "" {
			req.Header.Set("X-Large", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
}

// TestRequestHeadBound checks the bound of docs/GATEWAY.md over HTTP/1.1:
// a head of 32 KiB, request line and the blank line that ends it
// included, is served, and one a little larger gets 431 (net/http does not
// count the 14 bytes it reads of a new connection to tell h2c apart). It
// reads 4 KiB past MaxHeaderBytes, which let heads of 36 KiB through.
func TestRequestHeadBound(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "svc"}), "")
	serveSlow(t, srv, 0)
	for _, tc := range []struct {
		size       int
		start, end string // of the head, padded between them to size
		status     string
	}{
		{32 << 10, "GET /", " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 "},
		{32<<10 + 64, "GET /", " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 431 "},
		{32 << 10, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Large: ", "\r\nX-After: 1\r\n\r\n", "HTTP/1.1 200 "},
		{32<<10 + 64, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Large: ", "\r\nX-After: 1\r\n\r\n", "HTTP/1.1 431 "},
	} {
		head := tc.start + strings.Repeat("a", tc.size-len(tc.start)-len(tc.end)) + tc.end
		c, err := net.Dial("tcp", r.addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, tc.status) {
			t.Errorf("a head of %d bytes: %q (%v), want %q", len(head), line, err, tc.status)
		}
	}
}

// Unless the file sets max_connections, it follows the memory narun may
// use: 4096 connections took narun up past a 128 MiB cgroup's limit. Not
// parallel: it sets the process's memory limit, which the gateway reads.
func TestMaxConnectionsDefaultFollowsMemory(t *testing.T) {
	prev := debug.SetMemoryLimit(96 << 20)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	for _, tt := range []struct {
		file string
		want int
	}{
		{"[gateway]\n", 1536},
		{"[gateway]\nmax_connections = 4096\n", 4096},
		{"[gateway]\nmax_connections = 100\n", 100},
	} {
		path := filepath.Join(t.TempDir(), "narun.toml")
		f, _, err := decodeConfigFile(path, []byte(tt.file))
		if err != nil {
			t.Fatal(err)
		}
		g, err := configured(Options{Config: f.Gateway})
		if err != nil {
			t.Fatal(err)
		}
		if g.conns.max != tt.want {
			t.Errorf("max_connections with a 96 MiB memory limit and %q: %d, want %d", tt.file, g.conns.max, tt.want)
		}
	}
}

func TestMaxConnectionsFor(t *testing.T) {
	t.Parallel()
	const none = math.MaxInt64
	for _, tt := range []struct {
		name       string
		limit, ram int64
		want       int
	}{
		{"nothing known", none, 0, config.DefaultMaxConnections},
		{"RAM alone", none, 128 << 20, 2048},
		{"a large RAM", none, 64 << 30, config.DefaultMaxConnections},
		{"a 128 MiB cgroup's Go limit", 96 << 20, 64 << 30, 1536},
		{"RAM below the Go limit", 192 << 20, 96 << 20, 1536},
		{"little memory", 8 << 20, 64 << 30, 256},
		{"a 1 GiB Go limit", 1 << 30, 64 << 30, config.DefaultMaxConnections},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := maxConnectionsFor(tt.limit, tt.ram); got != tt.want {
				t.Errorf("maxConnectionsFor(%d, %d) = %d, want %d", tt.limit, tt.ram, got, tt.want)
			}
		})
	}
}

// A connection whose last answer is written waits some 500 ms in net/http
// before it closes, so that the client reads the answer before a reset:
// counted against max_connections all that time, clients whose uploads
// are refused one after another would fill every place, and the next
// connection would be closed unanswered. Each of these, one at a time,
// gets its 413, and the connections counted stay within the bound.
func TestConnectionLimitFreesClosingConnections(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	serveSlow(t, srv, 0)
	cfg := gwConfig(config.Route{Path: "/up", Service: "svc", MaxBody: 1 << 10, Methods: []string{"POST"}})
	cfg.MaxConnections = 2
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	// Each refused before its body is read, which net/http would read up
	// to 256 KiB of to keep the connection, and close past that unseen.
	for _, tc := range []struct {
		name, head string
		want       int
	}{
		{"over max_body", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", http.StatusRequestEntityTooLarge},
		{"no route", "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", http.StatusNotFound},
		{"method not allowed", "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n", http.StatusMethodNotAllowed},
		{"no route, chunked", "POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 10 {
				c, err := net.Dial("tcp", r.addrs["http"])
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.WriteString(c, tc.head+strings.Repeat("x", 4096))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				c.Close()
				if err != nil {
					t.Fatalf("upload %d: no answer: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("upload %d: %s, want %d", i, resp.Status, tc.want)
				}
				_, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
				if n := metricInt(t, m, "narun_gateway_connections"); n > int(cfg.MaxConnections) {
					t.Fatalf("upload %d: narun_gateway_connections %d, above max_connections %d", i, n, cfg.MaxConnections)
				}
			}
		})
	}
}

// The connections waiting out their close have a bound of their own;
// beyond it they count against max_connections again, so that clients
// that do not read their last answer cannot hold connections without
// bound. A new connection takes the place of one of those, already
// answered: else a few clients whose requests are refused one after
// another (a 413 before the body: 10 such clients made 4600 a second on
// loopback) kept max_connections full of connections waiting out their
// close, and most new clients were closed unanswered.
func TestConnLimitClosingAllowance(t *testing.T) {
	l := newConnLimit(1, slog.New(slog.DiscardHandler))
	l.maxEnding = 1
	conn := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	c1, c2, c3 := conn(), conn(), conn()
	l.track(c1, http.StateNew)
	l.track(c1, http.StateActive)
	l.closing(c1)
	if n := l.count(); n != 0 {
		t.Fatalf("a closing connection counted: %d", n)
	}
	l.track(c2, http.StateNew)
	l.track(c2, http.StateActive)
	l.closing(c2)
	if n := l.count(); n != 1 {
		t.Fatalf("a closing connection beyond the allowance not counted: %d", n)
	}
	l.track(c3, http.StateNew)
	if r := l.refused.Load(); r != 0 {
		t.Fatalf("a new connection refused while one beyond the allowance, answered, held the bound")
	}
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Fatalf("the answered connection whose place was taken is still open")
	}
	if n, r := l.count(), l.reclaimed[reclaimClosing].Load(); n != 1 || r != 1 {
		t.Fatalf("after the new connection: %d counted, %d reclaimed as closing; want 1 and 1", n, r)
	}
	l.track(c1, http.StateClosed)
	l.track(c2, http.StateClosed)
	l.track(c3, http.StateClosed)
	if n, e := l.count(), len(l.ending); n != 0 || e != 0 {
		t.Fatalf("closed connections still held: %d counted, %d closing", n, e)
	}
}

// metricInt is the value of the unlabelled metric name in the exposition m.
func metricInt(t *testing.T, m, name string) int {
	t.Helper()
	_, rest, ok := strings.Cut(m, "\n"+name+" ")
	if !ok {
		t.Fatalf("metrics lack %s:\n%s", name, m)
	}
	v, _, _ := strings.Cut(rest, "\n")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return n
}
