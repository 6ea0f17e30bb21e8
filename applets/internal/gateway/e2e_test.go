package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// seen is what a handler observed of a request.
type seen struct {
	Method, Path, RawPath, Query, RequestURI, Host, RemoteAddr, Proto string
	Header                                                            http.Header
	Body                                                              string
	Deadline                                                          bool
}

func recorder() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, dl := r.Context().Deadline()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Reply", "yes")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		_ = json.NewEncoder(w).Encode(seen{r.Method, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.RequestURI, r.Host, r.RemoteAddr, r.Proto, r.Header, string(b), dl})
	})
}

// sendSeen makes req and returns the response, its body read, with what
// the recorder saw.
func sendSeen(t *testing.T, req *http.Request) (*http.Response, seen) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s seen
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return resp, s
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Path: "/rec/", Service: "rec"},
		config.Route{Path: "/strip/", Service: "rec", StripPrefix: true},
	))
	e.serve(t, "rec", recorder())

	req, _ := http.NewRequest("PUT", e.hs.URL+"/rec/a%2Fb/c?x=1&y=%20z&x=2", strings.NewReader("payload"))
	req.Host = "api.example.com:8080"
	req.Header.Set("X-Custom", "v1")
	req.Header.Add("X-Multi", "m1")
	req.Header.Add("X-Multi", "m2")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Prefix", "/forged")
	req.Header.Set("X-Request-Id", "client-id-42")
	req.Header.Set("Narun-Method", "DELETE") // a client must not forge protocol headers
	req.Header.Set("Narun-Status", "500")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "dropped")
	resp, s := sendSeen(t, req)
	checks := []struct{ what, got, want string }{
		{"status", fmt.Sprint(resp.StatusCode), "200"},
		{"method", s.Method, "PUT"},
		{"path", s.Path, "/rec/a/b/c"},
		{"raw path", s.RawPath, "/rec/a%2Fb/c"},
		{"query", s.Query, "x=1&y=%20z&x=2"},
		{"host", s.Host, "api.example.com:8080"},
		{"body", s.Body, "payload"},
		{"custom header", s.Header.Get("X-Custom"), "v1"},
		{"multi header", strings.Join(s.Header.Values("X-Multi"), ","), "m1,m2"},
		{"traceparent", s.Header.Get("Traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"x-forwarded-for", s.Header.Get("X-Forwarded-For"), "203.0.113.7, 127.0.0.1"},
		{"x-forwarded-host", s.Header.Get("X-Forwarded-Host"), "api.example.com:8080"},
		{"x-forwarded-proto", s.Header.Get("X-Forwarded-Proto"), "http"},
		{"x-forwarded-prefix, nothing stripped", s.Header.Get("X-Forwarded-Prefix"), ""},
		{"request id in", s.Header.Get("X-Request-Id"), "client-id-42"},
		{"request id out", resp.Header.Get("X-Request-Id"), "client-id-42"},
		{"hop header", s.Header.Get("X-Hop"), ""},
		{"connection", s.Header.Get("Connection"), ""},
		{"forged protocol header", s.Header.Get("Narun-Status"), ""},
		{"reply header", resp.Header.Get("X-Reply"), "yes"},
		{"multi reply header", strings.Join(resp.Header.Values("Set-Cookie"), ","), "a=1,b=2"},
		{"content type", resp.Header.Get("Content-Type"), "application/json"},
		{"deadline", fmt.Sprint(s.Deadline), "true"},
		{"proto", s.Proto, "HTTP/1.1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if !strings.HasPrefix(s.RemoteAddr, "127.0.0.1:") {
		t.Errorf("remote addr = %q, want the client's 127.0.0.1:port", s.RemoteAddr)
	}

	// strip_prefix, and a generated request id when the client's is unusable;
	// an X-Forwarded-For the client's Connection names is for the gateway
	// alone, as any header it names.
	req, _ = http.NewRequest("GET", e.hs.URL+"/strip/users/7", nil)
	req.Header.Set("X-Request-Id", "bad id with spaces")
	req.Header.Set("X-Forwarded-Prefix", "/forged")
	req.Header.Set("X-Forwarded-For", "198.51.100.1")
	req.Header.Set("Connection", "X-Forwarded-For")
	resp, s = sendSeen(t, req)
	if s.Path != "/users/7" {
		t.Errorf("stripped path = %q, want /users/7", s.Path)
	}
	if xff := s.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For named by Connection: service got %q, want only the client's address", xff)
	}
	// What the service prepends to its paths for links the client can follow.
	if p := s.Header.Values("X-Forwarded-Prefix"); len(p) != 1 || p[0] != "/strip" {
		t.Errorf("X-Forwarded-Prefix = %q, want only the stripped /strip", p)
	}
	rid := resp.Header.Get("X-Request-Id")
	if rid == "" || rid == "bad id with spaces" || s.Header.Get("X-Request-Id") != rid {
		t.Errorf("request id out %q, in %q: want a generated id, the same on both sides", rid, s.Header.Get("X-Request-Id"))
	}

	// A sane id the client's Connection names is for the gateway alone too.
	req, _ = http.NewRequest("GET", e.hs.URL+"/rec/", nil)
	req.Header.Set("X-Request-Id", "hop-id-1")
	req.Header.Set("Connection", "x-request-id")
	resp, _ = sendSeen(t, req)
	if got := resp.Header.Get("X-Request-Id"); got == "" || got == "hop-id-1" {
		t.Errorf("request id %q for a client's X-Request-Id its Connection names: want a generated one", got)
	}

	// An empty query is still a query: "/a?" is another URL than "/a" to
	// a signature or a cache key.
	req, _ = http.NewRequest("GET", e.hs.URL+"/rec/q?", nil)
	_, s = sendSeen(t, req)
	if s.RequestURI != "/rec/q?" || s.Query != "" {
		t.Errorf("request URI %q, query %q: want /rec/q? and an empty query", s.RequestURI, s.Query)
	}
}

func digest(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestLargeBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "big"}))
	download := randomBytes(5<<20, 2)
	e.serve(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("X-Sum", digest(download))
			_, _ = w.Write(download)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", len(b), digest(b))
	}))

	upload := randomBytes(2<<20, 1)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("upload chunked=%v", chunked), func(t *testing.T) {
			var body io.Reader = bytes.NewReader(upload)
			if chunked {
				body = io.MultiReader(body) // hides the length: Transfer-Encoding: chunked
			}
			resp, err := http.Post(e.hs.URL+"/up", "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("%d %s", len(upload), digest(upload)); string(got) != want {
				t.Errorf("service saw %q, want %q", got, want)
			}
		})
	}
	t.Run("download", func(t *testing.T) {
		resp, err := http.Get(e.hs.URL + "/down")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(download) || digest(got) != resp.Header.Get("X-Sum") {
			t.Errorf("downloaded %d bytes sum %s, want %d bytes sum %s", len(got), digest(got), len(download), resp.Header.Get("X-Sum"))
		}
	})
}

