package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/nats-io/nats.go"
)

// grpcResult is one line printed by testdata/apps/grpcsvc --status.
type grpcResult struct {
	Call, Code, Message, Status string
}

// TestGRPCThroughGateway serves gRPC's interop TestService with
// consumer.ListenAndServe and runs gRPC's interop cases against it with a
// grpc-go client over h2c through a real gateway: unary calls, client,
// server and bidirectional streams, metadata, status codes, cancellation,
// deadlines; checks the gateway's own errors arrive as gRPC statuses; and
// calls the service with consumer.Transport, over NATS alone.
func TestGRPCThroughGateway(t *testing.T) {
	t.Parallel()
	// The fixture is a module of its own (narun does not depend on gRPC);
	// building it may fetch grpc-go from the module proxy. No VCS stamp: a
	// checkout git will not read (another owner) must not fail the build.
	bin := filepath.Join(t.TempDir(), "grpcsvc")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..", "..", "testdata", "apps", "grpcsvc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the gRPC fixture: %v\n%s", err, out)
	}

	var routes []config.Route
	for _, svc := range []string{"grpc.testing.TestService", "grpc.testing.UnimplementedService", "grpc.health.v1.Health"} {
		routes = append(routes, config.Route{Path: "/" + svc + "/", Service: "grpctest"})
	}
	e := newEnv(t, gwConfig(routes...))
	hs := startH2C(t, e)
	addr := strings.TrimPrefix(hs.URL, "http://")

	status := func() map[string]grpcResult {
		t.Helper()
		out, err := exec.Command(bin, "--status", addr).Output()
		if err != nil {
			t.Fatalf("grpcsvc --status: %v\n%s", err, out)
		}
		results := map[string]grpcResult{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var r grpcResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("decode %q: %v", sc.Text(), err)
			}
			results[r.Call] = r
		}
		return results
	}

	// No instance yet: the gateway answers with gRPC statuses that name
	// the request id. (grpc-go turns an HTTP error page into a status too,
	// but its message then starts "unexpected HTTP status code".)
	before := status()
	if r := before["health"]; r.Code != "Unavailable" || !strings.HasPrefix(r.Message, "no instance of the service is running (request id ") {
		t.Errorf("call without a service: %+v, want Unavailable with the reason and the request id", r)
	}
	if r := before["unrouted"]; r.Code != "Unimplemented" || !strings.HasPrefix(r.Message, "no route for /narun.Missing/Call (request id ") {
		t.Errorf("call without a route: %+v, want Unimplemented naming the path", r)
	}

	srv := exec.Command(bin)
	srv.Env = append(os.Environ(), "NARUN_NATS_URL="+e.srv.ClientURL())
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(os.Interrupt)
		if err := srv.Wait(); err != nil {
			t.Errorf("grpcsvc did not stop cleanly: %v", err)
		}
	})
	testutil.Eventually(t, 15*time.Second, "grpctest registered", func() bool {
		_, err := e.nc.Request("$SRV.PING.grpctest", nil, time.Second)
		return err == nil
	})
	if r := status()["health"]; r.Code != "OK" || r.Status != "SERVING" {
		t.Errorf("health check: %+v, want OK SERVING", r)
	}

	// Another app calls it over NATS with consumer.Transport, without
	// the gateway: a gRPC call goes as HTTP/2, which grpc-go's handler
	// requires, and its status comes in the trailers.
	call := exec.Command(bin, "--transport")
	call.Env = append(os.Environ(), "NARUN_NATS_URL="+e.srv.ClientURL())
	viaTransport, err := call.Output()
	if err != nil {
		t.Fatalf("grpcsvc --transport: %v\n%s", err, viaTransport)
	}
	for _, want := range []string{
		`{"call":"transport_health","code":"OK","status":"SERVING"}`,
		`{"call":"transport_missing","code":"Unimplemented","message":"unknown method Missing for service grpc.health.v1.Health"}`,
	} {
		if !bytes.Contains(viaTransport, []byte(want+"\n")) {
			t.Errorf("through consumer.Transport: %s, want %s", viaTransport, want)
		}
	}

	out, err := exec.Command(bin, "--interop", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("gRPC interop cases through the gateway: %v\n%s", err, out)
	}
	for _, name := range []string{"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
		"custom_metadata", "status_code_and_message", "special_status_message", "unimplemented_method", "unimplemented_service",
		"cancel_after_begin", "cancel_after_first_response", "timeout_on_sleeping_server"} {
		if !bytes.Contains(out, []byte("ok "+name+"\n")) {
			t.Errorf("interop case %s did not pass:\n%s", name, out)
		}
	}
}

