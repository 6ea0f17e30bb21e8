package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// running is a gateway started with Run on random ports.
type running struct {
	gw    *Gateway
	addrs map[string]string
	stop  context.CancelFunc
	done  chan error
}

func startRun(t *testing.T, nc *nats.Conn, cfg config.Gateway, path string) *running {
	t.Helper()
	return startRunLogged(t, nc, cfg, path, nil)
}

func startRunLogged(t *testing.T, nc *nats.Conn, cfg config.Gateway, path string, log *slog.Logger) *running {
	t.Helper()
	return startRunOptions(t, Options{Config: cfg, Conn: nc, ConfigPath: path, ConfigContent: loaded(t, path), Logger: log})
}

// startRunOptions runs a gateway with opts on random ports.
func startRunOptions(t *testing.T, opts Options) *running {
	t.Helper()
	return startRunPrepared(t, opts, nil)
}

// startRunPrepared is startRunOptions that calls prepare, when not nil,
// on the gateway before it runs.
func startRunPrepared(t *testing.T, opts Options, prepare func(*Gateway)) *running {
	t.Helper()
	cfg := opts.Config
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.TLS.Cert != "" {
		cfg.TLS.Listen = "127.0.0.1:0"
	}
	var mu sync.Mutex
	addrs := map[string]string{}
	opts.Config = cfg
	opts.OnListen = func(name, addr string) {
		mu.Lock()
		addrs[name] = addr
		mu.Unlock()
	}
	g, err := New(opts)
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	if prepare != nil {
		prepare(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{gw: g, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- g.Run(ctx) }()
	want := 2
	if cfg.TLS.Cert != "" {
		want = 3
	}
	testutil.Eventually(t, 10*time.Second, "gateway listening", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(addrs) == want
	})
	r.addrs = addrs
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
	})
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A request in flight when NATS goes away for good gets a 502 once the
// connection has been down for its grace, not a 504 at the route's
// timeout: its reply can no longer come.
func TestNATSLostInFlight(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "stuck", Timeout: config.Duration(time.Hour)}), "")
	got, release := make(chan struct{}), make(chan struct{})
	serveOn(t, natstest.Connect(t, srv), consumerConfig("stuck"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(got)
		// The service lost NATS too: no cancel reaches it.
		<-release
	}))
	t.Cleanup(func() { close(release) })
	res := inFlight(t, "http://"+r.addrs["http"]+"/x", got)
	srv.Shutdown()
	select {
	case rs := <-res:
		if rs.code != http.StatusBadGateway || !strings.Contains(rs.body, "connection to NATS lost") {
			t.Errorf("request in flight when NATS went away: %d %q, want 502", rs.code, rs.body)
		}
	case <-time.After(time.Minute):
		t.Fatal("request in flight still waiting a minute after NATS went away")
	}
}

// A NATS server restarted at once is found again within the grace: the
// request in flight gets the reply its service sends after the restart.
func TestNATSBackInTime(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	srv := natstest.StartConfig(t, embednats.Config{Listen: addr})
	// The grace follows ReconnectWait (twice it, and a second): a wait of
	// 2 s leaves the restart 3 s of margin, where 500 ms left 1.1 s, which
	// a machine busy with other tests once ran out of.
	reconnecting := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(2 * time.Second)}
	nc, err := nats.Connect("nats://"+addr, reconnecting...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := nats.Connect("nats://"+addr, reconnecting...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "steady", Timeout: config.Duration(time.Minute)}), "")
	got, release := make(chan struct{}), make(chan struct{})
	serveOn(t, svc, consumerConfig("steady"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(got)
		<-release
		_, _ = io.WriteString(w, "still here")
	}))
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(released)
	res := inFlight(t, "http://"+r.addrs["http"]+"/x", got)
	srv.Shutdown()
	natstest.StartConfig(t, embednats.Config{Listen: addr})
	// Cleanups run last first: the service's connection must close before
	// this server does, or its drain waits for a server that is gone.
	t.Cleanup(svc.Close)
	testutil.Eventually(t, 20*time.Second, "both connections back", func() bool { return nc.IsConnected() && svc.IsConnected() })
	// The new server has the gateway's inbox once it answered a ping
	// sent after the subscriptions: a reply sent before that is lost. A
	// flush cut by one more drop of the connection (nats.go then says
	// "connection closed", though it reconnects) is sent again.
	testutil.Eventually(t, 20*time.Second, "a flush the new server answered", func() bool { return nc.Flush() == nil })
	released()
	select {
	case rs := <-res:
		if rs.code != http.StatusOK || rs.body != "still here" {
			t.Errorf("request in flight across a quick restart: %d %q, want the reply", rs.code, rs.body)
		}
	case <-time.After(time.Minute):
		t.Fatal("request still waiting a minute after the restart")
	}
}

type result struct {
	code int
	body string
}

// inFlight sends a GET to url and returns once its service signalled on
// got that it has the request; the response comes on the channel.
func inFlight(t *testing.T, url string, got <-chan struct{}) <-chan result {
	t.Helper()
	res := make(chan result, 1)
	go func() {
		code, body := get(t, url)
		res <- result{code, body}
	}()
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the request never reached the service")
	}
	return res
}

