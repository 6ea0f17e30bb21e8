package consumer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// caller serves h as the service "svc" and returns a client that calls it
// through a Transport on a connection of its own.
func caller(t *testing.T, h http.Handler) (*http.Client, *nats.Conn) {
	t.Helper()
	_, nc, _ := start(t, consumer.Config{Name: "svc"}, h)
	return &http.Client{Transport: &consumer.Transport{Conn: nc}}, nc
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the response body: %v", err)
	}
	return string(b)
}

func TestTransportCarriesTheRequest(t *testing.T) {
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", fmt.Sprintf("%s %s %s %q %s %s len=%d", r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Host, r.Header.Get("X-Request-Id"), r.Header.Values("X-Multi"), r.ContentLength))
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	}))
	req, _ := http.NewRequest(http.MethodPut, "http://svc/notes/a%2Fb?x=1&y=%20z", strings.NewReader("the body"))
	req.Header.Set("X-Request-Id", "abc-1")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	req.Header.Set("Narun-Status", "500")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "the body" {
		t.Errorf("body %q, want the request's", got)
	}
	if resp.StatusCode != http.StatusCreated || resp.Status != "201 Created" {
		t.Errorf("status %d %q, want 201", resp.StatusCode, resp.Status)
	}
	if want := `PUT /notes/a%2Fb x=1&y=%20z "svc" abc-1 [one two] len=8`; resp.Header.Get("X-Seen") != want {
		t.Errorf("the handler saw %q, want %q", resp.Header.Get("X-Seen"), want)
	}
	if c := resp.Header.Values("Set-Cookie"); len(c) != 2 {
		t.Errorf("Set-Cookie %q, want both", c)
	}
	for k := range resp.Header {
		if consumer.IsReserved(k) || strings.HasPrefix(k, "Nats-") {
			t.Errorf("protocol header %s in the response", k)
		}
	}
	if resp.ContentLength != 8 {
		t.Errorf("ContentLength %d, want 8", resp.ContentLength)
	}
}

func TestTransportLargeBodiesBothWays(t *testing.T) {
	download := make([]byte, 5<<20)
	rand.Read(download)
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Write(download)
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	upload := make([]byte, 3<<20)
	rand.Read(upload)
	sum := sha256.Sum256(upload)
	want := fmt.Sprintf("%d %x", len(upload), sum)

	resp, err := client.Post("http://svc/up", "application/octet-stream", bytes.NewReader(upload))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != want {
		t.Errorf("known length upload: service read %q, want %q", got, want)
	}

	// A body of unknown length reaches the service as it is written.
	pr, pw := io.Pipe()
	go func() {
		for p := upload; len(p) > 0; p = p[min(len(p), 100000):] {
			pw.Write(p[:min(len(p), 100000)])
		}
		pw.Close()
	}()
	resp, err = client.Post("http://svc/up", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != want {
		t.Errorf("unknown length upload: service read %q, want %q", got, want)
	}

	resp, err = client.Get("http://svc/down")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if sha256.Sum256([]byte(got)) != sha256.Sum256(download) {
		t.Errorf("download of %d bytes differs (%d read)", len(download), len(got))
	}
}

func TestTransportStreamsEventsAsFlushed(t *testing.T) {
	next := make(chan struct{})
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Trailer", "X-Events")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case next <- struct{}{}:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Events", "3")
	}))
	// After caller's: cleanups run last first, and the service's stop
	// waits for the handler.
	t.Cleanup(func() { close(next) })
	resp, err := client.Get("http://svc/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, ok := resp.Trailer["X-Events"]; !ok {
		t.Errorf("trailers announced %v, want X-Events", resp.Trailer)
	}
	buf := make([]byte, 64)
	for i := range 3 {
		// Each event arrives while the handler waits to write the next.
		n, err := resp.Body.Read(buf)
		if err != nil || string(buf[:n]) != fmt.Sprintf("data: %d\n\n", i) {
			t.Fatalf("event %d: %q, %v", i, buf[:n], err)
		}
		<-next
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after the events: %q, %v", rest, err)
	}
	if resp.Trailer.Get("X-Events") != "3" {
		t.Errorf("trailer X-Events %q, want 3", resp.Trailer.Get("X-Events"))
	}
}