// TestGRPCStatusAfterHead has a raw responder start a gRPC response and
// then fail it: past the route's timeout, with a NATS Micro error in its
// end frame, with a second head, or pulling a body above max_body. Over
// HTTP/2 the status of a gRPC call is in the trailers, so the gateway ends
// the stream with its own status there, as before the head, rather than
// reset it: a reset gives the client INTERNAL, which tells a timeout from a
// crash no better than it tells which request failed.
func TestGRPCStatusAfterHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Path: "/slow.Svc/", Service: "grpcafter", Timeout: config.Duration(500 * time.Millisecond)},
		config.Route{Path: "/fail.Svc/", Service: "grpcafter"},
		config.Route{Path: "/small.Svc/", Service: "grpcafter", MaxBody: config.Size(100)},
	))
	h2 := h2cClient(t, e)
	nc := natsConn(t, e)
	_, err := nc.Subscribe("grpcafter", func(m *nats.Msg) {
		head := &nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}, "Content-Type": {"application/grpc"}}, Data: []byte(grpcMessage("first"))}
		_ = nc.PublishMsg(head)
		switch m.Header.Get("Narun-Path") {
		case "/fail.Svc/Error":
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "Nats-Service-Error-Code": {"503"}, "Nats-Service-Error": {"went away"}}})
		case "/fail.Svc/Head":
			_ = nc.PublishMsg(head)
		case "/small.Svc/Upload":
			for {
				a, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"pull"}}}, 10*time.Second)
				if err != nil || a.Header.Get("Narun-Frame") != "data" {
					return
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, status, msg string }{
		{"/small.Svc/Upload", "8", "request body too large: more than 100 bytes (request id "},
		{"/slow.Svc/Call", "4", "not finished within 500ms (request id "},
		{"/fail.Svc/Error", "14", "service error: went away (request id "},
		{"/fail.Svc/Head", "14", "malformed reply: second response head (request id "},
	} {
		// The second message, too large for /small.Svc/, goes once the
		// response head is in: the body fails after it.
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", e.hs.URL+c.path, pr)
		req.Header.Set("Content-Type", "application/grpc")
		go func() { _, _ = io.WriteString(pw, grpcMessage("hi")) }()
		resp, err := h2.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		go func() {
			_, _ = io.WriteString(pw, grpcMessage(strings.Repeat("x", 200)))
			_ = pw.Close()
		}()
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = pr.Close()
		if err != nil || string(body) != grpcMessage("first") {
			t.Errorf("%s: body %q, %v; want the first message, ended cleanly", c.path, body, err)
		}
		if got, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"); got != c.status || !strings.HasPrefix(msg, grpcPercentEncode(c.msg)) {
			t.Errorf("%s: trailers Grpc-Status %q, Grpc-Message %q; want %s, %q and the request id", c.path, got, msg, c.status, c.msg)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"application/grpc":               true,
		"application/grpc+proto":         true,
		"application/grpc;charset=utf-8": true,
		"application/grpc-web":           false,
		"application/grpc-web+proto":     false,
		"application/json":               false,
		"":                               false,
	} {
		var h []string
		if ct != "" {
			h = []string{ct}
		}
		if got := isGRPC(h); got != want {
			t.Errorf("isGRPC(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestClientDeadline(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"1496882u":  1496882 * time.Microsecond,
		"5S":        5 * time.Second,
		"2H":        2 * time.Hour,
		"3M":        3 * time.Minute,
		"250m":      250 * time.Millisecond,
		"99999999n": 99999999,
		"0m":        0,
		"99999999H": 1<<63 - 1,
	} {
		if got, ok := grpcTimeout([]string{in}); !ok || got != want {
			t.Errorf("grpcTimeout(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "S", "5", "5s", "-5S", "123456789S", "1.5S", " 5S"} {
		if d, ok := grpcTimeout([]string{in}); ok {
			t.Errorf("grpcTimeout(%q) = %v, want it refused", in, d)
		}
	}
	if _, ok := grpcTimeout(nil); ok {
		t.Error("grpcTimeout of no header is ok")
	}
	for in, want := range map[string]time.Duration{"250": 250 * time.Millisecond, "0": 0, "9999999999": 9999999999 * time.Millisecond} {
		if got, ok := clientDeadline(http.Header{"Connect-Timeout-Ms": {in}}, false); !ok || got != want {
			t.Errorf("Connect-Timeout-Ms %q: %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5", "12345678901", "5S"} {
		if d, ok := clientDeadline(http.Header{"Connect-Timeout-Ms": {in}}, false); ok {
			t.Errorf("Connect-Timeout-Ms %q: %v, want it refused", in, d)
		}
	}
	if _, ok := clientDeadline(http.Header{"Connect-Timeout-Ms": {"250"}}, true); ok {
		t.Error("a gRPC request's Connect-Timeout-Ms is used")
	}
}

// TestClientDeadlineShortensTimeout checks that a gRPC client's deadline
// shorter than the route's reaches the service as Narun-Timeout and ends
// the exchange, as DEADLINE_EXCEEDED; a longer one changes nothing; a
// Connect client's, a plain HTTP request, ends with a 504; and a gRPC-Web
// client's Grpc-Timeout counts as a gRPC client's.
func TestClientDeadlineShortensTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/slow.Svc/", Service: "grpcdeadline", Timeout: config.Duration(time.Minute)}))
	nc := natsConn(t, e)
	told := make(chan string, 2)
	if _, err := nc.Subscribe("grpcdeadline", func(m *nats.Msg) {
		told <- m.Header.Get("Narun-Timeout")
		if m.Header.Get("Grpc-Timeout") == "1H" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"0"}}})
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h2 := h2cClient(t, e)
	call := func(timeout string) *http.Response {
		t.Helper()
		// A client that sends its deadline and never resets its stream
		// at it: only the gateway ends the call.
		req, _ := http.NewRequest("POST", e.hs.URL+"/slow.Svc/Call", strings.NewReader(grpcMessage("hi")))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Grpc-Timeout", timeout)
		resp, err := h2.RoundTrip(req)
		if err != nil {
			t.Fatalf("call with Grpc-Timeout %s: %v", timeout, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	resp := call("300m")
	if ms, err := strconv.Atoi(<-told); err != nil || ms > 300 || ms < 0 {
		t.Errorf("Narun-Timeout %d (%v) for Grpc-Timeout 300m, want at most 300", ms, err)
	}
	if got, msg := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"); got != "4" || !strings.HasPrefix(msg, "no reply within 300ms") {
		t.Errorf("Grpc-Status %q, Grpc-Message %q; want 4 (DEADLINE_EXCEEDED), no reply within 300ms", got, msg)
	}

	// Narun-Timeout is the time left when the head goes out: under load,
	// a few milliseconds less than the route's minute.
	resp = call("1H")
	if ms, err := strconv.Atoi(<-told); err != nil || ms > 60000 || ms < 50000 {
		t.Errorf("Narun-Timeout %d (%v) for Grpc-Timeout 1H on a route of 1m, want the route's 60000 less the time before the head went out", ms, err)
	}
	if got := resp.Header.Get("Grpc-Status"); got != "0" {
		t.Errorf("Grpc-Status %q for Grpc-Timeout 1H, want 0", got)
	}

	req, _ := http.NewRequest("POST", e.hs.URL+"/slow.Svc/Call", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Timeout-Ms", "300")
	cresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cresp.Body.Close()
	if ms, err := strconv.Atoi(<-told); err != nil || ms > 300 || ms < 0 {
		t.Errorf("Narun-Timeout %d (%v) for Connect-Timeout-Ms 300, want at most 300", ms, err)
	}
	if cresp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d for Connect-Timeout-Ms 300, want 504", cresp.StatusCode)
	}

	// gRPC-Web sends gRPC's Grpc-Timeout, over HTTP/1.1 as well.
	req, _ = http.NewRequest("POST", e.hs.URL+"/slow.Svc/Call", strings.NewReader(grpcMessage("hi")))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set("Grpc-Timeout", "300m")
	wresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wresp.Body.Close()
	if ms, err := strconv.Atoi(<-told); err != nil || ms > 300 || ms < 0 {
		t.Errorf("Narun-Timeout %d (%v) for gRPC-Web's Grpc-Timeout 300m, want at most 300", ms, err)
	}
	if got := wresp.Header.Get("Grpc-Status"); got != "4" {
		t.Errorf("Grpc-Status %q for gRPC-Web's Grpc-Timeout 300m, want 4 (DEADLINE_EXCEEDED)", got)
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"no route for /a (request id X)": "no route for /a (request id X)",
		"100% sure":                      "100%25 sure",
		"line\nbreak":                    "line%0Abreak",
		"café":                           "caf%C3%A9",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

// grpcMessage frames payload as one gRPC message.
func grpcMessage(payload string) string {
	n := len(payload)
	return string([]byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) + payload
}

func TestBodySourceMessages(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 20)
	tests := []struct {
		name   string
		body   string
		limit  int64
		chunks []string // what each next() returns, until the end
		err    string
	}{
		{name: "one message per chunk", body: grpcMessage("ab") + grpcMessage("") + grpcMessage("cde"), limit: 1 << 20,
			chunks: []string{grpcMessage("ab"), grpcMessage(""), grpcMessage("cde")}},
		{name: "a message larger than a chunk is cut", body: grpcMessage(big), limit: 1 << 20,
			chunks: []string{grpcMessage(big)[:16], big[11:]}},
		{name: "prefix cut", body: grpcMessage("ab")[:3], limit: 1 << 20, err: "prefix cut after 3 bytes"},
		{name: "message cut", body: grpcMessage("abcd")[:7], limit: 1 << 20, err: "cut 2 bytes short"},
		{name: "over the limit", body: grpcMessage(big), limit: 10, err: "request body too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := &sync.Pool{New: func() any { b := make([]byte, 16); return &b }}
			b := &bodySource{r: io.NopCloser(strings.NewReader(tt.body)), limit: tt.limit, chunk: 16, pool: pool, messages: true}
			var got []string
			for {
				data, last, err := b.next()
				if err != nil {
					if tt.err == "" || !strings.Contains(err.Error(), tt.err) {
						t.Fatalf("after %q: error %v, want %q", got, err, tt.err)
					}
					return
				}
				if last {
					break
				}
				got = append(got, string(data))
			}
			if tt.err != "" {
				t.Fatalf("read %q, want error %q", got, tt.err)
			}
			if !slices.Equal(got, tt.chunks) {
				t.Errorf("chunks %q, want %q", got, tt.chunks)
			}
		})
	}
}

// TestGRPCServerSpeaksFirst is a bidirectional stream whose server sends a
// message before it reads any: the client sends its message only once it has
// the server's, so the request head must reach the service without waiting
// for the body.
func TestGRPCServerSpeaksFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/chat.Chat/", Service: "chat", Timeout: config.Duration(20 * time.Second)}))
	e.serve(t, "chat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = io.WriteString(w, grpcMessage("hello"))
		w.(http.Flusher).Flush()
		msg := make([]byte, len(grpcMessage("hi")))
		if _, err := io.ReadFull(r.Body, msg); err != nil {
			w.Header().Set("Grpc-Status", "13")
			return
		}
		_, _ = w.Write(msg)
		w.Header().Set("Grpc-Status", "0")
	}))
	tr := h2cClient(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, "POST", e.hs.URL+"/chat.Chat/Talk", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("no response head while the client waits for the server: %v", err)
	}
	defer resp.Body.Close()
	first := make([]byte, len(grpcMessage("hello")))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != grpcMessage("hello") {
		t.Fatalf("server's first message %q, %v", first, err)
	}
	go func() {
		_, _ = io.WriteString(pw, grpcMessage("hi"))
		_ = pw.Close()
	}()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != grpcMessage("hi") || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("echo %q, %v, trailers %v; want %q and Grpc-Status 0", rest, err, resp.Trailer, grpcMessage("hi"))
	}
}