func TestNATSDownAtStart(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	nc, err := nats.Connect("nats://"+addr, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("connect with retry: %v", err)
	}
	t.Cleanup(nc.Close)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "late"}), "")
	if code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz"); code != 503 {
		t.Errorf("readyz = %d while NATS is down, want 503", code)
	}
	if code, _ := get(t, "http://"+r.addrs["admin"]+"/healthz"); code != 200 {
		t.Errorf("healthz = %d, want 200", code)
	}
	// An alert on the gateway's NATS connection needs no request to fail.
	const down, up = "narun_gateway_nats_connected 0\n", "narun_gateway_nats_connected 1\n"
	if _, m := get(t, "http://"+r.addrs["admin"]+"/metrics"); !strings.Contains(m, down) {
		t.Errorf("metrics while NATS is down lack %q", down)
	}
	code, body := get(t, "http://"+r.addrs["http"]+"/x")
	if code != 503 || !strings.Contains(body, "not connected") {
		t.Errorf("request while NATS is down: %d %q, want 503", code, body)
	}

	srv := natstest.StartConfig(t, embednats.Config{Listen: addr})
	testutil.Eventually(t, 20*time.Second, "readyz turns 200", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		return code == 200
	})
	if _, m := get(t, "http://"+r.addrs["admin"]+"/metrics"); !strings.Contains(m, up) {
		t.Errorf("metrics once connected lack %q", up)
	}
	serveOn(t, natstest.Connect(t, srv), consumerConfig("late"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "finally")
	}))
	if code, body := get(t, "http://"+r.addrs["http"]+"/x"); code != 200 || body != "finally" {
		t.Errorf("after NATS came up: %d %q", code, body)
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	cfg := gwConfig(config.Route{Path: "/", Service: "slowpoke"})
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
	var addr atomic.Value
	g, err := New(Options{Config: cfg, Conn: nc, OnListen: func(_, a string) { addr.Store(a) }})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := heldSlowpoke(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- g.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "listening", func() bool { return addr.Load() != nil })
	url := "http://" + addr.Load().(string) + "/"
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-entered
	cancel()
	// New connections are refused once shutdown began, while the request
	// in flight is still waiting.
	testutil.Eventually(t, 10*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr.Load().(string), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "done" {
		t.Errorf("in-flight request: %+v, want 200 done", r)
	}
	if err := <-runErr; err != nil {
		t.Errorf("run returned %v, want nil", err)
	}
}

// A load balancer or an orchestrator learns that a gateway is stopping
// from /readyz: during the drain it answers 503 rather than refusing the
// connection, /healthz and /metrics still answer, and the admin listener
// closes only once the requests in flight have finished.
func TestAdminAnswersWhileDraining(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	cfg := gwConfig(config.Route{Path: "/", Service: "slowpoke"})
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	var mu sync.Mutex
	addrs := map[string]string{}
	g, err := New(Options{Config: cfg, Conn: nc, OnListen: func(name, a string) {
		mu.Lock()
		addrs[name] = a
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := heldSlowpoke(t, srv)
	// A failure before the release must not leave the handler, and the
	// consumer's cleanup with it, waiting for ever.
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- g.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "listening", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(addrs) == 2
	})
	admin := "http://" + addrs["admin"]
	testutil.Eventually(t, 10*time.Second, "readyz 200 before the drain", func() bool {
		code, _ := get(t, admin+"/readyz")
		return code == 200
	})
	res := inFlight(t, "http://"+addrs["http"]+"/", entered)
	cancel()
	var code int
	var body string
	testutil.Eventually(t, 10*time.Second, "readyz 503 during the drain", func() bool {
		resp, err := http.Get(admin + "/readyz")
		if err != nil {
			code, body = 0, err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
		return code == 503
	})
	if !strings.Contains(body, "draining") {
		t.Errorf("readyz during the drain: %d %q, want 503 saying it is draining", code, body)
	}
	if code, _ := get(t, admin+"/healthz"); code != 200 {
		t.Errorf("healthz during the drain = %d, want 200", code)
	}
	if code, m := get(t, admin+"/metrics"); code != 200 || !strings.Contains(m, "narun_gateway_in_flight_requests 1\n") {
		t.Errorf("metrics during the drain: %d, want 200 with the request in flight:\n%s", code, m)
	}
	select {
	case r := <-res:
		t.Fatalf("the request ended before its service answered: %+v", r)
	default:
	}
	free()
	if r := <-res; r.code != 200 || r.body != "done" {
		t.Errorf("in-flight request: %+v, want 200 done", r)
	}
	if err := <-runErr; err != nil {
		t.Errorf("run returned %v, want nil", err)
	}
	if c, err := net.DialTimeout("tcp", addrs["admin"], time.Second); err == nil {
		c.Close()
		t.Error("the admin listener still accepts once Run returned")
	}
}

func TestMetricsAreByRoute(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/api/", Service: "metered"}, config.Route{Path: "/ro", Methods: []string{"GET"}, Service: "metered"}), "")
	serveOn(t, natstest.Connect(t, srv), consumerConfig("metered"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "12345")
	}))
	for _, p := range []string{"/api/a", "/api/b?x=1", "/api/c/d", "/nothing"} {
		get(t, "http://"+r.addrs["http"]+p)
	}
	resp, err := http.Post("http://"+r.addrs["http"]+"/ro", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m := settledMetrics(t, r)
	for _, want := range []string{
		`narun_gateway_requests_total{route="/api/",code="200"} 3`,
		`narun_gateway_requests_total{route="",code="404"} 1`,
		`narun_gateway_requests_total{route="/ro",code="405"} 1`,
		`narun_gateway_request_duration_seconds_count{route="/api/"} 3`,
		`narun_gateway_request_duration_seconds_bucket{route="/api/",le="+Inf"} 3`,
		`narun_gateway_response_bytes_total{route="/api/"} 15`,
		`narun_gateway_nats_requests_total{outcome="ok"} 3`,
		`narun_gateway_in_flight_requests 0`,
		"# TYPE narun_gateway_request_duration_seconds histogram",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, raw := range []string{"/api/a", "/api/c/d", "/nothing"} {
		if strings.Contains(m, `"`+raw+`"`) {
			t.Errorf("metrics carry the raw path %s", raw)
		}
	}
}

// readConfigFile reads a configuration file, and the lines of its
// [[gateway.routes]] headers.
func readConfigFile(path string) (config.File, []int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.File{}, nil, err
	}
	return decodeConfigFile(path, data)
}

// loaded is path's content as an applet that loads it now hands it to
// the gateway (Options.ConfigContent); nil for no path.
func loaded(t *testing.T, path string) []byte {
	t.Helper()
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeConfig writes a narun.toml at path and returns its [gateway] table
// as the gateway reads it.
func writeConfig(t *testing.T, path, content string) config.Gateway {
	t.Helper()
	writeFile(t, path, content)
	f := config.Defaults()
	if _, err := config.DecodeStrict(path, []byte(content), &f); err != nil {
		t.Fatal(err)
	}
	return f.Gateway
}

// TestMetricsOfRemovedRoutesGo checks that the series of a route go once
// no route has its label, and that those of a route a reload keeps go on
// counting: a gateway that runs for months kept the series of every route
// it ever served, one set more for each app deployed and deleted.
func TestMetricsOfRemovedRoutesGo(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("metered"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	path := filepath.Join(t.TempDir(), "narun.toml")
	routes := func(paths ...string) string {
		var b strings.Builder
		for _, p := range paths {
			fmt.Fprintf(&b, "[[gateway.routes]]\npath = %q\nservice = \"metered\"\n", p)
		}
		return b.String()
	}
	cfg := writeConfig(t, path, routes("/kept/", "/gone-0/"))
	r := startRun(t, nc, cfg, path)
	base := "http://" + r.addrs["http"]
	get(t, base+"/kept/")
	get(t, base+"/gone-0/")
	get(t, base+"/nothing")
	for i := 1; i <= 3; i++ {
		writeFile(t, path, routes("/kept/", fmt.Sprintf("/gone-%d/", i)))
		if err := r.gw.Reload(); err != nil {
			t.Fatal(err)
		}
		get(t, base+fmt.Sprintf("/gone-%d/", i))
	}
	get(t, base+"/kept/")
	m := settledMetrics(t, r)
	for _, want := range []string{
		`narun_gateway_requests_total{route="/kept/",code="200"} 2`,
		`narun_gateway_requests_total{route="/gone-3/",code="200"} 1`,
		`narun_gateway_requests_total{route="",code="404"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for i := range 3 {
		if label := fmt.Sprintf(`route="/gone-%d/"`, i); strings.Contains(m, label) {
			t.Errorf("metrics keep the series of the removed route /gone-%d/", i)
		}
	}
}

// TestHeadBodyNotCounted checks that the body bytes of a response to HEAD,
// which net/http discards, are not counted as sent: a responder that
// answers HEAD as GET, and the gateway's own error.
func TestHeadBodyNotCounted(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/raw", Service: "asget"}), "")
	raw := natstest.Connect(t, srv)
	if _, err := raw.Subscribe("asget", func(m *nats.Msg) { _ = m.Respond([]byte("body")) }); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/raw", "/nothing"} {
		resp, err := http.Head("http://" + r.addrs["http"] + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	m := settledMetrics(t, r)
	for _, want := range []string{
		`narun_gateway_requests_total{route="/raw",code="200"} 1`,
		`narun_gateway_response_bytes_total{route="/raw"} 0`,
		`narun_gateway_requests_total{route="",code="404"} 1`,
		`narun_gateway_response_bytes_total{route=""} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func consumerConfig(name string) consumer.Config { return consumer.Config{Name: name} }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A reload applies the routes and says which changed settings it cannot
// apply, rather than leaving the operator to believe they took effect.
func TestReloadWarnsOfRestartOnlySettings(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	path := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, path, "[gateway]\nlisten = \":8080\"\ntimeout = \"5s\"\n[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n")
	f, _, err := readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.LogBuffer
	r := startRunLogged(t, nc, f.Gateway, path, slog.New(slog.NewTextHandler(&logs, nil)))
	writeFile(t, path, "log_level = \"debug\"\n[gateway]\nlisten = \":8081\"\ntimeout = \"6s\"\n[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n")
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	const want = `keys="gateway.listen, log_level"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("reload log lacks %s:\n%s", want, logs.String())
	}
	if rt, _, _ := r.gw.table.Load().match("", "/b", "GET"); rt == nil || rt.timeout != 6*time.Second {
		t.Errorf("route /b with the new timeout not applied: %+v", rt)
	}
	// Said once: a reload with nothing new says nothing more, nor does
	// one that undoes the change.
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "[gateway]\nlisten = \":8080\"\ntimeout = \"6s\"\n[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n")
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "reload cannot apply"); n != 1 {
		t.Errorf("%d warnings after a change, the same again and its undoing, want 1:\n%s", n, logs.String())
	}

	// Inside narun up the whole file is the process's: its other parts
	// need a restart too, and the gateway's NATS login is not used.
	var upLogs testutil.LogBuffer
	f, _, err = readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{Config: f.Gateway, Conn: nc, ConfigPath: path, ConfigContent: loaded(t, path), WholeFile: true, Logger: slog.New(slog.NewTextHandler(&upLogs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.mux.close)
	writeFile(t, path, "[nats]\nlisten = \"127.0.0.1:4333\"\n[gateway]\nnats_url = \"nats://elsewhere:4222\"\nlisten = \":8080\"\ntimeout = \"6s\"\n[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n")
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if want := "keys=nats\n"; !strings.Contains(upLogs.String(), want) {
		t.Errorf("narun up's reload log lacks %s:\n%s", want, upLogs.String())
	}
}

// The TLS files of narun gw's NATS connection are read when it connects,
// as its login is: a reload that names others (a client certificate
// rotated to a new path) must say it needs a restart, not leave the
// operator to believe the gateway uses them.
func TestReloadWarnsOfNATSTLSFiles(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	dir := t.TempDir()
	path, certPath, keyPath := filepath.Join(dir, "narun.toml"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.CertPair(t, certPath, keyPath, "nats")
	routes := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	writeFile(t, path, routes)
	f, _, err := readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.LogBuffer
	r := startRunLogged(t, nc, f.Gateway, path, slog.New(slog.NewTextHandler(&logs, nil)))
	writeFile(t, path, "[gateway]\nnats_ca = \""+certPath+"\"\nnats_cert = \""+certPath+"\"\nnats_key = \""+keyPath+"\"\n"+routes)
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	const want = `keys="gateway.nats_ca, gateway.nats_cert, gateway.nats_key"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("reload log lacks %s:\n%s", want, logs.String())
	}
}

// Every setting a reload warns of as needing a restart is named in
// RestartOnly, the list narun gw's help gives.
func TestRestartOnlyNamesEveryKey(t *testing.T) {
	t.Parallel()
	for key := range (&Gateway{}).restartOnly(config.Defaults()) {
		if name := strings.TrimPrefix(key, "gateway."); !strings.Contains(RestartOnly, name) {
			t.Errorf("RestartOnly does not name %s:\n%s", name, RestartOnly)
		}
	}
}

// A bad route of the configuration file is named by the line of the key
// at fault, at start and on reload, whether or not the routes before it
// are good.
func TestRouteErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	path := filepath.Join(t.TempDir(), "narun.toml")
	good := "[gateway]\ntimeout = \"5s\"\n\n[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	bad := good + "\n[[gateway.routes]]\npath = \"b\"\nservice = \"b\"\n"
	want := path + `:9: route #2 (path "b"): path "b" must start with /`
	writeFile(t, path, bad)
	f, _, err := readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Config: f.Gateway, Conn: nc, ConfigPath: path, ConfigContent: loaded(t, path)}); err == nil || err.Error() != want {
		t.Errorf("start: %v, want %s", err, want)
	}
	writeFile(t, path, good)
	f, _, err = readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, nc, f.Gateway, path)
	writeFile(t, path, bad)
	if err := r.gw.Reload(); err == nil || err.Error() != "reload: "+want {
		t.Errorf("reload: %v, want %s", err, want)
	}
	// A key left out is placed on the route's header.
	writeFile(t, path, good+"\n[[gateway.routes]]\npath = \"/b\"\n")
	want = path + `:8: route #2 (path "/b"): no service`
	if err := r.gw.Reload(); err == nil || !strings.HasPrefix(err.Error(), "reload: "+want) {
		t.Errorf("reload of a route without service: %v, want %s", err, want)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for _, name := range []string{"a", "b"} {
		serveOn(t, natstest.Connect(t, srv), consumerConfig(name), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
	}
	path := filepath.Join(t.TempDir(), "narun.toml")
	one := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	two := one + "[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n"
	cfg := writeConfig(t, path, one)
	r := startRun(t, nc, cfg, path)
	base := "http://" + r.addrs["http"]

	t.Run("under load", func(t *testing.T) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sent, failed atomic.Int64
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent.Add(1)
					resp, err := client.Get(base + "/a")
					if err != nil {
						failed.Add(1)
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != "a" {
						failed.Add(1)
					}
				}
			})
		}
		// At least 30 reloads, and as many as it takes for requests to
		// have come back during them: on a loaded machine the 30 may be
		// over before the clients' first request.
		deadline := time.Now().Add(time.Minute)
		for i := 0; i < 30 || sent.Load()-failed.Load() < 100; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d requests answered after %d reloads and a minute", sent.Load()-failed.Load(), sent.Load(), i)
			}
			if i%2 == 0 {
				writeFile(t, path, two)
			} else {
				writeFile(t, path, one)
			}
			if err := r.gw.Reload(); err != nil {
				t.Errorf("reload %d: %v", i, err)
			}
		}
		close(stop)
		wg.Wait()
		if failed.Load() != 0 || sent.Load() == 0 {
			t.Errorf("%d of %d requests failed during reloads", failed.Load(), sent.Load())
		}
	})

	t.Run("file change", func(t *testing.T) {
		writeFile(t, path, two)
		testutil.Eventually(t, 15*time.Second, "route /b appears after the file changed", func() bool {
			code, body := get(t, base+"/b")
			return code == 200 && body == "b"
		})
	})

	t.Run("bad reload keeps routes", func(t *testing.T) {
		for _, bad := range []string{
			two + "[[gateway.routes]]\npath = \"/b\"\nservice = \"a\"\n", // duplicate
			two + "[gateway]\nnot_a_key = 1\n",
			"[[gateway.routes]\n",
		} {
			writeFile(t, path, bad)
			if err := r.gw.Reload(); err == nil {
				t.Errorf("reload of %q succeeded, want an error", bad)
			}
			if code, body := get(t, base+"/b"); code != 200 || body != "b" {
				t.Errorf("after a bad reload /b = %d %q, want the old routes", code, body)
			}
		}
	})
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("a"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "a")
	}))
	path := filepath.Join(t.TempDir(), "narun.toml")
	routes := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	cfg := writeConfig(t, path, "[gateway]\naccess_log = true\n"+routes)
	var out testutil.LogBuffer
	r := startRunLogged(t, nc, cfg, path, slog.New(slog.NewJSONHandler(&out, nil)))
	base := "http://" + r.addrs["http"]

	type line struct {
		Msg, Method, URI, Route, Service string
		RequestID                        string `json:"request_id"`
		Status                           int
		BytesOut                         int64 `json:"bytes_out"`
	}
	requests := func() []line {
		var got []line
		for _, text := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var l line
			if json.Unmarshal([]byte(text), &l) == nil && l.Msg == "request" {
				got = append(got, l)
			}
		}
		return got
	}

	resp, err := http.Get(base + "/a?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rid := resp.Header.Get("X-Request-Id")
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /nope = %d, want 404", code)
	}
	// No wait: the line is written when the handler returns, which is
	// before net/http sends a response the handler did not flush, and
	// neither of these is flushed. By the time the client has the
	// response, its line is there.
	got := requests()
	if len(got) != 2 {
		t.Fatalf("%d access log lines, want 2", len(got))
	}
	want := []line{
		{Msg: "request", Method: "GET", URI: "/a?x=1", Route: "/a", Service: "a", RequestID: rid, Status: 200, BytesOut: 1},
		{Msg: "request", Method: "GET", URI: "/nope", Status: 404},
	}
	got[1].RequestID, got[1].BytesOut = "", 0
	if got[0] != want[0] || got[1] != want[1] {
		t.Errorf("access log\n got %+v\nwant %+v", got, want)
	}

	// Turned off by a reload: no further line.
	writeFile(t, path, routes)
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, base+"/a"); code != http.StatusOK {
		t.Fatalf("GET /a = %d", code)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /nope = %d", code)
	}
	// As above, no line can still be on its way.
	if n := len(requests()); n != 2 {
		t.Errorf("%d access log lines after access_log was turned off, want 2", n)
	}
}