func TestTransportCancelsTheHandler(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Write([]byte("first"))
			w.(http.Flusher).Flush()
		}
		started <- struct{}{}
		<-r.Context().Done()
		ended <- r.Context().Err()
	}))

	// The caller gives up before the handler answers.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/slow", nil)
	if _, err := client.Do(req); !errors.Is(err, context.Canceled) {
		t.Errorf("a request cancelled: %v, want context.Canceled", err)
	}
	if !errors.Is(waitEnded(t, ended), context.Canceled) {
		t.Error("the caller's cancel did not cancel the handler")
	}

	// The caller closes a streamed body before its end.
	resp, err := client.Get("http://svc/stream")
	if err != nil {
		t.Fatal(err)
	}
	<-started
	buf := make([]byte, 16)
	if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "first" {
		t.Fatalf("first part %q, %v", buf[:n], err)
	}
	resp.Body.Close()
	if !errors.Is(waitEnded(t, ended), context.Canceled) {
		t.Error("closing the body did not cancel the handler")
	}
	if _, err := resp.Body.Read(buf); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("read after close: %v", err)
	}
}

func TestTransportDeadline(t *testing.T) {
	release := make(chan struct{})
	timeouts := make(chan string, 1)
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := r.Context().Deadline()
		timeouts <- time.Until(d).Round(time.Minute).String()
		<-release
	}))
	t.Cleanup(func() { close(release) })
	client.Transport.(*consumer.Transport).Timeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/", nil)
	if _, err := client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("past the deadline: %v, want context.DeadlineExceeded", err)
	}
	if d := <-timeouts; d != "0s" {
		t.Errorf("the handler's deadline was %s away, want the caller's", d)
	}
	// Without a deadline of the caller's, Timeout bounds the exchange.
	go client.Get("http://svc/")
	if d := <-timeouts; d != "1h0m0s" {
		t.Errorf("the handler's deadline was %s away, want Timeout's hour", d)
	}
}

func waitEnded(t *testing.T, ended <-chan error) error {
	t.Helper()
	select {
	case err := <-ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still runs 10 s later")
		return nil
	}
}