// TestGRPCUnaryHeadCarriesMessage checks that the message a client sends
// right after its request head (a unary call's) travels with the head, so
// that the service need not pull it.
func TestGRPCUnaryHeadCarriesMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/echo.Echo/", Service: "echo"}))
	e.gw.firstWait = time.Minute
	nc := natsConn(t, e)
	heads := make(chan *nats.Msg, 1)
	_, err := nc.Subscribe("echo", func(m *nats.Msg) {
		heads <- m
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Content-Type": {"application/grpc"}, "Grpc-Status": {"0"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	tr := h2cClient(t, e)

	// No Content-Length, as from a gRPC client: the duplex path.
	req, err := http.NewRequest("POST", e.hs.URL+"/echo.Echo/Say", io.NopCloser(strings.NewReader(grpcMessage("hi"))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Grpc-Status") != "0" {
		t.Errorf("got %d %v, want 200 with Grpc-Status 0", resp.StatusCode, resp.Header)
	}
	m := <-heads
	if string(m.Data) != grpcMessage("hi") || m.Header.Get("Narun-Body") != "stream" {
		t.Errorf("head payload %q, Narun-Body %q; want the message and stream (the end is still to pull)", m.Data, m.Header.Get("Narun-Body"))
	}
}

// TestConnectBidiStream is a bidirectional stream of the Connect protocol
// (connect-go's default), whose messages are framed as gRPC's: the client
// sends a message and waits for the reply before the next, which works
// only if the gateway hands each message on as it comes rather than
// waiting for a chunk's worth of body.
func TestConnectBidiStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/chat.v1.Chat/", Service: "connectchat", Timeout: config.Duration(20 * time.Second)}))
	e.serve(t, "connectchat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+proto")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		prefix := make([]byte, 5)
		for {
			if _, err := io.ReadFull(r.Body, prefix); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint32(prefix[1:]))
			if _, err := io.ReadFull(r.Body, msg); err != nil {
				return
			}
			_, _ = w.Write(append(prefix, msg...))
			w.(http.Flusher).Flush()
		}
	}))
	tr := h2cClient(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, "POST", e.hs.URL+"/chat.v1.Chat/Talk", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+proto")
	sent := make(chan error, 1)
	go func() {
		_, err := io.WriteString(pw, grpcMessage("one"))
		sent <- err
	}()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for i, m := range []string{"one", "two", "three"} {
		if i > 0 {
			if _, err := io.WriteString(pw, grpcMessage(m)); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]byte, len(grpcMessage(m)))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != grpcMessage(m) {
			t.Fatalf("reply to message %d: %q, %v; want it echoed before the next is sent", i+1, got, err)
		}
	}
}