func TestRoutesFromKV(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/static", Service: "kvapp"}), "")
	serveOn(t, natstest.Connect(t, srv), consumerConfig("kvapp"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "kv:"+r.URL.Path)
	}))
	ctx := context.Background()
	kv := routesKV(t, nc)
	base := "http://" + r.addrs["http"]
	if _, err := kv.PutString(ctx, "kvapp", `[{"path":"/deployed/","strip_prefix":true,"timeout":"5s"}]`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "route from narun-routes", func() bool {
		code, body := get(t, base+"/deployed/x")
		return code == 200 && body == "kv:/x"
	})
	// An app whose routes clash with the file's is ignored, not fatal.
	if _, err := kv.PutString(ctx, "clash", `[{"path":"/static","service":"kvapp"}]`); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "kvapp"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "route removed with the app", func() bool {
		code, _ := get(t, base+"/deployed/x")
		return code == 404
	})
	if code, body := get(t, base+"/static"); code != 200 || body != "kv:/static" {
		t.Errorf("file route after a clashing app: %d %q", code, body)
	}
}

func TestTLSAndHTTP2(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := testutil.CertPair(t, certPath, keyPath, "first")
	cfg := gwConfig(config.Route{Path: "/", Service: "proto"})
	cfg.TLS = config.GatewayTLS{Cert: certPath, Key: keyPath}
	r := startRun(t, nc, cfg, "")
	serveOn(t, natstest.Connect(t, srv), consumerConfig("proto"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.Header.Get("X-Forwarded-Proto"))
	}))

	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := h2.Get("https://" + r.addrs["https"] + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/2.0 https" {
		t.Errorf("https: client saw %s, service saw %q; want HTTP/2 both ways over https", resp.Proto, b)
	}

	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: p}}
	resp, err = h2c.Get("http://" + r.addrs["http"] + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/2.0 http" {
		t.Errorf("h2c: client saw %s, service saw %q", resp.Proto, b)
	}

	// A client that keeps sessions resumes them while the certificate
	// stays.
	sessions := tls.NewLRUClientSessionCache(8)
	dial := func(roots *x509.CertPool) (tls.ConnectionState, error) {
		c, err := tls.Dial("tcp", r.addrs["https"], &tls.Config{RootCAs: roots, ClientSessionCache: sessions})
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		// TLS 1.3 sends its ticket after the handshake: a read takes it.
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1))
		return c.ConnectionState(), nil
	}
	if _, err := dial(pool); err != nil {
		t.Fatal(err)
	}
	if cs, err := dial(pool); err != nil || !cs.DidResume {
		t.Errorf("second connection of a client keeping sessions: resumed %v (%v), want resumed", cs.DidResume, err)
	}
	// Ticket keys turn over daily, as Go's own: a session resumes across
	// a new key, and not once its key is a week old.
	later := time.Now().Add(ticketKeyEvery)
	r.gw.rotateTicketKeys(later)
	if cs, err := dial(pool); err != nil || !cs.DidResume {
		t.Errorf("a day later, with a new ticket key: resumed %v (%v), want resumed", cs.DidResume, err)
	}
	for range ticketKeysKept {
		later = later.Add(ticketKeyEvery)
		r.gw.rotateTicketKeys(later)
	}
	if cs, err := dial(pool); err != nil || cs.DidResume {
		t.Errorf("%d new ticket keys later: resumed %v (%v), want a full handshake", ticketKeysKept, cs.DidResume, err)
	}

	// A new certificate on disk is picked up without a restart.
	newPool := testutil.CertPair(t, certPath, keyPath, "second")
	testutil.Eventually(t, 15*time.Second, "new certificate served", func() bool {
		c, err := tls.Dial("tcp", r.addrs["https"], &tls.Config{RootCAs: newPool})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName == "second"
	})
	// Its sessions end with it: a client that trusts only the old one
	// (replaced because it was revoked, say) must not go on resuming a
	// session of it.
	if cs, err := dial(pool); err == nil {
		t.Errorf("after the new certificate, a client trusting only the old one connected: resumed %v, certificate %s",
			cs.DidResume, cs.PeerCertificates[0].Subject.CommonName)
	}
}

// TestReloadErrorsInMetrics checks that every failed reload of the
// configuration file is counted in /metrics: a file that does not parse,
// routes that clash, a file that is gone.
func TestReloadErrorsInMetrics(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	path := filepath.Join(t.TempDir(), "narun.toml")
	route := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	writeFile(t, path, route)
	g, err := New(Options{Config: gwConfig(config.Route{Path: "/a", Service: "a"}), Conn: natstest.Connect(t, srv), ConfigPath: path, ConfigContent: loaded(t, path)})
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	t.Cleanup(g.mux.close)
	admin := httptest.NewServer(g.adminHandler())
	t.Cleanup(admin.Close)
	for _, bad := range []string{"[[gateway.routes]\n", route + route, ""} {
		if bad == "" {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		} else {
			writeFile(t, path, bad)
		}
		if err := g.Reload(); err == nil {
			t.Fatalf("reload of %q succeeded, want an error", bad)
		}
	}
	code, m := get(t, admin.URL+"/metrics")
	for _, want := range []string{
		"# TYPE narun_gateway_reload_errors_total counter\n",
		"\nnarun_gateway_reload_errors_total 3\n",
	} {
		if code != 200 || !strings.Contains(m, want) {
			t.Errorf("metrics (%d) lack %q:\n%s", code, want, m)
		}
	}
}

