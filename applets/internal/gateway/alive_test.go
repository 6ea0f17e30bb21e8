package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/consumer"
)

// A service that said it still works on a request (an alive frame) and
// then says nothing more, as one killed mid-request does, is taken for
// gone once the silence its frame allowed has passed, not at the route's
// timeout (an hour here): before its head the client gets a 502 that says
// so, after its head an aborted response. One that keeps sending alive
// frames keeps the exchange past that silence, and a frame without a
// number of milliseconds is ignored, as an unknown frame is.
func TestSilenceAfterAliveEndsTheExchange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "silent", Timeout: config.Duration(time.Hour)}))
	nc := natsConn(t, e)
	alive := func(reply, ms string) {
		_ = nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAlive}, consumer.HeaderAliveTimeout: {ms}}})
	}
	_, err := nc.Subscribe("silent", func(m *nats.Msg) {
		switch m.Header.Get(consumer.HeaderPath) {
		case "/before-head":
			alive(m.Reply, "1000")
		case "/after-head":
			alive(m.Reply, "1000")
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("event 1\n")})
		case "/kept":
			go func() {
				// Each frame allows 2 s, and they keep the exchange for
				// 3 s before the answer.
				for range 12 {
					alive(m.Reply, "2000")
					time.Sleep(250 * time.Millisecond)
				}
				_ = nc.Publish(m.Reply, []byte("answered"))
			}()
		case "/ignored":
			go func() {
				alive(m.Reply, "soon")
				time.Sleep(1500 * time.Millisecond)
				_ = nc.Publish(m.Reply, []byte("answered"))
			}()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func(path string) (*http.Response, string, error) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	resp, body, err := get("/before-head")
	if err != nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "the service stopped answering: nothing from it for 1s after it said it was still working") {
		t.Errorf("a service silent after an alive frame, before its head: %d %q (%v), want a 502 saying it stopped answering", resp.StatusCode, body, err)
	}
	resp, body, err = get("/after-head")
	if resp.StatusCode != http.StatusOK || body != "event 1\n" || err == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("a service silent after an alive frame and its head: %d %q (%v), want the response cut after the first part", resp.StatusCode, body, err)
	}
	for _, path := range []string{"/kept", "/ignored"} {
		if resp, body, err := get(path); err != nil || resp.StatusCode != http.StatusOK || body != "answered" {
			t.Errorf("GET %s: %d %q (%v), want 200 answered", path, resp.StatusCode, body, err)
		}
	}
	if got := e.gw.metrics.outcomes[outcomeError].Load(); got != 2 {
		t.Errorf("%d exchanges counted as errors, want the 2 that went silent", got)
	}
}

// A Server-Sent Events stream of the consumer library whose instance dies
// between two events (its NATS connection gone at once, as for a kill)
// is cut once the silence its alive frames allowed has passed: the client
// can reconnect, to another instance, instead of waiting for the route's
// timeout with an open stream that nothing will ever write to.
func TestKilledConsumerCutsItsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/events", Service: "sse", Timeout: config.Duration(time.Hour)}))
	svc := natsConn(t, e)
	serveOn(t, svc, consumer.Config{Name: "sse"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	watch := natsConn(t, e)
	alive := make(chan struct{}, 1)
	_, err := watch.Subscribe(">", func(m *nats.Msg) {
		if m.Header.Get(consumer.HeaderFrame) == consumer.FrameAlive {
			select {
			case alive <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("data: 1\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: 1\n\n" {
		t.Fatalf("first event %q (%v)", first, err)
	}
	select {
	case <-alive:
	case <-ctx.Done():
		t.Fatal("the quiet stream sent no alive frame")
	}
	svc.Close()
	rest, err := io.ReadAll(resp.Body)
	if err == nil || ctx.Err() != nil || len(rest) > 0 {
		t.Errorf("after the service died the stream gave %q more and %v, want it cut without more", rest, err)
	}
}

// An alive frame's Narun-Alive-Timeout is read in any case, as every
// protocol header of a reply is (docs/PROTOCOL.md): a responder whose
// headers are lower case (a Python dict, say) must not have its frame
// ignored, and a killed instance waited for until the route's timeout.
func TestAliveTimeoutInAnyCase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "lower", Timeout: config.Duration(time.Hour)}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("lower", func(m *nats.Msg) {
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-frame": {"alive"}, "narun-alive-timeout": {"1000"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("a service silent after a lower-case alive frame: %v, want a 502 saying it stopped answering", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "the service stopped answering") {
		t.Errorf("a service silent after a lower-case alive frame: %d %q, want a 502 saying it stopped answering", resp.StatusCode, body)
	}
}
