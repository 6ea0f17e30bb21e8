package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// sendExpecting sends a request head with Expect: 100-continue for body,
// and checks that the client is asked for the body (100 Continue) before
// anything else, then sends it and returns the final response.
func sendExpecting(t *testing.T, c net.Conn, path string, body []byte) *http.Response {
	t.Helper()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, len(body))
	// Bounds a failure only: a client that waits for 100 Continue for
	// ever is what is tested.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the first response: %v", err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("first response %d, want 100 Continue: the service reads the body", resp.StatusCode)
	}
	if _, err := c.Write(body); err != nil {
		t.Fatalf("send the body: %v", err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the final response: %v", err)
	}
	return resp
}

// TestExpectContinueAfterStreamedHead checks that a responder that streams
// its head before it pulls the body gets the body of a client that waits
// for 100 Continue: HTTP/1.1 allows no 100 after the final head, so the
// gateway sends it before that head.
func TestExpectContinueAfterStreamedHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/echo", Service: "echohead", Timeout: config.Duration(time.Minute)}))
	nc := natsConn(t, e)
	if _, err := nc.Subscribe("echohead", func(m *nats.Msg) {
		go func() {
			head := nats.NewMsg(m.Reply)
			head.Header.Set("Narun-Body", "stream")
			_ = nc.PublishMsg(head)
			var got []byte
			for {
				p := nats.NewMsg(m.Reply)
				p.Header.Set("Narun-Frame", "pull")
				chunk, err := nc.RequestMsg(p, 30*time.Second)
				if err != nil {
					return
				}
				got = append(got, chunk.Data...)
				if frame := chunk.Header.Get("Narun-Frame"); frame != "data" {
					if frame != "end" {
						return
					}
					break
				}
			}
			end := nats.NewMsg(m.Reply)
			end.Header.Set("Narun-Frame", "end")
			end.Data = []byte(digest(got))
			_ = nc.PublishMsg(end)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	body := randomBytes(3<<20, 21)
	resp := sendExpecting(t, dialRaw(t, e), "/echo", body)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(got) != digest(body) {
		t.Errorf("final response %d %q (%v), want 200 and the body's digest", resp.StatusCode, got, err)
	}
	// PROTOCOL.md §1 says so: net/http closes after a head written before
	// an expected body was read to its end, whatever is read after it.
	if !resp.Close {
		t.Errorf("final response kept the connection, want Connection: close")
	}
}

// TestExpectContinueHandlerFlushesFirst checks the same for a Go handler
// that flushes its head before it reads the body: under net/http's server
// itself its client would have to send the body unasked.
func TestExpectContinueHandlerFlushesFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "flushfirst", Timeout: config.Duration(time.Minute)}))
	e.serve(t, "flushfirst", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		b, err := io.ReadAll(r.Body)
		if err != nil {
			_, _ = fmt.Fprintf(w, "read the body: %v", err)
			return
		}
		_, _ = io.WriteString(w, digest(b))
	}))
	body := randomBytes(3<<20, 22)
	resp := sendExpecting(t, dialRaw(t, e), "/x", body)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(got) != digest(body) {
		t.Errorf("final response %d %q (%v), want 200 and the body's digest", resp.StatusCode, got, err)
	}
}

