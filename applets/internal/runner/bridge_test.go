package runner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An [http] app that does not answer (killed, not yet listening) gets its
// request a 502, and narun's log a warning that names the app's address
// and the request, in narun's format, not net/http's own line; a request
// whose client left is no warning.
func TestBridgeProxyLogsUnansweredRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close() // nothing listens there now: connections are refused
	var logs testutil.LogBuffer
	var d net.Dialer
	proxy, tr := bridgeProxy(target, d.DialContext, slog.New(slog.NewJSONHandler(&logs, nil)))
	defer tr.CloseIdleConnections()

	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set("X-Request-Id", "rid-1")
	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadGateway {
		t.Errorf("status %d, want 502", rec.Code)
	}
	line := logs.String()
	for _, want := range []string{`"level":"WARN"`, `"addr":"` + target.Host + `"`, `"request_id":"rid-1"`, "connection refused"} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %s:\n%s", want, line)
		}
	}

	var quiet testutil.LogBuffer
	proxy, tr = bridgeProxy(target, d.DialContext, slog.New(slog.NewJSONHandler(&quiet, nil)))
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec = httptest.NewRecorder()
	proxy.ServeHTTP(rec, req.WithContext(ctx))
	if quiet.String() != "" {
		t.Errorf("a request whose client left was logged:\n%s", quiet.String())
	}
}

// TestHTTPBridgeFollowsRouteService moves an [http] app's route to another
// service. [[routes]] is not in the fingerprint, so the instance keeps
// running, and its bridge must serve the subject the route now names: the
// gateway sends the route's requests there.
func TestHTTPBridgeFollowsRouteService(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "plain-b"})
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	app := func(service string) string {
		return fmt.Sprintf("args = [\"--http\", %q]\n[http]\nport = %s\n[[routes]]\npath = \"/hello/\"\nservice = %q\n", addr, port, service)
	}
	c.deploy(t, "plain", "1.0.0", helloBin, app("plain-a"))
	before := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
	c.deploy(t, "plain", "1.0.0", helloBin, app("plain-b"))
	if body := postHello(t, gw, "moved"); !strings.Contains(body, "Hello, moved") {
		t.Errorf("body %s", body)
	}
	if after := tr.of("plain"); len(after) != 1 || after[0].ID != before.ID || after[0].PID != before.PID {
		t.Errorf("instances %+v, want %s still running as pid %d", after, before.ID, before.PID)
	}
}