// TestReloadWithoutFile reloads a gateway started without a configuration
// file, as SIGHUP does: there is nothing to re-read, which is no error, no
// reload error in the metrics, and the routes stay.
func TestReloadWithoutFile(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	var out testutil.LogBuffer
	g, err := New(Options{Config: gwConfig(config.Route{Path: "/a", Service: "a"}), Conn: natstest.Connect(t, srv), Logger: slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	t.Cleanup(g.mux.close)
	if err := g.Reload(); err != nil {
		t.Errorf("reload without a file: %v", err)
	}
	if log := out.String(); !strings.Contains(log, "level=INFO msg=\"nothing to reload") {
		t.Errorf("log %q does not say at info level that there is nothing to reload", log)
	}
	if n := g.metrics.reloadErrors.Load(); n != 0 {
		t.Errorf("%d reload errors counted", n)
	}
	if rt, _, _ := g.table.Load().match("", "/a", "GET"); rt == nil {
		t.Error("route /a gone after the reload")
	}
}

// A gateway that has not read narun-routes yet would answer 404 for every
// deployed app: it is not ready until it has. Here JetStream cannot answer
// (one member of three is up: no leader) while core NATS works.
func TestNotReadyUntilRoutesRead(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	nc := natstest.Connect(t, c.Start(0))
	var logs testutil.LogBuffer
	r := startRunLogged(t, nc, gwConfig(), "", slog.New(slog.NewTextHandler(&logs, nil)))
	testutil.Eventually(t, 10*time.Second, "connected", nc.IsConnected)
	if code, body := get(t, "http://"+r.addrs["admin"]+"/readyz"); code != 503 || !strings.Contains(body, "narun-routes") {
		t.Errorf("readyz before narun-routes is read = %d %q, want 503 naming the bucket", code, body)
	}
	// Why is the operator's to read at the default level.
	testutil.Eventually(t, 60*time.Second, "a warning that the bucket cannot be read", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="routes bucket not read`)
	})
	c.Start(1)
	c.Start(2)
	testutil.Eventually(t, 60*time.Second, "readyz turns 200 once JetStream answers", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		return code == 200
	})
}

// A NATS server without JetStream has no narun-routes to read: the
// gateway serves its configuration's routes and says it is ready.
func TestReadyWithoutJetStream(t *testing.T) {
	t.Parallel()
	nc := natstest.StartWithoutJetStream(t)
	r := startRun(t, nc, gwConfig(config.Route{Path: "/", Service: "plain"}), "")
	testutil.Eventually(t, 20*time.Second, "readyz 200 without JetStream", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		return code == 200
	})
}

// A gateway started while JetStream cannot answer (one member of three
// up: no leader) serves the deployed routes it cached at its last run, so
// that the apps its node starts from cached specs are reached; it does not
// call itself ready until it has read the bucket. A route removed while it
// was away goes once it has.
func TestRoutesCacheWhileJetStreamIsAway(t *testing.T) {
	t.Parallel()
	cache := filepath.Join(t.TempDir(), "routes.json")
	c := natstest.NewCluster(t, 3)
	for i := range 3 {
		c.Start(i)
	}
	nc := natstest.Connect(t, c.Server(0))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var kv jetstream.KeyValue
	testutil.Eventually(t, 60*time.Second, "narun-routes created", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		kv, err = store.KV(cctx, js, names.RoutesBucket, nil)
		return err == nil
	})
	for _, app := range []string{"kept", "removed"} {
		if _, err := kv.PutString(ctx, app, `[{"path":"/`+app+`/"}]`); err != nil {
			t.Fatal(err)
		}
	}
	first := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache})
	testutil.Eventually(t, 20*time.Second, "routes cached", func() bool {
		b, _ := os.ReadFile(cache)
		return strings.Contains(string(b), `"kept"`) && strings.Contains(string(b), `"removed"`)
	})
	first.stop()
	if err := <-first.done; err != nil {
		t.Fatal(err)
	}
	first.done <- nil
	// Removed while no gateway watched: the cache still has it.
	if err := kv.Delete(ctx, "removed"); err != nil {
		t.Fatal(err)
	}

	// The cluster goes down, and one member comes back alone.
	for i := range 3 {
		c.Stop(i)
	}
	alone := natstest.Connect(t, c.Start(0))
	serveOn(t, alone, consumerConfig("kept"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "still here")
	}))
	r := startRunOptions(t, Options{Config: gwConfig(), Conn: alone, RoutesCache: cache})
	testutil.Eventually(t, 20*time.Second, "cached route served", func() bool {
		code, body := get(t, "http://"+r.addrs["http"]+"/kept/x")
		return code == 200 && body == "still here"
	})
	if code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz"); code != 503 {
		t.Errorf("readyz from the cache alone = %d, want 503", code)
	}

	c.Start(1)
	c.Start(2)
	testutil.Eventually(t, 60*time.Second, "readyz and the removed route gone", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		gone, _ := get(t, "http://"+r.addrs["http"]+"/removed/")
		return code == 200 && gone == 404
	})
}

// A Go service on a connection with an inbox prefix of its own, in an
// account that lets it subscribe under that prefix only, still streams:
// the acks of its response frames come to an inbox it may subscribe to.
func TestConsumerInboxPrefix(t *testing.T) {
	t.Parallel()
	app := &server.User{Username: "app", Password: "app", Permissions: &server.Permissions{
		Subscribe: &server.SubjectPermission{Allow: []string{"prefixed", "_NARUN.cancel.prefixed", "$SRV.>", "_APP_INBOX.>"}},
	}}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "gw", Password: "gw"}, app}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	gwConn, err := nats.Connect(ns.ClientURL(), nats.UserInfo("gw", "gw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gwConn.Close)
	svcConn, err := nats.Connect(ns.ClientURL(), nats.UserInfo("app", "app"), nats.CustomInboxPrefix("_APP_INBOX"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svcConn.Close)
	g, err := New(Options{Config: gwConfig(config.Route{Path: "/", Service: "prefixed", Timeout: config.Duration(5 * time.Second)}), Conn: gwConn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.mux.close)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	large := randomBytes(5<<20, 9)
	serveOn(t, svcConn, consumer.Config{Name: "prefixed"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(large)
	}))
	resp, err := http.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, large) {
		t.Errorf("streamed response: %d of %d bytes, %v; want it whole", len(body), len(large), err)
	}
}

// A narun-routes that lost its entries (a damaged JetStream directory)
// has no record of an app's routes, not even their removal: the gateway
// keeps serving them from its routes cache, as the runner keeps the app
// running from its cached spec, instead of erasing the last copy. Routes
// removed while it was away still go.
func TestRoutesLostByStoreServedFromCache(t *testing.T) {
	t.Parallel()
	cache := filepath.Join(t.TempDir(), "routes.json")
	nc := natstest.Connect(t, natstest.Start(t))
	ctx := context.Background()
	kv := routesKV(t, nc)
	for _, app := range []string{"lost", "removed"} {
		if _, err := kv.PutString(ctx, app, `[{"path":"/`+app+`/"}]`); err != nil {
			t.Fatal(err)
		}
		serveOn(t, nc, consumerConfig(app), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "served")
		}))
	}
	first := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache})
	testutil.Eventually(t, 20*time.Second, "routes cached", func() bool {
		b, _ := os.ReadFile(cache)
		return strings.Contains(string(b), `"lost"`) && strings.Contains(string(b), `"removed"`)
	})
	first.stop()
	if err := <-first.done; err != nil {
		t.Fatal(err)
	}
	first.done <- nil

	// The store lost everything; only the removal of "removed" is stored
	// since.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, names.RoutesBucket); err != nil {
		t.Fatal(err)
	}
	kv = routesKV(t, nc)
	if err := kv.Delete(ctx, "removed"); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	r := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	testutil.Eventually(t, 20*time.Second, "ready, and the removed route gone", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		gone, _ := get(t, "http://"+r.addrs["http"]+"/removed/")
		return code == 200 && gone == 404
	})
	if code, body := get(t, "http://"+r.addrs["http"]+"/lost/"); code != 200 || body != "served" {
		t.Errorf("route the store lost: %d %q, want it served from the cache", code, body)
	}
	if b, _ := os.ReadFile(cache); !strings.Contains(string(b), `"lost"`) {
		t.Errorf("routes cache no longer holds the lost routes: %s", b)
	}
	if !strings.Contains(logs.String(), "narun-routes has no record of this app's routes") {
		t.Errorf("the lost routes are not reported:\n%s", logs)
	}
}