func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/events", Service: "sse"}))
	next := make(chan struct{})
	handlerDone := make(chan struct{})
	e.serve(t, "sse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			// The next event waits until the client has seen this one, so
			// the client can only pass if events arrive one by one.
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	resp, err := http.Get(e.hs.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("event %d = %q, want %q", i, line, want)
		}
		_, _ = br.ReadString('\n')
		select {
		case <-handlerDone:
			t.Fatalf("handler returned before event %d was read", i)
		default:
		}
		next <- struct{}{}
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("trailing data %q", rest)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(
		config.Route{Path: "/ok/", Service: "ok"},
		config.Route{Path: "/get-only", Methods: []string{"GET", "HEAD"}, Service: "ok"},
		config.Route{Path: "/get", Methods: []string{"GET"}, Service: "ok"},
		config.Route{Path: "/small", Service: "ok", MaxBody: 10},
		config.Route{Path: "/nobody", Service: "nobody"},
		config.Route{Path: "/slow", Service: "slow", Timeout: config.Duration(200 * time.Millisecond)},
		config.Route{Path: "/raw/", Service: "raw"},
	)
	var logs testutil.LogBuffer
	e := newEnvLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	e.serve(t, "ok", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	e.serve(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	// raw answers like a hand-written responder in any language would.
	raw := natsConn(t, e)
	if _, err := raw.Subscribe("raw", func(m *nats.Msg) {
		reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		switch m.Header.Get(consumer.HeaderPath) {
		case "/raw/bad-status":
			reply.Header.Set("Narun-Status", "abc")
		case "/raw/frame-first":
			reply.Header.Set("Narun-Frame", "data")
		case "/raw/micro-404":
			reply.Header.Set("Nats-Service-Error-Code", "404")
			reply.Header.Set("Nats-Service-Error", "no such user")
		case "/raw/micro-odd":
			reply.Header.Set("Nats-Service-Error-Code", "E42")
			reply.Header.Set("Nats-Service-Error", "database down")
		case "/raw/wrong-length":
			reply.Header.Set("Content-Length", "99")
			reply.Data = []byte("6 byte")
		case "/raw/lower":
			reply.Header.Set("narun-status", "418")
			reply.Header.Set("x-lower", "kept")
			reply.Data = []byte("teapot")
		}
		_ = raw.PublishMsg(reply)
	}); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, method, path string
		body               io.Reader
		status             int
		header, value      string
		bodyHas            string
	}{
		{"no route", "GET", "/nowhere", nil, 404, "", "", "no route"},
		{"method", "POST", "/get-only", nil, 405, "Allow", "GET, HEAD", "not allowed"},
		{"method, GET listed", "POST", "/get", nil, 405, "Allow", "GET, HEAD", "not allowed"},
		{"HEAD where GET is listed", "HEAD", "/get", nil, 200, "", "", ""},
		// One wording whether the length was given or the body ran past it.
		{"too large", "POST", "/small", strings.NewReader("12345678901"), 413, "", "", "request body too large: more than 10 bytes\nrequest id: "},
		{"too large chunked", "POST", "/small", io.MultiReader(strings.NewReader("12345678901")), 413, "", "", "request body too large: more than 10 bytes\nrequest id: "},
		{"no responders", "GET", "/nobody", nil, 503, "Retry-After", "1", "no instance"},
		{"timeout", "GET", "/slow", nil, 504, "", "", "within 200ms"},
		{"bad status", "GET", "/raw/bad-status", nil, 502, "", "", "malformed"},
		{"frame before head", "GET", "/raw/frame-first", nil, 502, "", "", "malformed"},
		{"micro error code", "GET", "/raw/micro-404", nil, 404, "", "", "no such user"},
		{"micro error odd code", "GET", "/raw/micro-odd", nil, 502, "", "", "database down"},
		{"lower-case headers", "GET", "/raw/lower", nil, 418, "X-Lower", "kept", "teapot"},
		{"length of the payload", "GET", "/raw/wrong-length", nil, 200, "Content-Length", "6", "6 byte"},
		{"ok", "POST", "/small", strings.NewReader("1234567890"), 200, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.hs.URL+tc.path, tc.body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, b)
			}
			if tc.header != "" && resp.Header.Get(tc.header) != tc.value {
				t.Errorf("%s = %q, want %q", tc.header, resp.Header.Get(tc.header), tc.value)
			}
			if !strings.Contains(string(b), tc.bodyHas) {
				t.Errorf("body %q does not contain %q", b, tc.bodyHas)
			}
			rid := resp.Header.Get("X-Request-Id")
			if tc.status >= 400 && tc.status != 418 && (rid == "" || !strings.Contains(string(b), rid)) {
				t.Errorf("error body %q does not name the request id %q", b, rid)
			}
			// The gateway's own errors are logged with the service, which
			// the client is not told.
			if gatewayMade[tc.name] {
				if !strings.Contains(logs.String(), "request_id="+rid) {
					t.Errorf("no log line for request %s:\n%s", rid, logs.String())
				}
				for _, svc := range []string{"nobody", "slow", "raw"} {
					if strings.Contains(string(b), "service "+svc) {
						t.Errorf("error body %q names the service", b)
					}
				}
			}
		})
	}
}

// gatewayMade are the cases of TestErrors where the gateway, not the
// service, decided the error.
var gatewayMade = map[string]bool{
	"too large": true, "too large chunked": true, "no responders": true,
	"timeout": true, "bad status": true, "frame before head": true,
}