// TestAbortAfterHeadLogged checks that a response aborted after its head,
// for a request body that stalled or for the service's error in its end
// frame, is logged with its reason and counted under the status the
// gateway would have sent had the head not gone out, not as the 200 the
// client saw in the head.
func TestAbortAfterHeadLogged(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "aborts", Timeout: config.Duration(time.Minute)})
	cfg.AccessLog = true
	cfg.BodyIdleTimeout = config.Duration(200 * time.Millisecond)
	var logs testutil.LogBuffer
	e := newEnvLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	nc := natsConn(t, e)
	if _, err := nc.Subscribe("aborts", func(m *nats.Msg) {
		go func() {
			head := nats.NewMsg(m.Reply)
			head.Header.Set("Narun-Body", "stream")
			_ = nc.PublishMsg(head)
			if m.Header.Get("Narun-Path") == "/error" {
				end := nats.NewMsg(m.Reply)
				end.Header.Set("Narun-Frame", "end")
				end.Header.Set("Nats-Service-Error-Code", "503")
				end.Header.Set("Nats-Service-Error", "disk full")
				_ = nc.PublishMsg(end)
				return
			}
			for {
				p := nats.NewMsg(m.Reply)
				p.Header.Set("Narun-Frame", "pull")
				chunk, err := nc.RequestMsg(p, 30*time.Second)
				if err != nil || chunk.Header.Get("Narun-Frame") != "data" {
					return
				}
			}
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := dialRaw(t, e)
	fmt.Fprintf(c, "GET /error HTTP/1.1\r\nHost: a\r\nX-Request-Id: abort-error\r\n\r\n")
	readAborted(t, c, bufio.NewReader(c))

	// Part of the body, then nothing: the pull waits for the rest past
	// body_idle_timeout.
	c = dialRaw(t, e)
	fmt.Fprintf(c, "POST /stall HTTP/1.1\r\nHost: a\r\nX-Request-Id: abort-stall\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 3<<20)
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("first response %v (%v), want 100 Continue", resp, err)
	}
	_, _ = io.WriteString(c, "some of it")
	readAborted(t, c, br)

	for _, want := range []string{
		`msg="response aborted" status=503 reason="service error after the head: disk full" route=/ service=aborts request_id=abort-error`,
		`uri=/error proto=HTTP/1.1 status=503`,
		`msg="response aborted" status=408 reason="request body stalled`,
		`uri=/stall proto=HTTP/1.1 status=408`,
	} {
		testutil.Eventually(t, 10*time.Second, "log "+want+" in:\n"+logs.String(), func() bool { return strings.Contains(logs.String(), want) })
	}
}

// readAborted reads a response whose head says 200 and whose body is cut.
func readAborted(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil {
		t.Errorf("response %d, body read error %v: want 200 and a body cut short", resp.StatusCode, err)
	}
}

// TestStalledReaderOfContinueIsCut has a client that waits for 100
// Continue read nothing, where net/http would send that 100 on the body's
// first read (a body that travels with the head, or one the service pulls
// first): the write must give up after body_idle_timeout, as the gateway's
// own 100 before a streamed head does (TestStalledReaderOfInterimIsCut),
// rather than hold the exchange and the service until the route's
// timeout.
func TestStalledReaderOfContinueIsCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, head string }{
		{"with the head", "Content-Length: 100"},
		{"pulled", fmt.Sprintf("Content-Length: %d", 4<<20)},
		{"pulled, chunked", "Transfer-Encoding: chunked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := gwConfig(config.Route{Path: "/", Service: "pulls", Timeout: config.Duration(10 * time.Minute)})
			cfg.BodyIdleTimeout = config.Duration(time.Second)
			e := newEnv(t, cfg)
			nc := natsConn(t, e)
			if _, err := nc.Subscribe("pulls", func(m *nats.Msg) {
				p := nats.NewMsg(m.Reply)
				p.Header.Set("Narun-Frame", "pull")
				p.Reply = nc.NewRespInbox()
				_ = nc.PublishMsg(p)
			}); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			c := e.dialPipe(t)
			if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\n"+tc.head+"\r\nExpect: 100-continue\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 20*time.Second, "the gateway gives up the 100 Continue nobody reads", func() bool {
				return e.gw.metrics.inflight.Load() == 0
			})
		})
	}
}

// TestOneContinue checks that a client that waits for 100 Continue gets
// one, over HTTP/1.1 and HTTP/2, whether its body travels with the head or
// is pulled, before the service's head or after it: the gateway sends it
// itself, and net/http must not send its own as well.
func TestOneContinue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "continues", Timeout: config.Duration(time.Minute)}))
	nc := natsConn(t, e)
	if _, err := nc.Subscribe("continues", func(m *nats.Msg) {
		go func() {
			headFirst := m.Header.Get("Narun-Path") == "/head-first"
			streamed := m.Header.Get("Narun-Body") == "stream"
			head := nats.NewMsg(m.Reply)
			head.Header.Set("Narun-Body", "stream")
			if headFirst || !streamed {
				_ = nc.PublishMsg(head)
			}
			for streamed {
				p := nats.NewMsg(m.Reply)
				p.Header.Set("Narun-Frame", "pull")
				chunk, err := nc.RequestMsg(p, 30*time.Second)
				if err != nil {
					return
				}
				streamed = chunk.Header.Get("Narun-Frame") == "data"
			}
			if !headFirst && m.Header.Get("Narun-Body") == "stream" {
				_ = nc.PublishMsg(head)
			}
			end := nats.NewMsg(m.Reply)
			end.Header.Set("Narun-Frame", "end")
			end.Data = []byte("done")
			_ = nc.PublishMsg(end)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Config.HTTP2 = http2Limits(time.Duration(e.gw.bodyIdle.Load()))
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		// Waits for the 100 as long as the test may take: one that
		// never comes fails the test rather than go unseen.
		tr := &http.Transport{Protocols: new(http.Protocols), ExpectContinueTimeout: time.Minute,
			TLSClientConfig: hs.Client().Transport.(*http.Transport).TLSClientConfig}
		tr.Protocols.SetHTTP1(proto == "HTTP/1.1")
		tr.Protocols.SetHTTP2(proto == "HTTP/2")
		t.Cleanup(tr.CloseIdleConnections)
		for _, path := range []string{"/head-first", "/pull-first"} {
			for _, size := range []int{100, 3 << 20, -1} {
				var continues atomic.Int32
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
					if code == http.StatusContinue {
						continues.Add(1)
					}
					return nil
				}}
				var body io.Reader = bytes.NewReader(make([]byte, max(size, 1000)))
				if size < 0 {
					// Hides the length: sent chunked, or over HTTP/2
					// without content-length.
					body = io.MultiReader(body)
				}
				ctx := httptrace.WithClientTrace(context.Background(), trace)
				req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+path, body)
				req.Header.Set("Expect", "100-continue")
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("%s %s, body of %d: %v", proto, path, size, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.Proto != proto+map[string]string{"HTTP/2": ".0"}[proto] || string(got) != "done" || continues.Load() != 1 {
					t.Errorf("%s %s, body of %d: %s %d %q (%v) after %d 100 Continue, want %s 200 \"done\" after one",
						proto, path, size, resp.Proto, resp.StatusCode, got, err, continues.Load(), proto)
				}
			}
		}
	}
}