// A routes cache whose write failed (a full disk) is written once the disk
// takes it, though the routes do not change again, and then the order of
// signed entries beside it: a restart without JetStream would otherwise
// serve the routes before them, and a restart accept an earlier entry
// stored again.
func TestRoutesCacheWrittenOnceWritable(t *testing.T) {
	t.Parallel()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "routes.json")
	nc := natstest.Connect(t, natstest.Start(t))
	kv := routesKV(t, nc)
	logs := &testutil.LogBuffer{}
	cfg := gwConfig()
	cfg.TrustedKeys = []string{key.Public()}
	r := startRunOptions(t, Options{Config: cfg, Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	testutil.Eventually(t, 20*time.Second, "ready, and the routes cached", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		_, err := os.Stat(cache)
		return code == 200 && err == nil
	})
	// A file where the directory should be fails every write in it.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	entry, err := EncodeEntry("late", []config.Route{{Path: "/late/"}}, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "late", key.Sign(entry)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the failed write logged", func() bool {
		return strings.Contains(logs.String(), "routes cache not written")
	})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the routes and their sequence written", func() bool {
		b, _ := os.ReadFile(cache)
		seqs, _ := os.ReadFile(cache + ".sequences")
		return strings.Contains(string(b), `"late"`) && strings.Contains(string(seqs), `"late":{"sequence":7,`)
	})
}

// The temporary files of writes of the routes cache that a power cut
// interrupted are removed when the gateway starts; another's beside them
// is not: each cut during a write left one more for good.
func TestRoutesCacheTemporariesRemovedAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cache := filepath.Join(dir, "routes.json")
	left := []string{filepath.Join(dir, ".routes.json.tmp-123"), filepath.Join(dir, ".routes.json.sequences.tmp-456")}
	other := filepath.Join(dir, ".sequences.json.tmp-789")
	for _, p := range append(left, other) {
		if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nc := natstest.Connect(t, natstest.Start(t))
	r := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache})
	testutil.Eventually(t, 20*time.Second, "ready", func() bool {
		code, _ := get(t, "http://"+r.addrs["admin"]+"/readyz")
		return code == 200
	})
	for _, p := range left {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("another's temporary file removed: %v", err)
	}
}

// A file replaced by one of the same size and modification time is a
// change: cp -p, rsync -a and tar keep the time of the copy's source, and
// a file system with a coarse clock gives two saves within one of its
// ticks the same time. The configuration and the certificate pair are
// both watched so.
func TestReloadSeesSameSizeAndTime(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for _, name := range []string{"a", "b"} {
		serveOn(t, natstest.Connect(t, srv), consumerConfig(name), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "narun.toml")
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Pairs until one has the size of the first: ECDSA signatures vary
	// in length by a byte or two, so one comes within a few tries. The
	// first may be of a size that comes once in hundreds (a serial
	// number or a key a byte shorter), which under -race took the loop
	// past the test's timeout: it is made anew every 20 tries.
	testutil.CertPair(t, certPath, keyPath, "first")
	first := sizes(t, certPath, keyPath)
	second := filepath.Join(dir, "second")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	var pool *x509.CertPool
	for tries := 1; pool == nil || sizes(t, filepath.Join(second, "cert.pem"), filepath.Join(second, "key.pem")) != first; tries++ {
		if tries%20 == 0 {
			testutil.CertPair(t, certPath, keyPath, "first")
			first = sizes(t, certPath, keyPath)
		}
		pool = testutil.CertPair(t, filepath.Join(second, "cert.pem"), filepath.Join(second, "key.pem"), "second")
	}

	writeFile(t, path, "[[gateway.routes]]\npath = \"/x\"\nservice = \"a\"\n")
	f, _, err := readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Gateway.TLS = config.GatewayTLS{Cert: certPath, Key: keyPath}
	writeFile(t, path, "[[gateway.routes]]\npath = \"/x\"\nservice = \"a\"\n[gateway.tls]\ncert = \""+certPath+"\"\nkey = \""+keyPath+"\"\n")
	r := startRun(t, nc, f.Gateway, path)
	base := "http://" + r.addrs["http"]
	if code, body := get(t, base+"/x"); code != 200 || body != "a" {
		t.Fatalf("/x = %d %q before the change, want a", code, body)
	}

	sameTime := func(dst, content string) {
		t.Helper()
		fi, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dst, content)
		if err := os.Chtimes(dst, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sameTime(path, strings.Replace(string(old), `service = "a"`, `service = "b"`, 1))
	for _, name := range []string{"cert.pem", "key.pem"} {
		b, err := os.ReadFile(filepath.Join(second, name))
		if err != nil {
			t.Fatal(err)
		}
		sameTime(filepath.Join(dir, name), string(b))
	}
	testutil.Eventually(t, 15*time.Second, "the configuration of the same size and time applied", func() bool {
		code, body := get(t, base+"/x")
		return code == 200 && body == "b"
	})
	testutil.Eventually(t, 15*time.Second, "the certificate of the same size and time served", func() bool {
		c, err := tls.Dial("tcp", r.addrs["https"], &tls.Config{RootCAs: pool})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName == "second"
	})
}

// sizes are the sizes of files, for comparison.
func sizes(t *testing.T, paths ...string) string {
	t.Helper()
	var s []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, strconv.FormatInt(fi.Size(), 10))
	}
	return strings.Join(s, " ")
}

// flakyListener fails its first Accept as a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// An error accepting connections is the gateway's own trouble, not a
// client's: an operator must see it at the default level, where
// net/http's messages about clients (failed TLS handshakes) do not go.
func TestAcceptErrorLogged(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	var logs testutil.LogBuffer
	cfg := gwConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", ""
	addr := make(chan string, 1)
	g, err := New(Options{Config: cfg, Conn: natstest.Connect(t, srv), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnListen: func(_, a string) { addr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	g.listen = func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		return &flakyListener{Listener: ln}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
	})
	if code, _ := get(t, "http://"+<-addr+"/"); code != 404 {
		t.Errorf("GET / after the accept error = %d, want 404", code)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"http: Accept error: accept tcp: accept4: too many open files") {
		t.Errorf("accept error not logged as an error:\n%s", logs.String())
	}
}

// The HTTPS listener starts with the gateway, if cert and key are set
// then: a reload that sets them where none were, or removes them, needs a
// restart and says so, rather than letting the operator believe HTTPS
// is on, or off.
func TestReloadOfTLSOnOffWarns(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	dir := t.TempDir()
	path, certPath, keyPath := filepath.Join(dir, "narun.toml"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.CertPair(t, certPath, keyPath, "only")
	routes := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	withTLS := "[gateway.tls]\ncert = \"" + certPath + "\"\nkey = \"" + keyPath + "\"\n" + routes
	for _, c := range []struct{ name, before, after string }{
		{"on", routes, withTLS},
		{"off", withTLS, routes},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeFile(t, path, c.before)
			f, _, err := readConfigFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var logs testutil.LogBuffer
			r := startRunLogged(t, nc, f.Gateway, path, slog.New(slog.NewTextHandler(&logs, nil)))
			writeFile(t, path, c.after)
			if err := r.gw.Reload(); err != nil {
				t.Fatal(err)
			}
			const want = `reload cannot apply it: the change takes effect at the next start" file=`
			if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), `keys="gateway.tls.cert, gateway.tls.key"`) {
				t.Errorf("reload that turns HTTPS %s does not say it needs a restart:\n%s", c.name, logs.String())
			}
		})
	}
}

// A file that sets one of tls.cert and tls.key without the other stops
// the gateway at start: a reload of it fails alike, naming the key set and
// the one missing, rather than apply it and leave the next start to fail,
// or the certificate's reload to fail on a file named "".
func TestReloadOfHalfATLSPairFails(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.CertPair(t, certPath, keyPath, "only")
	routes := "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	withTLS := "[gateway.tls]\ncert = \"" + certPath + "\"\nkey = \"" + keyPath + "\"\n" + routes
	certOnly := "[gateway.tls]\ncert = \"" + certPath + "\"\n" + routes
	keyOnly := "[gateway.tls]\nkey = \"" + keyPath + "\"\n" + routes
	for _, c := range []struct{ name, before, after, want string }{
		{"key removed", withTLS, certOnly, `:2: key "gateway.tls.cert": set without gateway.tls.key`},
		{"cert removed", withTLS, keyOnly, `:2: key "gateway.tls.key": set without gateway.tls.cert`},
		{"cert alone added", routes, certOnly, `:2: key "gateway.tls.cert": set without gateway.tls.key`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "narun.toml")
			writeFile(t, path, c.before)
			f, _, err := readConfigFile(path)
			if err != nil {
				t.Fatal(err)
			}
			r := startRun(t, nc, f.Gateway, path)
			writeFile(t, path, c.after)
			err = r.gw.Reload()
			if want := "reload: " + path + c.want; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("reload: %v, want %s...", err, want)
			}
			if tc, was := r.gw.tlsFiles(), f.Gateway.TLS; tc.Cert != was.Cert || tc.Key != was.Key {
				t.Errorf("after the failed reload the TLS files are %q and %q, want %q and %q as before", tc.Cert, tc.Key, was.Cert, was.Key)
			}
		})
	}
}

// A certificate pair that does not load, here a new certificate whose key
// is not written yet, leaves the pair in use serving, and counts as a
// failed reload in /metrics, where an operator's alert sees it: a renewal
// that keeps failing would otherwise show only when the old certificate
// expires. The key written in turn completes the pair.
func TestTLSBadPairKeepsServing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	firstPool := testutil.CertPair(t, certPath, keyPath, "first")
	cfg := gwConfig()
	cfg.TLS = config.GatewayTLS{Cert: certPath, Key: keyPath}
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	served := func(pool *x509.CertPool) string {
		c, err := tls.Dial("tcp", r.addrs["https"], &tls.Config{RootCAs: pool})
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}

	next := t.TempDir()
	nextCert, nextKey := filepath.Join(next, "cert.pem"), filepath.Join(next, "key.pem")
	nextPool := testutil.CertPair(t, nextCert, nextKey, "second")
	b, err := os.ReadFile(nextCert)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certPath, string(b))
	testutil.Eventually(t, 15*time.Second, "the failed load counted", func() bool {
		_, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
		return strings.Contains(m, "\nnarun_gateway_reload_errors_total 1\n")
	})
	if cn := served(firstPool); cn != "first" {
		t.Errorf("with a certificate that does not match its key, served %q, want the first pair", cn)
	}
	b, err = os.ReadFile(nextKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyPath, string(b))
	testutil.Eventually(t, 15*time.Second, "the completed pair served", func() bool {
		return served(nextPool) == "second"
	})
}