// TestRPCErrorsForConnectAndGRPCWeb checks that the gateway's own errors
// reach Connect and gRPC-Web clients as their protocols carry a status, not
// as a bare HTTP status: connect-go and gRPC-Web clients read a 504 without
// its error body as unavailable, a code that retry policies retry, where
// the gateway means a deadline.
func TestRPCErrorsForConnectAndGRPCWeb(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/mute.Svc/", Service: "rpcmute", Timeout: config.Duration(200 * time.Millisecond)}))
	nc := natsConn(t, e)
	if _, err := nc.Subscribe("rpcmute", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	call := func(path string, h http.Header, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.hs.URL+path, strings.NewReader(body))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %v: %v", path, h, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %v: reading the body: %v", path, h, err)
		}
		return resp, b
	}
	var wire struct{ Code, Message string }

	unary := http.Header{"Content-Type": {"application/proto"}, "Connect-Protocol-Version": {"1"}}
	for path, want := range map[string]struct {
		status int
		code   string
	}{"/mute.Svc/Call": {504, "deadline_exceeded"}, "/none.Svc/Call": {404, "unimplemented"}} {
		resp, b := call(path, unary, "")
		if err := json.Unmarshal(b, &wire); resp.StatusCode != want.status || err != nil || wire.Code != want.code || !strings.Contains(wire.Message, "request id") {
			t.Errorf("Connect unary %s: %d %q (%v), want %d with a JSON error of code %s naming the request id", path, resp.StatusCode, b, err, want.status, want.code)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Connect unary %s: Content-Type %q, want application/json", path, ct)
		}
	}

	resp, b := call("/mute.Svc/Call", http.Header{"Content-Type": {"application/connect+proto"}, "Connect-Protocol-Version": {"1"}}, "\x00\x00\x00\x00\x00")
	var end struct {
		Error struct{ Code, Message string }
	}
	if resp.StatusCode != 200 || len(b) < 5 || b[0] != 2 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 || json.Unmarshal(b[5:], &end) != nil || end.Error.Code != "deadline_exceeded" {
		t.Errorf("Connect stream: %d %q, want 200 and an end-stream message with error code deadline_exceeded", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/connect+proto" {
		t.Errorf("Connect stream: Content-Type %q, want application/connect+proto", ct)
	}

	resp, b = call("/mute.Svc/Call", http.Header{"Content-Type": {"application/grpc-web+proto"}}, "\x00\x00\x00\x00\x00")
	if got, msg := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"); resp.StatusCode != 200 || got != "4" || !strings.Contains(msg, "request id") {
		t.Errorf("gRPC-Web: %d, Grpc-Status %q, Grpc-Message %q, body %q; want 200, a trailers-only 4 (DEADLINE_EXCEEDED) naming the request id", resp.StatusCode, got, msg, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/grpc-web+proto" {
		t.Errorf("gRPC-Web: Content-Type %q, want application/grpc-web+proto", ct)
	}
}

