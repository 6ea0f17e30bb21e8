package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// Connections beyond max_connections cannot take the process's memory
// and file descriptors: a new one takes the place of an idle keep-alive
// connection, and with none idle it is closed at once, while the admin
// listener still answers.
func TestConnectionLimit(t *testing.T) {
	srv := natstest.Start(t)
	release := make(chan struct{})
	arrived := make(chan struct{}, 2)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("svc"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
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