// A certificate and a key that are not a pair are named both: either may
// be the file the operator has to replace.
func TestTLSMismatchNamesBothFiles(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	otherCert, otherKey := filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")
	testutil.CertPair(t, certPath, keyPath, "first")
	testutil.CertPair(t, otherCert, otherKey, "second")
	cfg := gwConfig()
	cfg.TLS = config.GatewayTLS{Cert: certPath, Key: otherKey}
	_, err := New(Options{Config: cfg, Conn: natstest.Connect(t, srv)})
	if err == nil || !strings.Contains(err.Error(), certPath) || !strings.Contains(err.Error(), otherKey) {
		t.Errorf("start with a key of another certificate: %v, want an error naming %s and %s", err, certPath, otherKey)
	}
}

// TestRoutesAfterNATSRestart writes a route right after the NATS server
// restarted: the gateway's watch starts again as soon as it reconnects,
// instead of when the old watch's missed heartbeats (15 s and more) show
// it is dead.
func TestRoutesAfterNATSRestart(t *testing.T) {
	t.Parallel()
	natsCfg := embednats.Config{Listen: testutil.FreeAddr(t), DataDir: t.TempDir()}
	srv := natstest.StartConfig(t, natsCfg)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var logs testutil.LogBuffer
	r := startRunLogged(t, nc, gwConfig(), "", slog.New(slog.NewTextHandler(&logs, nil)))
	testutil.Eventually(t, 10*time.Second, "routes bucket read", r.gw.routesCurrent)

	srv.Shutdown()
	testutil.Eventually(t, 10*time.Second, "gateway to notice NATS is gone", func() bool { return !nc.IsConnected() })
	srv2, err := embednats.Start(natsCfg)
	if err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	t.Cleanup(srv2.Shutdown)
	testutil.Eventually(t, 10*time.Second, "gateway to reconnect", nc.IsConnected)
	testutil.Eventually(t, 10*time.Second, "the watch started again", func() bool {
		return strings.Contains(logs.String(), "watching narun-routes again")
	})

	other := natstest.Connect(t, srv2)
	serveOn(t, other, consumerConfig("late"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "late")
	}))
	ctx := context.Background()
	kv := routesKV(t, other)
	if _, err := kv.PutString(ctx, "late", `[{"path":"/late/"}]`); err != nil {
		t.Fatal(err)
	}
	base := "http://" + r.addrs["http"]
	testutil.Eventually(t, 10*time.Second, "route written after the restart served", func() bool {
		code, body := get(t, base+"/late/")
		return code == 200 && body == "late"
	})
}

// TestNotReadyUntilRoutesReadAfterReconnect changes narun-routes while the
// gateway is away from NATS. Back on a server where its login may not use
// JetStream (as on a cluster member without a leader, JetStream does not
// answer), it cannot read the bucket again: /readyz must not call ready the
// routes from before, though requests are still served with them. Once
// JetStream answers, the changes are applied, and only then is it ready.
func TestNotReadyUntilRoutesReadAfterReconnect(t *testing.T) {
	t.Parallel()
	addr, dir := testutil.FreeAddr(t), t.TempDir()
	admin := embednats.User{User: "admin", Password: "pw"}
	serverWith := func(gw embednats.User) *embednats.Server {
		t.Helper()
		srv, err := embednats.Start(embednats.Config{Listen: addr, DataDir: dir, Users: []embednats.User{admin, gw}})
		if err != nil {
			t.Fatalf("start nats: %v", err)
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}
	gwUser := embednats.User{User: "gw", Password: "pw"}
	srv := serverWith(gwUser)
	reconnecting := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	nc, err := nats.Connect("nats://"+addr, append(reconnecting, nats.UserInfo(gwUser.User, gwUser.Password))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	svc, err := nats.Connect("nats://"+addr, append(reconnecting, nats.UserInfo(admin.User, admin.Password))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	serveOn(t, svc, consumerConfig("web"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "web")
	}))
	ctx := context.Background()
	kv := routesKV(t, svc)
	for app, value := range map[string]string{"web": `[{"path":"/old/"}]`, "gone": `[{"path":"/gone/"}]`} {
		if _, err := kv.PutString(ctx, app, value); err != nil {
			t.Fatal(err)
		}
	}
	r := startRun(t, nc, gwConfig(), "")
	base, readyz := "http://"+r.addrs["http"], "http://"+r.addrs["admin"]+"/readyz"
	code := func(path string) int {
		c, _ := get(t, base+path)
		return c
	}
	testutil.Eventually(t, 20*time.Second, "ready with the first routes", func() bool {
		c, _ := get(t, readyz)
		return c == 200 && code("/old/x") == 200 && code("/gone/x") != 404
	})

	srv.Shutdown()
	testutil.Eventually(t, 10*time.Second, "gateway to notice NATS is gone", func() bool { return !nc.IsConnected() })
	srv = serverWith(embednats.User{User: gwUser.User, Password: gwUser.Password,
		Permissions: &embednats.Permissions{DenyPublish: []string{"$JS.API.>"}}})
	testutil.Eventually(t, 10*time.Second, "the service back", svc.IsConnected)
	kv = routesKV(t, svc)
	if _, err := kv.PutString(ctx, "web", `[{"path":"/new/"}]`); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "gateway to reconnect", nc.IsConnected)
	if c, body := get(t, readyz); c == 200 {
		t.Errorf("readyz = %d %q back on NATS before narun-routes is read again, want 503", c, body)
	}
	if c := code("/old/x"); c != 200 {
		t.Errorf("request to the routes held while narun-routes is unread: %d, want them served", c)
	}

	srv.Shutdown()
	testutil.Eventually(t, 10*time.Second, "gateway to notice NATS is gone", func() bool { return !nc.IsConnected() })
	serverWith(gwUser)
	// The service's connection must close before the server does, or its
	// drain waits for a server that is gone.
	t.Cleanup(svc.Close)
	testutil.Eventually(t, 30*time.Second, "ready again", func() bool {
		c, _ := get(t, readyz)
		return c == 200
	})
	if c := code("/new/x"); c != 200 {
		t.Errorf("route changed while away: %d once ready, want 200", c)
	}
	for _, path := range []string{"/old/x", "/gone/x"} {
		if c := code(path); c != 404 {
			t.Errorf("%s, whose route went while away: %d once ready, want 404", path, c)
		}
	}
}

// TestHalfWrittenConfigNotApplied drives the file watch's looks by hand: a
// configuration caught between the truncation and the write of an in-place
// save (here, empty: it parses, with no routes) is not applied; the whole
// file is, once two looks see it.
func TestHalfWrittenConfigNotApplied(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	path := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, path, "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n")
	f, _, err := readConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{Config: f.Gateway, Conn: nc, ConfigPath: path, ConfigContent: loaded(t, path)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.mux.close)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	routed := func(p string) bool {
		code, _ := get(t, hs.URL+p)
		return code != http.StatusNotFound
	}
	var seen lastLook
	writeFile(t, path, "")
	g.look(&seen)
	if !routed("/a") {
		t.Fatal("an empty file, seen once, was applied: /a is gone")
	}
	writeFile(t, path, "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n")
	g.look(&seen)
	if routed("/b") {
		t.Fatal("a change seen once was applied")
	}
	g.look(&seen)
	if !routed("/a") || !routed("/b") {
		t.Fatal("the whole file, seen twice, was not applied")
	}
}

// An edit made between the load of the file and the gateway's start
// (narun up waits for JetStream in between, minutes on a cluster member
// whose peers are down) is a change like any later one: the watch applies
// its routes, and warns of a setting that needs a restart.
func TestConfigEditedDuringStartIsApplied(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("b"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "b")
	}))
	path := filepath.Join(t.TempDir(), "narun.toml")
	one := "[gateway]\nlisten = \":8080\"\n[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"
	two := "[gateway]\nlisten = \":8081\"\n[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n"
	cfg := writeConfig(t, path, one)
	writeFile(t, path, two)
	var logs testutil.LogBuffer
	r := startRunOptions(t, Options{Config: cfg, Conn: nc, ConfigPath: path, ConfigContent: []byte(one), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	base := "http://" + r.addrs["http"]
	testutil.Eventually(t, 10*time.Second, "route /b of the file as it is now", func() bool {
		code, body := get(t, base+"/b")
		return code == 200 && body == "b"
	})
	// The reload logs what needs a restart once it has applied the
	// routes: on a slow machine the route answered before the line was
	// written.
	testutil.Eventually(t, 10*time.Second, "the reload's log naming keys=gateway.listen", func() bool {
		return strings.Contains(logs.String(), `keys=gateway.listen`)
	})
}

// Of two reloads at once (the watch's and SIGHUP's), the one that read
// the file last applies it last: the gateway serves the file's content,
// not an earlier one that no later look would see as a change.
func TestConcurrentReloadsApplyTheLatest(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, path, "[gateway]\n")
	g, err := New(Options{Config: gwConfig(), Conn: natstest.Connect(t, natstest.Start(t)), ConfigPath: path, ConfigContent: loaded(t, path)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.mux.close)
	// Long enough to parse that the second reload is done before the
	// first would be.
	var big strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&big, "[[gateway.routes]]\npath = \"/old%d\"\nservice = \"old\"\n", i)
	}
	old := big.String()
	writeFile(t, path, old)
	done := make(chan error, 1)
	go func() { done <- g.Reload() }()
	testutil.Eventually(t, 10*time.Second, "first reload read the file", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.fileVersion == version([]byte(old), nil)
	})
	newer := "[[gateway.routes]]\npath = \"/new\"\nservice = \"new\"\n"
	writeFile(t, path, newer)
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var seen lastLook
	g.look(&seen)
	g.look(&seen)
	if r, _, _ := g.table.Load().match("h", "/new", "GET"); r == nil {
		t.Errorf("the file holds route /new only; the gateway serves %d routes of an earlier content and sees nothing to reload", len(g.table.Load().routes))
	}
}