// A gateway error after the head of a streamed gRPC-Web or Connect response
// reaches the client as its protocol's last message when the body is
// between two messages; cut mid-message, or after the service's own last
// message, the response is aborted, as nothing can follow there.
func TestRPCErrorsAfterTheHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/late.Svc/", Service: "rpclate", Timeout: config.Duration(300 * time.Millisecond)}))
	nc := natsConn(t, e)
	frame := func(flags byte, payload string) string {
		m := make([]byte, 5, 5+len(payload))
		m[0] = flags
		binary.BigEndian.PutUint32(m[1:], uint32(len(payload)))
		return string(append(m, payload...))
	}
	sent := map[string]string{
		"/late.Svc/Whole":    frame(0, "first") + frame(0, ""),
		"/late.Svc/Cut":      frame(0, "first")[:7],
		"/late.Svc/Trailers": frame(0, "first") + frame(0x80, "grpc-status: 0\r\n"),
		"/late.Svc/Ended":    frame(0, "first") + frame(0x02, "{}"),
	}
	// Answers with a streamed head carrying the body above, then falls
	// silent until the route's timeout.
	if _, err := nc.Subscribe("rpclate", func(m *nats.Msg) {
		nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{
			consumer.HeaderBody: {consumer.BodyStream},
			"Content-Type":      {m.Header.Get("Content-Type")},
		}, Data: []byte(sent[m.Header.Get(consumer.HeaderPath)])})
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, contentType string
		// end is the message the gateway adds, empty for an aborted
		// response.
		end func(t *testing.T, flags byte, payload []byte)
	}{
		{"/late.Svc/Whole", "application/grpc-web+proto", func(t *testing.T, flags byte, payload []byte) {
			if flags != 0x80 || !strings.Contains(string(payload), "grpc-status: 4\r\n") || !strings.Contains(string(payload), "request id") {
				t.Errorf("last message %x %q, want gRPC-Web trailers with grpc-status 4 (DEADLINE_EXCEEDED) naming the request id", flags, payload)
			}
		}},
		{"/late.Svc/Whole", "application/connect+proto", func(t *testing.T, flags byte, payload []byte) {
			var end struct {
				Error struct{ Code, Message string }
			}
			if flags != 0x02 || json.Unmarshal(payload, &end) != nil || end.Error.Code != "deadline_exceeded" || !strings.Contains(end.Error.Message, "request id") {
				t.Errorf("last message %x %q, want a Connect end of stream with error deadline_exceeded naming the request id", flags, payload)
			}
		}},
		{"/late.Svc/Cut", "application/grpc-web+proto", nil},
		{"/late.Svc/Cut", "application/connect+proto", nil},
		{"/late.Svc/Trailers", "application/grpc-web+proto", nil},
		{"/late.Svc/Ended", "application/connect+proto", nil},
		// Base64 text: its messages are not followed.
		{"/late.Svc/Whole", "application/grpc-web-text", nil},
	} {
		t.Run(tc.path+" "+tc.contentType, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.hs.URL+tc.path, strings.NewReader(frame(0, "")))
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			want := sent[tc.path]
			if tc.end == nil {
				if err == nil {
					t.Errorf("body %q read whole, want the response aborted", b)
				}
				return
			}
			if err != nil || !strings.HasPrefix(string(b), want) || len(b) < len(want)+5 {
				t.Fatalf("body %q, %v; want the service's messages and one more", b, err)
			}
			last := b[len(want):]
			if n := binary.BigEndian.Uint32(last[1:5]); int(n) != len(last)-5 {
				t.Fatalf("last message of %d bytes announces %d", len(last)-5, n)
			}
			tc.end(t, last[0], last[5:])
		})
	}
}

// Messages written in pieces of any size are followed alike.
func TestRPCFramesFollowPieces(t *testing.T) {
	body := []byte("\x00\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02xy")
	for _, tc := range []struct {
		upTo    int
		between bool
	}{{0, true}, {3, false}, {5, false}, {7, false}, {8, true}, {10, false}, {13, true}, {19, false}, {20, true}} {
		for piece := 1; piece <= 8; piece++ {
			f := rpcFrames{kind: rpcGRPCWeb}
			for p := body[:tc.upTo]; len(p) > 0; p = p[min(piece, len(p)):] {
				f.feed(p[:min(piece, len(p))])
			}
			if f.between() != tc.between {
				t.Errorf("after %d bytes in pieces of %d: between %v, want %v", tc.upTo, piece, f.between(), tc.between)
			}
		}
	}
	f := rpcFrames{kind: rpcConnectStream}
	f.feed([]byte("\x02\x00\x00\x00\x02{}"))
	if f.between() {
		t.Error("a message may follow Connect's end of stream")
	}
}