// TestLargeHeadersWithLargeBody sends headers larger than the room the
// request head leaves them (a long Host travels twice) with a body that
// fills a chunk, of known length or not: the body must arrive whole, its
// first part made smaller, not the request fail with a 503 and
// Retry-After as though the service were down. Headers that fit in no
// message get a 431: no retry mends them.
func TestLargeHeadersWithLargeBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "sum"}))
	e.serve(t, "sum", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", len(b), digest(b))
	}))
	host := strings.Repeat("h", 40<<10)
	for _, tc := range []struct {
		name  string
		size  int
		known bool
	}{
		{"one chunk", e.gw.chunkSize(), true},
		{"several chunks", 3 << 20, true},
		{"unknown length", 3 << 20, false},
	} {
		body := randomBytes(tc.size, uint64(tc.size))
		var r io.Reader = bytes.NewReader(body)
		if !tc.known {
			r = io.MultiReader(r)
		}
		req, _ := http.NewRequest("PUT", e.hs.URL+"/", r)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %s", len(body), digest(body)); resp.StatusCode != 200 || string(got) != want {
			t.Errorf("%s: %d %.200q, want 200 %q", tc.name, resp.StatusCode, got, want)
		}
	}

	req, _ := http.NewRequest("GET", e.hs.URL+"/", nil)
	req.Host = strings.Repeat("h", 600<<10)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get("Retry-After") != "" {
		t.Errorf("headers larger than a message: %d, Retry-After %q; want 431 without Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestMalformedChunkedBody sends a body whose chunked encoding breaks,
// whether in the part that travels with the request head or in a chunk the
// service pulled: the client gets the 400 that PROTOCOL.md lists.
func TestMalformedChunkedBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "upload"}))
	readErr := make(chan error, 1)
	e.serve(t, "upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		readErr <- err
	}))
	for _, tc := range []struct {
		name  string
		valid int // bytes of well-formed chunk before the malformed one
	}{
		{"before the head", 0},
		{"during a pull", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e)
			bw := bufio.NewWriter(c)
			fmt.Fprintf(bw, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
			if tc.valid > 0 {
				fmt.Fprintf(bw, "%x\r\n%s\r\n", tc.valid, make([]byte, tc.valid))
			}
			fmt.Fprintf(bw, "zz\r\n")
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			rid := resp.Header.Get("X-Request-Id")
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "read request body") || rid == "" || !strings.Contains(string(b), rid) {
				t.Errorf("got %d %q, want 400 naming the body and the request id", resp.StatusCode, b)
			}
			if tc.valid > 0 {
				if err := <-readErr; err == nil {
					t.Error("the service read a complete body")
				}
			}
		})
	}
}

// TestNarunPath checks the path a responder in any language gets, as
// PROTOCOL.md describes it: the client's escaping where the gateway kept the
// path as it came, escaped anew where it had to change it.
func TestNarunPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "path"}, config.Route{Path: "/s/", Service: "path", StripPrefix: true}))
	nc := natsConn(t, e)
	got := make(chan string, 1)
	if _, err := nc.Subscribe("path", func(m *nats.Msg) {
		got <- m.Header.Get(consumer.HeaderPath)
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sent, want string }{
		{"/a%2Fb/c", "/a%2Fb/c"},
		{"/caf%C3%A9", "/caf%C3%A9"},
		{"/caf%c3%a9", "/caf%c3%a9"},
		{"/a%20b+c", "/a%20b+c"},
		{"/s/x%2Fy", "/x%2Fy"},
		{"/caf\xc3\xa9", "/caf%C3%A9"},
		{"/x/./a%2Fb", "/x/a/b"},
		{"/a%2F..%2Fb", "/b"},
	} {
		resp, _ := rawExchange(t, e, "GET "+tc.sent+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: status %d", tc.sent, resp.StatusCode)
		}
		if p := <-got; p != tc.want {
			t.Errorf("client sent %q: Narun-Path %q, want %q", tc.sent, p, tc.want)
		}
	}
}

func natsConn(t *testing.T, e *env) *nats.Conn {
	t.Helper()
	nc, err := e.srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestClientCancelReachesHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/wait", Service: "wait"}))
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	e.serve(t, "wait", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- r.Context().Err()
		case <-time.After(20 * time.Second):
			cancelled <- errors.New("handler context was never cancelled")
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/wait", nil)
	go func() {
		<-started
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request succeeded, want it cancelled")
	}
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context: %v, want context.Canceled", err)
	}
}

func TestNATSReplyCLIAsResponder(t *testing.T) {
	t.Parallel()
	natsCLI := testutil.Tool(t, "nats")
	e := newEnv(t, gwConfig(config.Route{Path: "/cli", Service: "cli.svc"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, natsCLI, "--server", e.srv.ClientURL(), "reply", "cli.svc", "hello from the nats CLI", "-H", "Narun-Status:201", "-H", "Content-Type:text/plain")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	var body, ct string
	testutil.Eventually(t, 15*time.Second, "nats reply answers through the gateway", func() bool {
		resp, err := http.Get(e.hs.URL + "/cli")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		ct = resp.Header.Get("Content-Type")
		return resp.StatusCode == 201
	})
	if body != "hello from the nats CLI" || ct != "text/plain" {
		t.Errorf("body = %q, content type %q", body, ct)
	}
}

// TestHeadTypeAsGet checks that the answer to HEAD has the Content-Type
// the answer to GET has, none guessed for a body with a Content-Encoding,
// as net/http guesses none for it (its bytes are not the type's).
func TestHeadTypeAsGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "gz"}))
	e.serve(t, "gz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	}))
	types := map[string][]string{}
	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, e.hs.URL+"/page", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		types[method] = resp.Header.Values("Content-Type")
	}
	if !slices.Equal(types["GET"], types["HEAD"]) || len(types["GET"]) != 0 {
		t.Errorf("Content-Type for GET %q, for HEAD %q; want none for either", types["GET"], types["HEAD"])
	}
}