// responder answers each request on subject with reply(request), as a
// service written without this package would.
func responder(t *testing.T, nc *nats.Conn, subject string, reply func(m *nats.Msg)) {
	t.Helper()
	sub, err := nc.Subscribe(subject, reply)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// handWritten returns a connection to answer requests on, as a responder
// written by hand in any language does, and a client whose Transport
// calls it on a connection of its own.
func handWritten(t *testing.T) (*nats.Conn, *http.Client) {
	t.Helper()
	srv := natstest.Start(t)
	return natstest.Connect(t, srv), &http.Client{Transport: &consumer.Transport{Conn: natstest.Connect(t, srv)}}
}

func TestTransportErrors(t *testing.T) {
	srv := natstest.Start(t)
	svc := natstest.Connect(t, srv)
	nc := natstest.Connect(t, srv)
	client := &http.Client{Transport: &consumer.Transport{Conn: nc, Timeout: 20 * time.Second}}
	answer := func(h nats.Header, data string) func(*nats.Msg) {
		return func(m *nats.Msg) { svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: h, Data: []byte(data)}) }
	}
	responder(t, svc, "micro404", answer(nats.Header{consumer.HeaderServiceErrorCode: {"404"}, consumer.HeaderServiceError: {"no such note"}}, ""))
	responder(t, svc, "micro200", answer(nats.Header{consumer.HeaderServiceErrorCode: {"200"}, consumer.HeaderServiceError: {"odd"}}, ""))
	responder(t, svc, "badstatus", answer(nats.Header{consumer.HeaderStatus: {"abc"}}, ""))
	responder(t, svc, "plain", answer(nil, "Hi"))
	responder(t, svc, "early", answer(nats.Header{consumer.HeaderFrame: {consumer.FrameData}}, "x"))
	// Says it is alive, allowing a second of silence, then dies.
	responder(t, svc, "dies", answer(nats.Header{consumer.HeaderFrame: {consumer.FrameAlive}, consumer.HeaderAliveTimeout: {"1000"}}, ""))
	responder(t, svc, "short", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}, "Content-Length": {"10"}}, Data: []byte("12345")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameEnd}}})
	})
	// The gateway takes a protocol header with two different values for
	// a broken reply (PROTOCOL.md §1), under one spelling or two.
	responder(t, svc, "twostatuses", answer(nats.Header{consumer.HeaderStatus: {"200"}, "narun-status": {"404"}}, ""))
	responder(t, svc, "samestatus", answer(nats.Header{consumer.HeaderStatus: {"404", "404"}}, "gone"))
	responder(t, svc, "twoframes", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("part")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameData, consumer.FrameEnd}}})
	})
	// HTTP forbids control characters in a field (RFC 9110 5.5), and
	// nats.go sends all but CR and LF as they are.
	responder(t, svc, "controlhead", answer(nats.Header{"X-Bad": {"a\x01b"}}, "hi"))
	responder(t, svc, "controltrailer", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("part")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameEnd}, "X-Sum": {"a\x00"}}})
	})
	responder(t, svc, "microcode", answer(nats.Header{consumer.HeaderServiceErrorCode: {"409"}}, ""))
	responder(t, svc, "unknownbody", answer(nats.Header{consumer.HeaderBody: {"chunked"}}, "Hi"))
	responder(t, svc, "failed", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("part")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameEnd}, consumer.HeaderServiceErrorCode: {"500"}, consumer.HeaderServiceError: {"disk full"}}})
	})

	for _, tc := range []struct {
		url    string
		status int
		body   string
		err    error
		text   string
	}{
		{url: "http://nobody/", err: consumer.ErrNoService},
		{url: "http://micro404/", status: 404, body: "no such note"},
		{url: "http://micro200/", status: 502, body: "odd"},
		{url: "http://plain/x", status: 200, body: "Hi"},
		{url: "http://badstatus/", err: consumer.ErrBrokenReply, text: `status "abc"`},
		{url: "http://early/", err: consumer.ErrBrokenReply, text: `"data" frame before the response head`},
		{url: "http://dies/", err: consumer.ErrServiceGone},
		{url: "http://short/", status: 200, err: consumer.ErrBrokenReply, text: "5 bytes, 10 announced"},
		{url: "http://failed/", status: 200, err: io.ErrUnexpectedEOF, text: "disk full"},
		{url: "http://controlhead/", err: consumer.ErrBrokenReply, text: `header "X-Bad" has a control character`},
		{url: "http://controltrailer/", status: 200, err: consumer.ErrBrokenReply, text: `trailer "X-Sum" has a control character`},
		{url: "http://microcode/", status: 409, body: `error code "409"`},
		{url: "http://unknownbody/", err: consumer.ErrBrokenReply, text: `Narun-Body "chunked"`},
		{url: "http://twostatuses/", err: consumer.ErrBrokenReply, text: "Narun-Status with two different values"},
		{url: "http://samestatus/", status: 404, body: "gone"},
		{url: "http://twoframes/", status: 200, err: consumer.ErrBrokenReply, text: "Narun-Frame with two different values"},
		{url: "http://$JS.API.INFO/", text: "subject of NATS or narun"},
		{url: "http://_INBOX.abc/", text: "subject of NATS or narun"},
		{url: "http:///path", text: "no host"},
		{url: "http://a..b/", text: "no NATS subject"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			resp, err := client.Get(tc.url)
			var body string
			if err == nil {
				defer resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
				}
				var b []byte
				b, err = io.ReadAll(resp.Body)
				body = string(b)
			} else if tc.status != 0 {
				t.Errorf("no response (%v), want %d", err, tc.status)
			}
			switch {
			case tc.err == nil && tc.text == "":
				if err != nil || body != tc.body {
					t.Errorf("body %q, %v; want %q", body, err, tc.body)
				}
			case err == nil:
				t.Errorf("no error, want %v %q", tc.err, tc.text)
			case tc.err != nil && !errors.Is(err, tc.err), !strings.Contains(err.Error(), tc.text):
				t.Errorf("error %v, want %v with %q", err, tc.err, tc.text)
			}
		})
	}
}

// A service that pulls only part of a streamed body and answers ends the
// exchange: the rest is not read, and the caller's body is closed.
func TestTransportBodyLeftUnread(t *testing.T) {
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 10))
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}))
	pr, pw := io.Pipe()
	t.Cleanup(func() { pr.Close() })
	writeErr := make(chan error, 1)
	go func() {
		// Stops once the transport closes the body it no longer needs.
		for {
			if _, err := pw.Write(make([]byte, 1000)); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	resp, err := client.Post("http://svc/", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", resp.StatusCode)
	}
	select {
	case err := <-writeErr:
		if !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("writing the request body: %v, want io.ErrClosedPipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the request body is still open 10 s after the response")
	}
}

// An app connects once as the runner tells it to, serves on that
// connection and calls other services on it.
func TestConnectReadsTheRunnersEnvironment(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "app.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", NKeys: []embednats.NKey{{PublicKey: pub}}})
	t.Setenv("NARUN_NATS_URL", srv.ClientURL())
	t.Setenv("NARUN_NATS_NKEY", seedFile)
	nc, err := consumer.Connect(nats.Name("caller"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	waitFor(t, "the nkey login", nc.IsConnected)
	serve(t, nc, consumer.Config{Name: "self"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("served on the same connection"))
	}))
	waitServing(t, srv, "self")
	resp, err := (&http.Client{Transport: &consumer.Transport{Conn: nc}}).Get("http://self/")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "served on the same connection" {
		t.Errorf("body %q", got)
	}

	t.Setenv("NARUN_NATS_NKEY", filepath.Join(t.TempDir(), "missing.nk"))
	if _, err := consumer.Connect(); err == nil || !strings.Contains(err.Error(), "missing.nk") {
		t.Errorf("Connect with a missing nkey file: %v, want an error naming it", err)
	}
}

