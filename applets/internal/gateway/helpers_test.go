package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// env is one embedded NATS server with a gateway in front of it.
type env struct {
	srv *embednats.Server
	nc  *nats.Conn
	gw  *Gateway
	hs  *httptest.Server
}

// settled waits until the gateway has no request in flight and what it
// published has reached nc: once both connections are flushed.
func (e *env) settled(t *testing.T, nc *nats.Conn) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "no request in flight", func() bool {
		return e.gw.metrics.inflight.Load() == 0
	})
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func gwConfig(routes ...config.Route) config.Gateway {
	c := config.Defaults().Gateway
	c.Routes = routes
	return c
}

func newEnv(t testing.TB, cfg config.Gateway) *env {
	t.Helper()
	return newEnvLogged(t, cfg, nil)
}

// newEnvLogged is newEnv with the gateway logging to log.
func newEnvLogged(t testing.TB, cfg config.Gateway, log *slog.Logger) *env {
	t.Helper()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	g, err := New(Options{Config: cfg, Conn: nc, Logger: log})
	if err != nil {
		t.Fatalf("new gateway: %v", err)
	}
	t.Cleanup(g.mux.close)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	return &env{srv: srv, nc: nc, gw: g, hs: hs}
}

// startH2C serves e's gateway over HTTP/1 and HTTP/2 without TLS (h2c),
// with Run's HTTP/2 limits.
func startH2C(t testing.TB, e *env) *httptest.Server {
	t.Helper()
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Config.HTTP2 = http2Limits(time.Duration(e.gw.bodyIdle.Load()))
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

// routesKV opens (or creates) narun-routes through nc.
func routesKV(t testing.TB, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := store.KV(context.Background(), js, names.RoutesBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// serve runs h as the consumer service name until the test ends and waits
// until it answers NATS Micro pings.
func (e *env) serve(t testing.TB, name string, h http.Handler) {
	t.Helper()
	serveOn(t, natstest.Connect(t, e.srv), consumer.Config{Name: name}, h)
}

func serveOn(t testing.TB, nc *nats.Conn, cfg consumer.Config, h http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Serve(ctx, nc, cfg, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, consumer.ErrConnClosed) {
			t.Errorf("consumer %s: %v", cfg.Name, err)
		}
	})
	testutil.Eventually(t, 10*time.Second, "service "+cfg.Name+" answers pings", func() bool {
		_, err := nc.Request("$SRV.PING."+cfg.Name, nil, time.Second)
		return err == nil
	})
}

// countedLine waits for the requests counter of route to appear in the
// gateway's metrics and returns its line, which names the status counted.
func countedLine(t *testing.T, e *env, route string) string {
	t.Helper()
	var line string
	testutil.Eventually(t, 10*time.Second, "the request counted", func() bool {
		var b strings.Builder
		_ = e.gw.metrics.write(&b)
		for l := range strings.Lines(b.String()) {
			if strings.HasPrefix(l, `narun_gateway_requests_total{route="`+route+`"`) {
				line = strings.TrimSpace(l)
				return true
			}
		}
		return false
	})
	return line
}