// TestHeadContentLength checks that the answer to HEAD keeps the length the
// service gives for GET (http.ServeContent sets it), and that a length that
// is not a number is not passed on, nor replaced by a 0 that would be a
// claim about GET.
func TestHeadContentLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "files"}))
	content := strings.Repeat("x", 12345)
	big := make([]byte, 3<<20)
	e.serve(t, "files", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bad":
			w.Header().Set("Content-Length", "12a")
		case "/big":
			// Larger than a message, no length set: net/http's server
			// discards a HEAD body and tells its length.
			_, _ = w.Write(big)
		case "/text":
			_, _ = io.WriteString(w, "plain words, no type set\n")
		case "/events":
			// A stream that ends when the client goes.
			for r.Context().Err() == nil {
				_, _ = w.Write([]byte("data: tick\n\n"))
				w.(http.Flusher).Flush()
			}
		default:
			http.ServeContent(w, r, "f.txt", time.Unix(0, 0), strings.NewReader(content))
		}
	}))
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/f.txt", "12345"},
		{"HEAD", "/f.txt", "12345"},
		{"HEAD", "/bad", ""},
		{"HEAD", "/big", strconv.Itoa(len(big))},
		{"HEAD", "/events", ""},
		{"HEAD", "/text", "25"},
	} {
		req, _ := http.NewRequest(tc.method, e.hs.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Length"); resp.StatusCode != 200 || got != tc.want {
			t.Errorf("%s %s: %d with Content-Length %q, want 200 with %q", tc.method, tc.path, resp.StatusCode, got, tc.want)
		}
		// The type GET's body would be given, guessed as for GET.
		if ct := resp.Header.Get("Content-Type"); tc.path == "/text" && ct != "text/plain; charset=utf-8" {
			t.Errorf("%s %s: Content-Type %q, want the one guessed for GET", tc.method, tc.path, ct)
		}
	}
	// None of the HEAD answers is an error of the service's; a request is
	// counted once its reply went.
	nc := natsConn(t, e)
	var stats []byte
	testutil.Eventually(t, 10*time.Second, "the 6 requests counted", func() bool {
		m, err := nc.Request("$SRV.STATS.files", nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		stats = m.Data
		return strings.Contains(string(stats), `"num_requests":6,`)
	})
	if !strings.Contains(string(stats), `"num_errors":0`) {
		t.Errorf("HEAD requests counted as errors: %s", stats)
	}
}

// TestStatusHeaderIsNotNoResponders checks that a reply with an empty body
// and a plain "Status: 503" header is a reply, not NATS's "no responders",
// from a raw responder that sets Narun-Status and from a Go handler.
func TestStatusHeaderIsNotNoResponders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Path: "/raw", Service: "raw"},
		config.Route{Path: "/go", Service: "gohandler"},
	))
	nc := natsConn(t, e)
	if _, err := nc.Subscribe("raw", func(m *nats.Msg) {
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Status": {"202"}, "Status": {"503"}}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.serve(t, "gohandler", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Status", "503")
	}))
	for path, want := range map[string]int{"/raw": 202, "/go": 200} {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Status") != "503" {
			t.Errorf("%s: %d with Status %q, want %d with the service's Status header", path, resp.StatusCode, resp.Header.Get("Status"), want)
		}
	}
}

// TestDeclaredLengthHolds checks that a Go handler's Content-Length is
// held to as net/http's server holds it: a body shorter than declared
// reaches the client as an incomplete response, not as a whole one of the
// shorter length, and writes past it or into a 204 fail in the handler.
func TestDeclaredLengthHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "cl"}))
	writeErr := make(chan error, 1)
	large := randomBytes(3<<20, 5)
	e.serve(t, "cl", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "short")
		case "/short-large":
			w.Header().Set("Content-Length", strconv.Itoa(len(large)+10))
			_, _ = w.Write(large)
		case "/long":
			w.Header().Set("Content-Length", "2")
			_, _ = io.WriteString(w, "ok")
			_, err := io.WriteString(w, "more")
			writeErr <- err
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "body")
			writeErr <- err
		}
	}))
	resp, err := http.Get(e.hs.URL + "/short")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || resp.ContentLength != 10 || string(body) != "short" {
		t.Errorf("short body: Content-Length %d, body %q, read error %v; want 10, what was written and an unexpected EOF", resp.ContentLength, body, err)
	}
	// Larger than a message: every byte written still reaches the client.
	resp, err = http.Get(e.hs.URL + "/short-large")
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(body, large) {
		t.Errorf("short large body: %d of %d bytes written, read error %v; want them all and an unexpected EOF", len(body), len(large), err)
	}
	req, _ := http.NewRequest(http.MethodHead, e.hs.URL+"/short", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 10 {
		t.Errorf("HEAD: %d with Content-Length %d, want 200 with 10", resp.StatusCode, resp.ContentLength)
	}
	for path, want := range map[string]error{"/long": http.ErrContentLength, "/nocontent": http.ErrBodyNotAllowed} {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := <-writeErr; !errors.Is(got, want) {
			t.Errorf("%s: handler's write returned %v, want %v", path, got, want)
		}
		if path == "/long" && string(body) != "ok" {
			t.Errorf("%s: body %q, want the declared %q", path, body, "ok")
		}
	}
}

// TestBadHeaderNameIsDropped checks that a header name a Go handler sets
// that is no HTTP token (NATS refuses it in a message) is dropped, as
// net/http's server drops it, instead of turning the reply into a 500;
// in the head of a whole reply, of a streamed one, and among trailers.
func TestBadHeaderNameIsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "badname"}))
	e.serve(t, "badname", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X Bad"] = []string{"1"}
		w.Header()["X-Good"] = []string{"2"}
		w.Header().Set("Trailer", "X-Sum, Bad:Trailer")
		_, _ = io.WriteString(w, "body")
		if r.URL.Path == "/flushed" {
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "3")
		w.Header()["Bad:Trailer"] = []string{"4"}
		w.Header()[http.TrailerPrefix+"Bad Late"] = []string{"5"}
	}))
	for _, path := range []string{"/", "/flushed"} {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "body" || resp.Header.Get("X-Good") != "2" || resp.Trailer.Get("X-Sum") != "3" {
			t.Errorf("%s: %d %q, X-Good %q, trailers %v; want 200 \"body\" with X-Good 2 and the trailer X-Sum 3", path, resp.StatusCode, body, resp.Header.Get("X-Good"), resp.Trailer)
		}
	}
}

// TestCloseNotify checks that a handler written against net/http's
// deprecated http.CloseNotifier, as gin's Context.Stream is, finds it and
// hears of a client that went away.
func TestCloseNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/stream", Service: "notify"}))
	started := make(chan struct{})
	gone := make(chan string, 1)
	e.serve(t, "notify", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn, ok := w.(interface{ CloseNotify() <-chan bool })
		if !ok {
			gone <- "the ResponseWriter has no CloseNotify"
			return
		}
		notify := cn.CloseNotify()
		w.(http.Flusher).Flush()
		close(started)
		select {
		case <-notify:
			gone <- "notified"
		case <-time.After(20 * time.Second):
			gone <- "not notified of the client going away"
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case got := <-gone:
		t.Fatal(got)
	}
	cancel()
	resp.Body.Close()
	if got := <-gone; got != "notified" {
		t.Error(got)
	}
}