// A request body that fails while the service pulls it fails the call
// with its error, and ends the handler's wait for it.
func TestTransportBodyReadError(t *testing.T) {
	ended := make(chan error, 1)
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		ended <- err
	}))
	broken := errors.New("disk gone")
	body := io.MultiReader(strings.NewReader("some bytes"), iotest.ErrReader(broken))
	req, _ := http.NewRequest(http.MethodPost, "http://svc/", body)
	req.ContentLength = -1
	if _, err := client.Do(req); !errors.Is(err, broken) {
		t.Errorf("call with a failing body: %v, want its error", err)
	}
	if err := waitEnded(t, ended); err == nil {
		t.Error("the handler read the whole body without an error")
	}
}

// BenchmarkTransport is a small call through Transport, against the same
// handler asked with a bare NATS request: what the transport's exchange
// (an inbox subscription of its own per call) costs over one request.
func BenchmarkTransport(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("pong")) })
	_, nc, _ := start(b, consumer.Config{Name: "svc"}, h)
	b.Run("transport", func(b *testing.B) {
		client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Get("http://svc/ping")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := request(nc, "svc", "/ping"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Calls at once on one Transport each get their own answer: their replies
// share one subscription.
func TestTransportConcurrentCalls(t *testing.T) {
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.URL.Query().Get("n")))
	}))
	errs := make(chan error, 64)
	for i := range cap(errs) {
		go func() {
			resp, err := client.Get("http://svc/?n=" + strconv.Itoa(i))
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && string(b) != strconv.Itoa(i) {
					err = fmt.Errorf("call %d answered %q", i, b)
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A handler that calls another service with its request's context passes
// the request's id and trace on without copying them: one id and one trace
// name the whole chain, as the gateway began it. Headers the call sets
// itself win, and a call made outside any served request carries none.
func TestTransportCarriesTheServedRequestsIDAndTrace(t *testing.T) {
	srv := natstest.Start(t)
	seen := func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s", r.Header.Get("X-Request-Id"), r.Header.Get("Traceparent"), r.Header.Get("Tracestate"))
	}
	serveOn := func(name string, h http.HandlerFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- consumer.Serve(ctx, natstest.Connect(t, srv), consumer.Config{Name: name}, h) }()
		t.Cleanup(func() { cancel(); <-done })
		waitServing(t, srv, name)
	}
	serveOn("inner", seen)
	downstream := &http.Client{Transport: &consumer.Transport{Conn: natstest.Connect(t, srv)}}
	serveOn("outer", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://inner/", nil)
		if v := r.URL.Query().Get("own"); v != "" {
			req.Header.Set("X-Request-Id", v)
		}
		resp, err := downstream.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	client := &http.Client{Transport: &consumer.Transport{Conn: natstest.Connect(t, srv)}}
	const trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	call := func(url string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Request-Id", "req-1")
		req.Header.Set("Traceparent", trace)
		req.Header.Set("Tracestate", "vendor=1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return readAll(t, resp)
	}
	if got, want := call("http://outer/"), "req-1|"+trace+"|vendor=1"; got != want {
		t.Errorf("the inner service saw %q, want %q", got, want)
	}
	if got, want := call("http://outer/?own=mine"), "mine|"+trace+"|vendor=1"; got != want {
		t.Errorf("with its own id, the inner service saw %q, want %q", got, want)
	}
	if got := call("http://inner/"); got != "req-1|"+trace+"|vendor=1" {
		t.Errorf("called directly, the inner service saw %q", got)
	}
	resp, err := downstream.Get("http://inner/")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "||" {
		t.Errorf("a call outside any served request carried %q", got)
	}
}

// A responder in another language may write the protocol's header names in
// another case, and spaces after a value: the gateway reads them alike
// (PROTOCOL.md: "accepts any case back", "spaces and tabs around a
// header's value are not part of it"), and so must Transport, which
// speaks the protocol as the gateway does.
func TestTransportReadsRepliesAsTheGatewayDoes(t *testing.T) {
	svc, client := handWritten(t)
	responder(t, svc, "lower", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-status": {"201 "}, "narun-body": {"stream"}, "content-type": {"text/plain"}}, Data: []byte("part1,")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-frame": {"data "}}, Data: []byte("part2")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-frame": {"end"}, "x-sum": {"2"}}})
	})
	responder(t, svc, "lowererr", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"nats-service-error-code": {"409"}, "nats-service-error": {"conflict"}}})
	})

	resp, err := client.Get("http://lower/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || string(body) != "part1,part2" || resp.Trailer.Get("X-Sum") != "2" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("got %d %q (%v), trailers %v, header %v; want 201 \"part1,part2\", X-Sum 2 and text/plain", resp.StatusCode, body, err, resp.Trailer, resp.Header)
	}

	resp, err = client.Get("http://lowererr/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || string(body) != "conflict" {
		t.Errorf("got %d %q, want 409 \"conflict\"", resp.StatusCode, body)
	}
}