// settledMetrics reads the admin page's metrics once no request is in
// flight: a client has its response before the gateway's handler has
// returned and counted it.
func settledMetrics(t *testing.T, r *running) string {
	t.Helper()
	var m string
	testutil.Eventually(t, 10*time.Second, "metrics with no request in flight", func() bool {
		code, body := get(t, "http://"+r.addrs["admin"]+"/metrics")
		m = body
		return code == 200 && strings.Contains(m, "narun_gateway_in_flight_requests 0\n")
	})
	return m
}

// The routes cache is saved whenever the watch of narun-routes delivered
// its initial values (at every start and reconnection) or an update, most
// often with the routes it holds already: a file that holds them is not
// written again, as each write costs flash a synced file, a rename and a
// synced directory. It keeps its inode.
func TestUnchangedRoutesNotCachedAgain(t *testing.T) {
	t.Parallel()
	cache := filepath.Join(t.TempDir(), "routes.json")
	nc := natstest.Connect(t, natstest.Start(t))
	kv := routesKV(t, nc)
	if _, err := kv.PutString(context.Background(), "kept", `[{"path":"/kept/"}]`); err != nil {
		t.Fatal(err)
	}
	r := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache})
	testutil.Eventually(t, 20*time.Second, "routes cached", func() bool {
		b, _ := os.ReadFile(cache)
		return strings.Contains(string(b), `"kept"`)
	})
	inode := func() uint64 { return testutil.Inode(t, cache) }
	before := inode()
	r.gw.saveRoutesCache()
	if after := inode(); after != before {
		t.Errorf("routes cache written again though unchanged: inode %d, then %d", before, after)
	}
}

// A wildcard listen address of either spelling takes both families, as
// docs/GATEWAY.md and docs/SECURITY.md say: Go opens one IPv6 socket
// that also takes IPv4 for "0.0.0.0", so a firewall that filters IPv4
// alone leaves the port open.
func TestWildcardListenTakesBothFamilies(t *testing.T) {
	t.Parallel()
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for _, listen := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			cfg := gwConfig()
			cfg.Listen, cfg.AdminListen = listen, ""
			addr := make(chan string, 1)
			g, err := New(Options{Config: cfg, Conn: nc, OnListen: func(_, a string) { addr <- a }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			runErr := make(chan error, 1)
			go func() { runErr <- g.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-runErr; err != nil {
					t.Errorf("gateway run: %v", err)
				}
			})
			var a string
			select {
			case a = <-addr:
			case err := <-runErr:
				runErr <- err // for the cleanup
				t.Fatalf("gateway run: %v", err)
			}
			_, port, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatalf("listen address %q: %v", a, err)
			}
			for _, host := range []string{"127.0.0.1", "::1"} {
				resp, err := http.Get("http://" + net.JoinHostPort(host, port) + "/")
				if err != nil {
					t.Errorf("listening on %q (%s), a client of %s: %v", listen, a, host, err)
					continue
				}
				resp.Body.Close()
			}
		})
	}
}

// A 405 is counted under the route that matched host and path but not
// the method; its access log line names that route too, so that a line
// and the series it is counted in tell the same story.
func TestAccessLogNamesRefusedRoute(t *testing.T) {
	t.Parallel()
	var out testutil.LogBuffer
	cfg := gwConfig(config.Route{Path: "/ro", Methods: []string{"GET"}, Service: "ro"})
	cfg.AccessLog = true
	e := newEnvLogged(t, cfg, slog.New(slog.NewJSONHandler(&out, nil)))
	resp, err := http.Post(e.hs.URL+"/ro", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /ro = %d, want 405", resp.StatusCode)
	}
	// The line is written before the unflushed answer goes out.
	type line struct{ Msg, Route, Service string }
	var l line
	for _, text := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var one line
		if json.Unmarshal([]byte(text), &one) == nil && one.Msg == "request" {
			l = one
		}
	}
	if l.Msg != "request" || l.Route != "/ro" || l.Service != "" {
		t.Errorf("access log line of the 405: %+v, want route /ro and no service (none was asked)", l)
	}
	var m strings.Builder
	_ = e.gw.metrics.write(&m)
	if want := `narun_gateway_requests_total{route="/ro",code="405"} 1`; !strings.Contains(m.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// A certificate pair that loads but that clients will refuse, expired or
// not yet valid, is served (the clock may be what is wrong), and said at
// start and by --check, with its dates.
func TestTLSCertificateOutOfDateWarns(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name          string
		from, to      time.Time
		warn, notWarn string
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), "expired", ""},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48 * time.Hour), "not yet valid", ""},
		{"valid", now.Add(-time.Hour), now.Add(time.Hour), "", "tls certificate"},
	} {
		dir := t.TempDir()
		certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		testutil.CertPairValid(t, certPath, keyPath, "dated", tc.from, tc.to)
		var logs testutil.LogBuffer
		cfg := gwConfig()
		cfg.TLS = config.GatewayTLS{Cert: certPath, Key: keyPath, Listen: "127.0.0.1:0"}
		if err := Check(Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatalf("%s: check: %v", tc.name, err)
		}
		if tc.warn != "" && (!strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), tc.warn) || !strings.Contains(logs.String(), certPath)) {
			t.Errorf("%s certificate: no warning naming it %s:\n%s", tc.name, tc.warn, logs.String())
		}
		if tc.notWarn != "" && strings.Contains(logs.String(), tc.notWarn) {
			t.Errorf("%s certificate warned of:\n%s", tc.name, logs.String())
		}
	}
}

// A TLS listener set without a certificate pair serves nothing: said at
// start and by --check (Check), not left to be found by a client whose
// HTTPS connection is refused. The default address in the file, which
// testdata/narun.toml writes out, says nothing: HTTPS is off by default;
// given as --tls-listen, it was asked for.
func TestTLSListenWithoutCertWarns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen string
		chosen bool
		warns  bool
	}{
		{"127.0.0.1:9443", false, true},
		{config.Defaults().Gateway.TLS.Listen, false, false},
		{config.Defaults().Gateway.TLS.Listen, true, true},
		{"", false, false},
	} {
		var logs testutil.LogBuffer
		cfg := gwConfig()
		cfg.TLS.Listen = tc.listen
		if err := Check(Options{Config: cfg, TLSListenChosen: tc.chosen, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
			t.Fatalf("check with tls.listen %q: %v", tc.listen, err)
		}
		if got := strings.Contains(logs.String(), "HTTPS is off"); got != tc.warns {
			t.Errorf("tls.listen %q (--tls-listen %v) without cert and key: warned %v, want %v:\n%s", tc.listen, tc.chosen, got, tc.warns, logs.String())
		}
	}
}