// TestClientNATSHeadersDropped checks that a client's Nats- headers do not
// reach the request head, where the NATS server would act on them:
// Nats-Trace-Dest would have it publish a trace of the request to a
// subject of the client's choosing, and with Nats-Trace-Only it would not
// deliver the request at all (a 504 at the route's timeout).
func TestClientNATSHeadersDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "traced", Timeout: config.Duration(5 * time.Second)}))
	nc := natsConn(t, e)
	got := make(chan nats.Header, 1)
	if _, err := nc.Subscribe("traced", func(m *nats.Msg) {
		got <- m.Header
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.hs.URL+"/", nil)
	req.Header.Set("Nats-Trace-Dest", "client.chosen")
	req.Header.Set("Nats-Trace-Only", "true")
	req.Header.Set("nats-msg-id", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want the service's 200", resp.StatusCode)
	}
	for k := range <-got {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			t.Errorf("the service got the client's %s header", k)
		}
	}
}

// TestWebSocketRefused checks that a WebSocket handshake gets a 501 that
// says why, rather than reaching the service as a plain GET stripped of
// its Upgrade header, while another Upgrade offer is ignored as HTTP
// allows and the request served.
func TestWebSocketRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "ws"}))
	e.serve(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	for upgrade, want := range map[string]int{"websocket": 501, "WebSocket/13, foo": 501, "h2c": 200} {
		req, _ := http.NewRequest("GET", e.hs.URL+"/chat", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Version", "13")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 501 && !strings.Contains(string(body), "WebSocket is not supported")) {
			t.Errorf("Upgrade %q: %d %q, want %d", upgrade, resp.StatusCode, body, want)
		}
	}
}

// TestRequestTargetForms checks the requests whose target is no path: a
// CONNECT (authority form), which would have the gateway open a tunnel,
// gets a 501 that says why over HTTP/1.1 and HTTP/2, rather than reaching
// the service of the route for "/" and, answered 200, leaving the client
// believing it has a tunnel; an OPTIONS * (asterisk form) is about the
// server itself, and net/http answers it with a 200 and no body.
func TestRequestTargetForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "target"}))
	e.serve(t, "target", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	h2 := h2cClient(t, e)
	for _, tc := range []struct {
		name, request string
		status        int
		bodyHas       string
	}{
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "CONNECT is not supported"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200, ""},
	} {
		resp, body := rawExchange(t, e, tc.request)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.bodyHas) || strings.Contains(body, "served") {
			t.Errorf("%s: %d %q, want %d with %q, not the service's answer", tc.name, resp.StatusCode, body, tc.status, tc.bodyHas)
		}
	}
	req, _ := http.NewRequest("CONNECT", e.hs.URL, nil)
	req.Host = "example.com:443"
	resp, err := h2.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 501 || !strings.Contains(string(body), "CONNECT is not supported") {
		t.Errorf("CONNECT over HTTP/2: %d %q, want 501", resp.StatusCode, body)
	}
}

// TestUnknownExpectation checks that a request that expects what the
// gateway cannot meet gets a 417, as RFC 9110 10.1.1 allows and net/http's
// HTTP/1 server answers, over HTTP/2 too, where net/http passes it on.
func TestUnknownExpectation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "expect"}))
	e.serve(t, "expect", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "served")
	}))
	h2 := h2cClient(t, e)
	for _, tc := range []struct {
		name   string
		rt     http.RoundTripper
		expect string
		status int
	}{
		{"HTTP/1.1", http.DefaultTransport, "x-custom", 417},
		{"HTTP/2", h2, "x-custom", 417},
		{"HTTP/2, 100-continue", h2, "100-continue", 200},
		{"HTTP/2, empty", h2, "", 200},
		{"HTTP/1.1, empty", http.DefaultTransport, "", 200},
	} {
		req, _ := http.NewRequest("PUT", e.hs.URL+"/", strings.NewReader("body"))
		req.Header.Set("Expect", tc.expect)
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s, Expect %q: %d %q, want %d", tc.name, tc.expect, resp.StatusCode, body, tc.status)
		}
	}
}

// TestBodyLengthAsNetHTTPTellsIt checks that a handler sees a request
// body's length as net/http's server would show it: known when the client
// sent Content-Length, unknown (-1, and chunked over HTTP/1.1) when it did
// not, for a body that fits in the head's message as for one pulled in
// chunks.
func TestBodyLengthAsNetHTTPTellsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "len"}))
	e.serve(t, "len", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "ContentLength %d, TransferEncoding %v, read %d, %v", r.ContentLength, r.TransferEncoding, n, err)
	}))
	big := strings.Repeat("x", 3<<20)
	h1 := http.DefaultTransport
	h2 := h2cClient(t, e)
	for _, tc := range []struct {
		name   string
		rt     http.RoundTripper
		body   string
		length bool
		want   string
	}{
		{"HTTP/1.1 small with length", h1, "hello", true, "ContentLength 5, TransferEncoding [], read 5, <nil>"},
		{"HTTP/1.1 small chunked", h1, "hello", false, "ContentLength -1, TransferEncoding [chunked], read 5, <nil>"},
		{"HTTP/1.1 large with length", h1, big, true, "ContentLength 3145728, TransferEncoding [], read 3145728, <nil>"},
		{"HTTP/1.1 large chunked", h1, big, false, "ContentLength -1, TransferEncoding [chunked], read 3145728, <nil>"},
		{"HTTP/1.1 no body", h1, "", true, "ContentLength 0, TransferEncoding [], read 0, <nil>"},
		{"HTTP/2 small without length", h2, "hello", false, "ContentLength -1, TransferEncoding [], read 5, <nil>"},
		{"HTTP/2 small with length", h2, "hello", true, "ContentLength 5, TransferEncoding [], read 5, <nil>"},
	} {
		var body io.Reader = strings.NewReader(tc.body)
		if !tc.length {
			// A reader of unknown length: the client sends no
			// Content-Length.
			body = io.MultiReader(body)
		}
		req, err := http.NewRequest("POST", e.hs.URL+"/", body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if string(got) != tc.want {
			t.Errorf("%s: handler saw %q, want %q", tc.name, got, tc.want)
		}
	}
	// An empty chunked body, which Go's client does not send: its length
	// is no more known than that of any chunked body.
	_, got := rawExchange(t, e, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	if want := "ContentLength -1, TransferEncoding [chunked], read 0, <nil>"; got != want {
		t.Errorf("HTTP/1.1 empty chunked: handler saw %q, want %q", got, want)
	}
}

// TestNilHeaderSuppresses checks that a handler that sets Content-Type or
// Date to nil gets neither sent, as behind net/http's server: no type
// guessed from the body (untrusted bytes must not become text/html), no
// date added, in a response sent whole as in one streamed.
func TestNilHeaderSuppresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "nilhdr"}))
	e.serve(t, "nilhdr", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil
		w.Header()["Date"] = nil
		_, _ = io.WriteString(w, "<html><script>alert(1)</script></html>")
		if r.URL.Path == "/flushed" {
			w.(http.Flusher).Flush()
		}
	}))
	for _, path := range []string{"/whole", "/flushed"} {
		for _, method := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(method, e.hs.URL+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			for _, k := range []string{"Content-Type", "Date"} {
				if v, ok := resp.Header[k]; ok {
					t.Errorf("%s %s: %s %q, want none", method, path, k, v)
				}
			}
		}
	}
}