// The gateway ignores a frame type it does not know, before the head as
// after it, so that later versions of the protocol can add frames without
// breaking older peers (PROTOCOL.md §3), and drops an interim frame that
// comes after the head. Transport, which reads replies as the gateway does,
// must not fail such a response as a broken reply.
func TestTransportIgnoresFramesItDoesNotKnow(t *testing.T) {
	svc, client := handWritten(t)
	frame := func(reply, kind string, data string) {
		svc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{consumer.HeaderFrame: {kind}}, Data: []byte(data)})
	}
	responder(t, svc, "later", func(m *nats.Msg) {
		frame(m.Reply, "future", "")
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("a")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameInterim}, consumer.HeaderStatus: {"103"}}})
		frame(m.Reply, "future", "not body")
		frame(m.Reply, consumer.FrameData, "b")
		frame(m.Reply, consumer.FrameEnd, "c")
	})
	resp, err := client.Get("http://later/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "abc" {
		t.Errorf("body %q, %v; want \"abc\"", body, err)
	}
}

// What net/http's Transport refuses to send, Transport refuses too, rather
// than hand the service a request no HTTP client could make: a method
// that is no token, a header value with a control character (nats.go
// would send a line feed as a space, changing the value unseen).
func TestTransportRefusesWhatNetHTTPRefuses(t *testing.T) {
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s with X-Value %q", r.Method, r.Header.Get("X-Value"))
	}))
	for _, tc := range []struct {
		name, method, value, want string
	}{
		{name: "method with a space", method: "GE T", want: `invalid method "GE T"`},
		{name: "line feed in a value", method: http.MethodGet, value: "a\nNarun-Path: /admin", want: `invalid header field value for "X-Value"`},
		{name: "control character in a value", method: http.MethodGet, value: "a\x01b", want: `invalid header field value for "X-Value"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
			req.Method = tc.method
			req.Header.Set("X-Value", tc.value)
			resp, err := client.Do(req)
			if err == nil {
				t.Fatalf("%s: %q, want an error with %q", resp.Status, readAll(t, resp), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

// The headers a reply's Connection header names are of one connection,
// which the gateway does not pass on (PROTOCOL.md §1, §3): nor does
// Transport, in the head or in the trailers of the end frame, where the
// head's Connection counts too.
func TestTransportDropsTheHeadersConnectionNames(t *testing.T) {
	svc, client := handWritten(t)
	responder(t, svc, "svc", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{
			consumer.HeaderBody: {consumer.BodyStream},
			"Connection":        {"X-Hop, x-lane"},
			"X-Hop":             {"1"},
			"X-Lane":            {"1"},
			"X-Kept":            {"1"},
		}, Data: []byte("body")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{
			consumer.HeaderFrame: {consumer.FrameEnd},
			"Connection":         {"X-Local"},
			"X-Local":            {"t"},
			"X-Hop":              {"t"},
			"X-Sum":              {"ok"},
		}})
	})
	resp, err := client.Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); body != "body" {
		t.Errorf("body %q", body)
	}
	if got := slices.Sorted(maps.Keys(resp.Header)); !slices.Equal(got, []string{"X-Kept"}) {
		t.Errorf("header %v, want X-Kept alone", got)
	}
	if got := slices.Sorted(maps.Keys(resp.Trailer)); !slices.Equal(got, []string{"X-Sum"}) {
		t.Errorf("trailers %v, want X-Sum alone", got)
	}
}