// A request still running when the drain at shutdown ends is cut by the
// gateway, not left by its client: it is counted and logged as the
// gateway's 503 with its request id, not as a 499, nor as a 400 when its
// body was still arriving. One waiting for its reply also gets that 503,
// over HTTP/1.1 and HTTP/2, rather than a reset connection. A short
// shutdown_timeout ends the drain.
func TestCutAtShutdownIsNotClientGone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// send starts the request and returns, once the gateway holds
		// it, what reads the status line the client gets.
		send func(t *testing.T, r *running, entered <-chan struct{}) (status func() string)
	}{
		{"waiting for the service", func(t *testing.T, r *running, entered <-chan struct{}) func() string {
			got := make(chan string, 1)
			go func() {
				resp, err := http.Get("http://" + r.addrs["http"] + "/")
				if err != nil {
					got <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- resp.Status + ": " + string(b)
			}()
			<-entered
			return func() string { return <-got }
		}},
		{"waiting for the service over h2c", func(t *testing.T, r *running, entered <-chan struct{}) func() string {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			got := make(chan string, 1)
			go func() {
				resp, err := (&http.Client{Transport: tr}).Get("http://" + r.addrs["http"] + "/")
				if err != nil {
					got <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- resp.Proto + " " + resp.Status + ": " + string(b)
			}()
			<-entered
			return func() string { return <-got }
		}},
		{"body still arriving", func(t *testing.T, r *running, _ <-chan struct{}) func() string {
			sendHalfABody(t, r)
			// The handler waits on the client's read, which only the
			// connection's close ends: the client sees that close.
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := natstest.Start(t)
			nc := natstest.Connect(t, srv)
			entered, release := make(chan struct{}), make(chan struct{})
			serveOn(t, natstest.Connect(t, srv), consumerConfig("stuck"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(entered)
				<-release
			}))
			// After serveOn's: cleanups run last first, and the service
			// stops only once its handler returns.
			t.Cleanup(func() { close(release) })
			var logs testutil.LogBuffer
			cfg := gwConfig(config.Route{Path: "/", Service: "stuck"})
			cfg.AccessLog = true
			cfg.ShutdownTimeout = config.Duration(50 * time.Millisecond)
			r := startRunOptions(t, Options{Config: cfg, Conn: nc, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			status := tc.send(t, r, entered)
			r.stop()
			if status != nil {
				if got := status(); !strings.Contains(got, "503 Service Unavailable") || !strings.Contains(got, "shutdown") {
					t.Errorf("the client got %q, want a 503 saying why", got)
				}
			}

			type line struct {
				Msg, Reason string
				Status      int
				RequestID   string `json:"request_id"`
			}
			var access, failed line
			testutil.Eventually(t, 10*time.Second, "the cut request's access log line", func() bool {
				for _, text := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
					var l line
					if json.Unmarshal([]byte(text), &l) != nil {
						continue
					}
					switch l.Msg {
					case "request":
						access = l
					case "request failed":
						failed = l
					}
				}
				return access.Msg != ""
			})
			if access.Status != http.StatusServiceUnavailable {
				t.Errorf("access log status of the cut request: %d, want 503", access.Status)
			}
			if failed.Status != http.StatusServiceUnavailable || !strings.Contains(failed.Reason, "shutdown") || failed.RequestID != access.RequestID {
				t.Errorf("request failed line %+v, want 503 cut at shutdown with the request id %q", failed, access.RequestID)
			}
			var m strings.Builder
			_ = r.gw.metrics.write(&m)
			if want := `narun_gateway_requests_total{route="/",code="503"} 1`; !strings.Contains(m.String(), want) {
				t.Errorf("metrics lack %s:\n%s", want, m.String())
			}
		})
	}
}

// sendHalfABody sends a request whose body stops short of its length,
// and returns once the gateway holds it.
func sendHalfABody(t *testing.T, r *running) {
	t.Helper()
	conn, err := net.Dial("tcp", r.addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the request in flight", func() bool { return r.gw.metrics.inflight.Load() == 1 })
}

// A second signal stops at once: once the drain has cut the requests
// left, a hurry also ends the wait for their 503s, which a request whose
// body is still arriving would otherwise fill to its end (here an hour).
func TestHurryEndsTheWaitForCutAnswers(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	release := make(chan struct{})
	serveOn(t, natstest.Connect(t, srv), consumerConfig("stuck"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(func() { close(release) })
	var logs testutil.LogBuffer
	cfg := gwConfig(config.Route{Path: "/", Service: "stuck"})
	cfg.ShutdownTimeout = config.Duration(50 * time.Millisecond)
	hurry := make(chan struct{})
	r := startRunPrepared(t, Options{Config: cfg, Conn: natstest.Connect(t, srv), Hurry: hurry, Logger: slog.New(slog.NewJSONHandler(&logs, nil))},
		func(g *Gateway) { g.cutWait = time.Hour })
	sendHalfABody(t, r)
	r.stop()
	testutil.Eventually(t, 10*time.Second, "the drain over", func() bool { return r.gw.cutting() })
	close(hurry)
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run still waiting for the cut requests' answers after the hurry")
	}
}

// A request cut by a second signal, long before shutdown_timeout, is
// logged as cut by it: "not finished within shutdown_timeout" would have
// the operator raise a bound that was never reached.
func TestHurryCutNamesTheSecondSignal(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("stuck"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(func() { close(release) })
	var logs testutil.LogBuffer
	cfg := gwConfig(config.Route{Path: "/", Service: "stuck"})
	cfg.ShutdownTimeout = config.Duration(time.Hour)
	hurry := make(chan struct{})
	r := startRunPrepared(t, Options{Config: cfg, Conn: natstest.Connect(t, srv), Hurry: hurry, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	go func() {
		if resp, err := http.Get("http://" + r.addrs["http"] + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the service")
	}
	r.stop()
	close(hurry)
	testutil.Eventually(t, 10*time.Second, "the cut request logged", func() bool {
		return strings.Contains(logs.String(), `msg="request failed"`)
	})
	if want := `reason="cut at shutdown: stopped at once by a second signal"`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}

// A request whose client is still sending the body its service pulls when
// the drain at shutdown ends: the exchange must end within the drain and
// the wait for the cut answers, the service's read of the body fail (it
// hears the cancel), and the client get a 503 or see its connection end,
// over HTTP/1.1 and HTTP/2, for a body of known length or not.
func TestBodyArrivingWhenDrainEnds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		h2c    bool
		length int64 // -1: not said
	}{
		{"http1", false, 4 << 20},
		{"http1 chunked", false, -1},
		{"h2c", true, 4 << 20},
		{"h2c without length", true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := natstest.Start(t)
			entered, read := make(chan struct{}), make(chan error, 1)
			serveOn(t, natstest.Connect(t, srv), consumerConfig("upload"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var once sync.Once
				_, err := io.Copy(io.Discard, readerFunc(func(p []byte) (int, error) {
					n, err := r.Body.Read(p)
					if n > 0 {
						once.Do(func() { close(entered) })
					}
					return n, err
				}))
				read <- err
			}))
			var logs testutil.LogBuffer
			cfg := gwConfig(config.Route{Path: "/", Service: "upload", Timeout: config.Duration(10 * time.Minute)})
			cfg.BodyIdleTimeout = config.Duration(5 * time.Minute)
			cfg.ShutdownTimeout = config.Duration(50 * time.Millisecond)
			r := startRunOptions(t, Options{Config: cfg, Conn: natstest.Connect(t, srv), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})

			// More than the head carries, then nothing: the service's
			// pull waits for the rest.
			const part = 3 << 20
			got := make(chan string, 1)
			if tc.h2c {
				body, pw := io.Pipe()
				t.Cleanup(func() { _ = pw.Close() })
				go func() { _, _ = pw.Write(make([]byte, part)) }()
				tr := &http.Transport{Protocols: new(http.Protocols)}
				tr.Protocols.SetUnencryptedHTTP2(true)
				t.Cleanup(tr.CloseIdleConnections)
				req, _ := http.NewRequest("POST", "http://"+r.addrs["http"]+"/", body)
				req.ContentLength = tc.length
				go func() {
					resp, err := tr.RoundTrip(req)
					if err != nil {
						got <- "error: " + err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					got <- resp.Status + ": " + string(b)
				}()
			} else {
				// Not net/http's client: it reports the connection's end
				// only once its write of the body, here waiting for a
				// body that never ends, is over.
				c, err := net.Dial("tcp", r.addrs["http"])
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", tc.length)
				if tc.length < 0 {
					head = fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", part)
				}
				go func() { _, _ = c.Write(append([]byte(head), make([]byte, part)...)) }()
				go func() {
					_ = c.SetReadDeadline(time.Now().Add(time.Minute))
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						got <- "error: " + err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					got <- resp.Status + ": " + string(b)
				}()
			}
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the service got none of the body")
			}
			r.stop()
			select {
			case err := <-r.done:
				r.done <- err
			case <-time.After(10 * time.Second):
				t.Fatal("Run still running 10 s after a drain of 50 ms")
			}
			select {
			case err := <-read:
				if err == nil {
					t.Error("the service read the body to its end, want its read to fail")
				}
			case <-time.After(10 * time.Second):
				t.Error("the service's read of the body still waits")
			}
			select {
			case status := <-got:
				if !strings.HasPrefix(status, "error: ") && !strings.HasPrefix(status, "503 ") {
					t.Errorf("the client got %q, want a 503 or its connection ended", status)
				}
			case <-time.After(10 * time.Second):
				t.Error("the client still waits")
			}
			if strings.Contains(logs.String(), "panic") {
				t.Errorf("panic logged:\n%s", logs.String())
			}
		})
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// heldSlowpoke serves the service "slowpoke" on srv with a handler that
// closes entered as it starts, then answers "done" once release is closed.
func heldSlowpoke(t *testing.T, srv *embednats.Server) (entered, release chan struct{}) {
	t.Helper()
	entered, release = make(chan struct{}), make(chan struct{})
	serveOn(t, natstest.Connect(t, srv), consumerConfig("slowpoke"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	return entered, release
}

// A reload's line counts the routes of the file it names, as the start's
// line does, and the deployed apps apart: it counted every route served, so
// a narun.toml without routes reloaded as `routes=2` on a device with two
// apps, where the start had said `routes=0`.
func TestReloadCountsTheFilesRoutes(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	kv := routesKV(t, nc)
	for _, app := range []string{"one", "two"} {
		if _, err := kv.PutString(context.Background(), app, fmt.Sprintf(`[{"path":"/%s/"}]`, app)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "narun.toml")
	cfg := writeConfig(t, path, "[[gateway.routes]]\npath = \"/file/\"\nservice = \"file\"\n")
	var logs testutil.LogBuffer
	r := startRunLogged(t, nc, cfg, path, slog.New(slog.NewTextHandler(&logs, nil)))
	testutil.Eventually(t, 20*time.Second, "narun-routes read", r.gw.routesCurrent)
	if err := r.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	const want = `msg="routes reloaded" file=`
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, want) {
			if !strings.Contains(line, " routes=1 ") || !strings.Contains(line, " apps=2") {
				t.Errorf("the reload's line does not count the file's route and the two apps apart: %s", line)
			}
			return
		}
	}
	t.Fatalf("no reload line:\n%s", logs.String())
}

// The gateway's watch of narun-routes hears from JetStream every
// store.WatchHeartbeat, so that one its cluster member took with it is
// made again within seconds, not nats.go's 10 to 15 (docs/CLUSTER.md).
func TestRoutesWatchHeartbeat(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Start(t))
	startRun(t, nc, gwConfig(), "")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if beats := testutil.WatchHeartbeats(t, js, names.RoutesBucket, 1); beats[0] != store.WatchHeartbeat {
		t.Fatalf("heartbeat of the watch of %s: %s, want %s", names.RoutesBucket, beats[0], store.WatchHeartbeat)
	}
}