// TestExpectContinueWaitsForTheService checks that a client that sends
// Expect: 100-continue with a large body, or one of unknown length, is
// asked for it only when the service reads it, as net/http's server does:
// a service that refuses the upload unread answers a client that never
// sent a byte of it, and one that reads it gets the whole body after the
// 100 Continue.
func TestExpectContinueWaitsForTheService(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "upload", Timeout: config.Duration(time.Minute)}))
	e.serve(t, "upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no uploads here", http.StatusForbidden)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, digest(b))
	}))
	body := randomBytes(3<<20, 11)
	for _, chunked := range []bool{false, true} {
		head := func(c io.Writer, path string) {
			framing := fmt.Sprintf("Content-Length: %d", len(body))
			if chunked {
				framing = "Transfer-Encoding: chunked"
			}
			fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: a\r\n%s\r\nExpect: 100-continue\r\n\r\n", path, framing)
		}

		c := dialRaw(t, e)
		head(c, "/refuse")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("chunked %v: refused upload, body not sent: status %d, want 403 before the body", chunked, resp.StatusCode)
		}

		c = dialRaw(t, e)
		br := bufio.NewReader(c)
		head(c, "/take")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusContinue {
			t.Fatalf("chunked %v: accepted upload: status %d, want 100 Continue first", chunked, resp.StatusCode)
		}
		if chunked {
			fmt.Fprintf(c, "%x\r\n", len(body))
		}
		if _, err := c.Write(body); err != nil {
			t.Fatal(err)
		}
		if chunked {
			_, _ = io.WriteString(c, "\r\n0\r\n\r\n")
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != digest(body) {
			t.Errorf("chunked %v: accepted upload: %d %q, want 200 and the body's digest", chunked, resp.StatusCode, got)
		}
	}
}

// TestBodyReadAfterClose checks that a handler reading its request body
// after closing it gets net/http's http.ErrBodyReadAfterClose, whether the
// body came with the head or is pulled in chunks, and not the rest of it.
func TestBodyReadAfterClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "closed"}))
	e.serve(t, "closed", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 2)
		_, err1 := io.ReadFull(r.Body, buf)
		r.Body.Close()
		n, err2 := r.Body.Read(buf)
		fmt.Fprintf(w, "first read %v, after Close %d bytes, ErrBodyReadAfterClose %v", err1, n, errors.Is(err2, http.ErrBodyReadAfterClose))
	}))
	for _, size := range []int{10, 3 << 20} {
		resp, err := http.Post(e.hs.URL+"/", "application/octet-stream", bytes.NewReader(randomBytes(size, 1)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "first read <nil>, after Close 0 bytes, ErrBodyReadAfterClose true"; string(got) != want {
			t.Errorf("%d-byte body: handler saw %q, want %q", size, got, want)
		}
	}
}

// An IPv6 client's address reaches the service as net/http gives it
// (RemoteAddr "[::1]:port"), and X-Forwarded-For gets the address alone:
// no brackets, no port, and no zone, which names an interface of the
// gateway's host only and which net.ParseIP, as services read the
// header, refuses.
func TestIPv6ClientAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/rec/", Service: "rec"}))
	e.serve(t, "rec", recorder())
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	req, _ := http.NewRequest("GET", hs.URL+"/rec/", nil)
	req.Header.Set("X-Forwarded-For", "2001:db8::7")
	_, s := sendSeen(t, req)
	if got := s.Header.Get("X-Forwarded-For"); got != "2001:db8::7, ::1" {
		t.Errorf("X-Forwarded-For = %q, want %q", got, "2001:db8::7, ::1")
	}
	if !strings.HasPrefix(s.RemoteAddr, "[::1]:") {
		t.Errorf("remote addr = %q, want the client's [::1]:port", s.RemoteAddr)
	}

	// A link-local client, as a listener on a link-local address sees it.
	req = httptest.NewRequest("GET", "/rec/", nil)
	req.RemoteAddr = "[fe80::1%eth0]:40000"
	w := httptest.NewRecorder()
	e.gw.Handler().ServeHTTP(w, req)
	s = seen{}
	if err := json.NewDecoder(w.Body).Decode(&s); err != nil {
		t.Fatalf("status %d: %v", w.Code, err)
	}
	if got := s.Header.Get("X-Forwarded-For"); got != "fe80::1" {
		t.Errorf("X-Forwarded-For of a link-local client = %q, want %q", got, "fe80::1")
	}
	if s.RemoteAddr != "[fe80::1%eth0]:40000" {
		t.Errorf("remote addr of a link-local client = %q, want [fe80::1%%eth0]:40000", s.RemoteAddr)
	}
}

// A request sent to an IPv6 literal names it in brackets, with or without
// a port, perhaps with a zone: the port must be cut at the bracket, not at
// the first colon, and such a request matches the routes for any host,
// since a route's host is never an IPv6 address. The service gets the
// Host as the client sent it.
func TestIPv6RequestHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Host: "127.0.0.1", Path: "/", Service: "v4"},
		config.Route{Host: "example.com", Path: "/", Service: "named"},
		config.Route{Path: "/", Service: "any"},
	))
	seenBy := answerAs(t, natsConn(t, e), "v4", "named", "any")
	for _, tc := range []struct{ host, service string }{
		{"[::1]:8080", "any"},
		{"[::1]", "any"},
		{"[2001:DB8::1]:80", "any"},
		{"[fe80::1%25eth0]:8080", "any"},
		// An IPv4 address mapped into IPv6 is another host than the
		// IPv4 one, as a TLS certificate or a virtual host has it.
		{"[::ffff:127.0.0.1]:8080", "any"},
		{"127.0.0.1:8080", "v4"},
		{"127.0.0.1", "v4"},
		{"EXAMPLE.com.:8080", "named"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			if resp, body := rawExchange(t, e, "GET /x HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n"); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d (%s), want 200", resp.StatusCode, body)
			}
			m := <-seenBy
			if m.Subject != tc.service {
				t.Errorf("served by %q, want %q", m.Subject, tc.service)
			}
			for _, k := range []string{"X-Forwarded-Host", consumer.HeaderHost} {
				if v := m.Header.Values(k); len(v) != 1 || v[0] != tc.host {
					t.Errorf("%s = %q, want %q", k, v, tc.host)
				}
			}
		})
	}
}

// An IPv6 address as a route's host is refused when the gateway compiles
// its routes, by an error that names the route and its host field and
// says why, rather than taking the address for a host with a port.
func TestIPv6RouteHostRefused(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for _, host := range []string{"::1", "[::1]", "[2001:db8::1]", "fe80::1%eth0", "[fe80::1%eth0]"} {
		t.Run(host, func(t *testing.T) {
			_, err := New(Options{Config: gwConfig(config.Route{Host: host, Path: "/v6/", Service: "v6"}), Conn: nc})
			want := fmt.Sprintf(`config route #1 (path "/v6/"): host %q: an IPv6 address is not a route host`, host)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to contain %q", err, want)
			}
		})
	}
}

// A route's host written as an absolute name, with DNS's trailing dot,
// names the host of a request sent to it with the dot or without, as a
// request's host is matched without its dot; and it is the same host as
// the one written without, for what makes two routes duplicates.
func TestRouteHostWithTrailingDot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Host: "Example.COM.", Path: "/", Service: "named"},
		config.Route{Host: "*.Wild.example.", Path: "/", Service: "wild"},
		config.Route{Path: "/", Service: "any"},
	))
	nc := natsConn(t, e)
	seenBy := answerAs(t, nc, "named", "wild", "any")
	for _, tc := range []struct{ host, service string }{
		{"example.com", "named"},
		{"EXAMPLE.com.:8080", "named"},
		{"a.wild.example", "wild"},
		{"a.b.wild.example.", "wild"},
		{"wild.example", "any"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			if resp, body := rawExchange(t, e, "GET /x HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n"); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d (%s), want 200", resp.StatusCode, body)
			}
			if got := (<-seenBy).Subject; got != tc.service {
				t.Errorf("served by %q, want %q", got, tc.service)
			}
		})
	}

	for _, hosts := range [][2]string{{"example.com.", "example.com"}, {"*.example.com", "*.EXAMPLE.com."}} {
		_, err := New(Options{Config: gwConfig(
			config.Route{Host: hosts[0], Path: "/a/", Service: "x"},
			config.Route{Host: hosts[1], Path: "/a/", Service: "y"},
		), Conn: nc})
		if err == nil || !strings.Contains(err.Error(), "duplicate route") {
			t.Errorf("routes for hosts %q and %q: err = %v, want a duplicate", hosts[0], hosts[1], err)
		}
	}
	for _, host := range []string{".", "*."} {
		_, err := New(Options{Config: gwConfig(config.Route{Host: host, Path: "/", Service: "x"}), Conn: nc})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("host %q", host)) {
			t.Errorf("route for host %q: err = %v, want it refused", host, err)
		}
	}
}

// A route's host outside ASCII (an internationalized name as people write
// it) is refused with the form to write instead: clients send such a
// name's A-label ("xn--..."), and net/http refuses a Host of UTF-8 with
// 400, so no request could ever reach the route.
func TestRouteHostNotASCIIRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "any"}))
	if resp, body := rawExchange(t, e, "GET /x HTTP/1.1\r\nHost: bücher.example\r\nConnection: close\r\n\r\n"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a Host of UTF-8: status %d (%s), want net/http's 400", resp.StatusCode, body)
	}
	for _, host := range []string{"bücher.example", "*.bücher.example", "BÜCHER.example."} {
		t.Run(host, func(t *testing.T) {
			_, err := New(Options{Config: gwConfig(config.Route{Host: host, Path: "/b/", Service: "b"}), Conn: e.nc})
			want := fmt.Sprintf(`config route #1 (path "/b/"): host %q: `, host)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "xn--") {
				t.Fatalf("err = %v, want it to contain %q and name the xn-- form", err, want)
			}
			if err := CheckAppRoutes("b", []config.Route{{Host: host, Path: "/b/"}}, nil); err == nil {
				t.Errorf("deploy check of the route: no error, want it refused")
			}
		})
	}
	if _, err := New(Options{Config: gwConfig(config.Route{Host: "xn--bcher-kva.example", Path: "/b/", Service: "b"}), Conn: e.nc}); err != nil {
		t.Errorf("route for the A-label of the name: %v", err)
	}
}

// answerAs has each of services answer "ok" on nc, and passes on what
// each request it answered was, so that a test learns which route took
// it.
func answerAs(t *testing.T, nc *nats.Conn, services ...string) <-chan *nats.Msg {
	t.Helper()
	seenBy := make(chan *nats.Msg, 1)
	for _, svc := range services {
		if _, err := nc.Subscribe(svc, func(m *nats.Msg) {
			seenBy <- m
			_ = m.Respond([]byte("ok"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return seenBy
}

// TestForwardedFromClientDropped checks that a client cannot choose the
// host, scheme or port of the service's links through the other headers
// that frameworks read for them (RFC 7239 Forwarded, which Spring and Rack
// prefer to X-Forwarded-*, and X-Forwarded-Port, -Ssl, -Scheme), as it
// cannot through X-Forwarded-Host and -Proto.
func TestForwardedFromClientDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/rec/", Service: "rec"}))
	e.serve(t, "rec", recorder())
	req, _ := http.NewRequest("GET", e.hs.URL+"/rec/", nil)
	req.Header.Set("Forwarded", "for=198.51.100.9;host=evil.example;proto=https")
	req.Header.Set("X-Forwarded-Port", "444")
	req.Header.Set("X-Forwarded-Ssl", "on")
	req.Header.Set("X-Forwarded-Scheme", "https")
	_, s := sendSeen(t, req)
	for _, k := range []string{"Forwarded", "X-Forwarded-Port", "X-Forwarded-Ssl", "X-Forwarded-Scheme"} {
		if v := s.Header.Values(k); v != nil {
			t.Errorf("service got the client's %s: %q", k, v)
		}
	}
	if got := s.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q, want http", got)
	}
}

// TestClientAddressFromClientDropped checks that a client cannot choose
// the address a service takes for the client's through X-Real-Ip,
// True-Client-Ip or another header frameworks read before X-Forwarded-For
// (chi's RealIP, gin and echo read X-Real-Ip; Rails Client-Ip): the gateway
// sends none, so the client's address comes only from X-Forwarded-For's
// last entry and Narun-Remote-Addr.
func TestClientAddressFromClientDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/rec/", Service: "rec"}))
	e.serve(t, "rec", recorder())
	req, _ := http.NewRequest("GET", e.hs.URL+"/rec/", nil)
	addressHeaders := []string{"X-Real-Ip", "True-Client-Ip", "Client-Ip", "X-Client-Ip",
		"X-Cluster-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip"}
	for i, k := range addressHeaders {
		req.Header.Set(k, fmt.Sprintf("198.51.100.%d", 9+i))
	}
	_, s := sendSeen(t, req)
	for _, k := range addressHeaders {
		if v := s.Header.Values(k); v != nil {
			t.Errorf("service got the client's %s: %q", k, v)
		}
	}
	if got := s.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the client's address alone", got)
	}
}

// TestTETrailersPassed checks that a client's TE, hop-by-hop, reaches the
// service as "trailers" alone and only when it lists trailers, as
// httputil.ReverseProxy passes it (Go issue 21096): it tells the service
// that the client takes trailers, gRPC's grpc-status among them, even when
// the client's Connection header names TE, as HTTP asks of a client that
// sends one (RFC 9110 10.1.4).
func TestTETrailersPassed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/rec/", Service: "rec"}))
	e.serve(t, "rec", recorder())
	for _, tc := range []struct {
		name, head string
		want       []string
	}{
		{"trailers", "TE: trailers\r\n", []string{"trailers"}},
		{"listed among others", "TE: gzip;q=0.5, Trailers\r\nConnection: TE\r\n", []string{"trailers"}},
		{"without trailers", "TE: gzip\r\nConnection: TE\r\n", nil},
		{"none", "", nil},
	} {
		resp, body := rawExchange(t, e, "GET /rec/ HTTP/1.1\r\nHost: a\r\n"+tc.head+"Connection: close\r\n\r\n")
		var s seen
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%s: %d %q: %v", tc.name, resp.StatusCode, body, err)
		}
		if got := s.Header.Values("Te"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: service got TE %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestBodyEndedByGatewayEndsContext checks that when a read of the request
// body fails because the gateway ended the exchange (the client went
// away), the request's context is done by the time the read returns, as
// behind net/http's server, where a handler tells a client gone from a
// bad body by r.Context().Err() after the read.
func TestBodyEndedByGatewayEndsContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/up", Service: "up"}))
	first := make(chan struct{})
	got := make(chan string, 1)
	e.serve(t, "up", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 10)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			got <- "first read: " + err.Error()
			return
		}
		close(first)
		_, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("read error %v, context error %v", err, r.Context().Err())
	}))
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.hs.URL+"/up", pr)
	go func() {
		_, _ = pw.Write([]byte("0123456789"))
		select {
		case <-first:
		case <-time.After(10 * time.Second):
		}
		cancel()
		pw.CloseWithError(context.Canceled)
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request succeeded, want it cancelled")
	}
	select {
	case s := <-got:
		if !strings.Contains(s, "context error context canceled") || strings.Contains(s, "read error <nil>") {
			t.Errorf("handler: %s; want a read error with the context cancelled", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler still reading 10 s after the client left")
	}
}

// TestEmptyForwardedForIsAbsent checks that a client's X-Forwarded-For
// with no address in it (empty, blanks alone, as some clients and proxies
// send when they have none) is taken as no value: the service got
// ", 127.0.0.1", whose empty first entry some parsers take for an address
// and others refuse.
func TestEmptyForwardedForIsAbsent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "xff"}))
	e.hs = startH2C(t, e)
	heads := answerAs(t, natsConn(t, e), "xff")
	for _, c := range []struct {
		name, request, want string
	}{
		{"empty", "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\nConnection: close\r\n\r\n", "127.0.0.1"},
		{"blanks", "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:  \t \r\nConnection: close\r\n\r\n", "127.0.0.1"},
		{"empty line before an address", "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n", "203.0.113.7, 127.0.0.1"},
		{"empty line after an address", "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For:\r\nConnection: close\r\n\r\n", "203.0.113.7, 127.0.0.1"},
	} {
		if resp, _ := rawExchange(t, e, c.request); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, want 200", c.name, resp.StatusCode)
		}
		if got := (<-heads).Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: service got X-Forwarded-For %q, want %q", c.name, got, c.want)
		}
	}
	// HTTP/2's field values are not read as HTTP/1's lines.
	if got := h2Get(t, e, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/", "x-forwarded-for", " "); got != http.StatusOK {
		t.Fatalf("HTTP/2 blank: status %d, want 200", got)
	}
	if got := (<-heads).Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("HTTP/2 blank: service got X-Forwarded-For %q, want %q", got, "127.0.0.1")
	}
}

// A header name with underscores is another header than its dashed twin
// to net/http, but not to a responder that maps names onto CGI-style
// variables, as WSGI, Rack and PHP name them: X_Forwarded_Host and
// X-Forwarded-Host are both HTTP_X_FORWARDED_HOST, the client's and the
// gateway's, and which wins depends on their order. A twin of a header the
// gateway sets or keeps from the service never reaches it, as nginx and
// gunicorn drop such headers; other underscored names pass.
func TestUnderscoredTwinsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "rec"}))
	seenBy := answerAs(t, natsConn(t, e), "rec")
	twins := []string{"X_Forwarded_Host", "x_forwarded_for", "X-Forwarded_Proto", "X_Forwarded_Prefix",
		"X_Real_Ip", "X_Request_Id", "Narun_Method", "Narun_Path", "Nats_Trace_Dest", "Proxy_Authorization",
		"Content_Length", "Transfer_Encoding"}
	req := "GET / HTTP/1.1\r\nHost: a.example.com\r\nX_Custom: kept\r\nConnection: close\r\n"
	for _, k := range twins {
		req += k + ": evil\r\n"
	}
	if resp, body := rawExchange(t, e, req+"\r\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", resp.StatusCode, body)
	}
	h := (<-seenBy).Header
	for k, v := range h {
		if slices.Contains(v, "evil") {
			t.Errorf("the client's %s reached the service", k)
		}
	}
	if got := h.Get("X_custom"); got != "kept" {
		t.Errorf("X_Custom = %q, want kept: only the twins of the gateway's headers are dropped", got)
	}
}
