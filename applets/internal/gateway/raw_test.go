package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
)

// TestRawResponderStreams is a service written from docs/PROTOCOL.md alone,
// with plain NATS calls: it pulls a large request body (§2) and streams its
// response with acks and a trailer (§3).
func TestRawResponderStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/raw", Service: "rawstream"}))
	nc := natsConn(t, e)
	errs := make(chan error, 1)
	_, err := nc.QueueSubscribe("rawstream", "q", func(m *nats.Msg) {
		go func() { errs <- rawServe(nc, m) }()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	upload := randomBytes(3<<20+5, 7)
	resp, err := http.Post(e.hs.URL+"/raw", "application/octet-stream", io.MultiReader(bytes.NewReader(upload)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("part 0\npart 1\npart 2\nreceived %d bytes %s\n", len(upload), digest(upload))
	if resp.StatusCode != 207 || string(got) != want {
		t.Errorf("got %d %q, want 207 %q", resp.StatusCode, got, want)
	}
	if tr := resp.Trailer.Get("X-Checksum"); tr != digest(upload) {
		t.Errorf("trailer X-Checksum = %q", tr)
	}
}

func rawServe(nc *nats.Conn, m *nats.Msg) error {
	body := append([]byte(nil), m.Data...)
	if m.Header.Get("Narun-Body") == "stream" {
		for {
			chunk, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"pull"}}}, 10*time.Second)
			if err != nil {
				return fmt.Errorf("pull: %w", err)
			}
			body = append(body, chunk.Data...)
			if f := chunk.Header.Get("Narun-Frame"); f == "end" {
				break
			} else if f != "data" {
				return fmt.Errorf("pull answered with frame %q", f)
			}
		}
	}
	head := &nats.Msg{Subject: m.Reply, Header: nats.Header{
		"Narun-Status": {"207"}, "Narun-Body": {"stream"}, "Content-Type": {"text/plain"},
	}, Data: []byte("part 0\n")}
	if err := nc.PublishMsg(head); err != nil {
		return err
	}
	for i := 1; i <= 2; i++ {
		ack, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte("part " + strconv.Itoa(i) + "\n")}, 10*time.Second)
		if err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
		if f := ack.Header.Get("Narun-Frame"); f != "ack" {
			return fmt.Errorf("frame %d answered with %q", i, f)
		}
	}
	end := &nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "X-Checksum": {digest(body)}},
		Data: fmt.Appendf(nil, "received %d bytes %s\n", len(body), digest(body))}
	return nc.PublishMsg(end)
}

// TestTrailersFromGoHandler checks that trailers declared by a Go handler
// reach the client.
func TestTrailersFromGoHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/t", Service: "trailers"}))
	e.serve(t, "trailers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Total")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Total", "4")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		// After the head went out: ignored, as net/http ignores it.
		w.Header().Set("X-After", "late")
	}))
	resp, err := http.Get(e.hs.URL + "/t")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "body" || resp.Trailer.Get("X-Total") != "4" || resp.Trailer.Get("X-Late") != "yes" {
		t.Errorf("body %q trailers %v", b, resp.Trailer)
	}
	if h := resp.Header; h.Get("X-Total") != "" || h.Get("X-After") != "" {
		t.Errorf("head %v carries headers set after it was written", h)
	}
}

// TestReplyConnectionHeaders checks that the headers a reply's Connection
// header names, and the hop-by-hop ones, stay between service and gateway,
// in the head and in the trailers, whatever their case; those the head
// names, in the trailers too.
func TestReplyConnectionHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "conn"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("conn", func(m *nats.Msg) {
		if m.Header.Get("Narun-Path") == "/head-names-trailers" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}, "Connection": {"X-Hidden"}}, Data: []byte("a")})
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "X-Hidden": {"1"}, "X-Sum": {"2"}}})
			return
		}
		if m.Header.Get("Narun-Path") == "/trailers" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}}, Data: []byte("a")})
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "connection": {"X-Hidden"}, "X-Hidden": {"1"}, "X-Sum": {"2"}}})
			return
		}
		head := nats.Header{"Connection": {"X-Internal, x-other, close"}, "X-Internal": {"secret"}, "X-Other": {"secret"}, "X-Kept": {"yes"}, "x-request-id": {"the-service-s"},
			"Keep-Alive": {"timeout=1"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Proxy-Connection": {"close"}}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte("ok")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.hs.URL + "/head")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header; h.Get("X-Internal") != "" || h.Get("X-Other") != "" || h.Get("X-Kept") != "yes" ||
		h.Get("Keep-Alive") != "" || h.Get("Upgrade") != "" || h.Get("Proxy-Connection") != "" || len(resp.TransferEncoding) != 0 {
		t.Errorf("response headers %v, transfer encoding %q: want X-Kept only", h, resp.TransferEncoding)
	}
	// The service's Connection: close describes its own hop: the client's
	// connection stays open.
	if resp.Close {
		t.Error("the service's Connection: close closes the client's connection")
	}
	// The gateway's request id, the one in its logs, not the service's.
	if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] == "the-service-s" {
		t.Errorf("X-Request-Id %q: want only the gateway's", ids)
	}
	// Named by the end frame's Connection header, or by the head's: that
	// one describes the whole response.
	for _, p := range []string{"/trailers", "/head-names-trailers"} {
		resp, err = http.Get(e.hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if tr := resp.Trailer; tr.Get("X-Hidden") != "" || tr.Get("X-Sum") != "2" {
			t.Errorf("%s: trailers %v: want X-Sum only", p, tr)
		}
	}
}

// A pull or a data frame that arrives after its exchange ended (here at
// the route timeout) is answered with a cancel, as during the exchange:
// the service learns at once that nobody reads on.
func TestLateFramesGetCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/late", Service: "late", Timeout: config.Duration(200 * time.Millisecond)}))
	nc := natsConn(t, e)
	heads := make(chan *nats.Msg, 1)
	if _, err := nc.Subscribe("late", func(m *nats.Msg) { heads <- m }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A body the service must pull, and which the gateway does not wait
	// for before the head goes out (Expect: 100-continue): one sent with
	// the head would have its first chunk read within the short route
	// timeout, and a loaded machine can take longer to send it, which
	// ends in a 408 instead.
	c := dialRaw(t, e)
	fmt.Fprintf(c, "POST /late HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 3<<20)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	head := <-heads
	for _, frame := range []string{"pull", "data"} {
		answer, err := nc.RequestMsg(&nats.Msg{Subject: head.Reply, Header: nats.Header{"Narun-Frame": {frame}}}, 10*time.Second)
		if err != nil {
			t.Fatalf("late %s: %v", frame, err)
		}
		if got := answer.Header.Get("Narun-Frame"); got != "cancel" {
			t.Errorf("late %s answered with frame %q, want cancel", frame, got)
		}
	}
}

// A HEAD answered with a streamed head gets the head, and the service
// hears at once that no body is wanted.
func TestHeadOfAStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/s", Service: "headstream"}))
	nc := natsConn(t, e)
	cancels, err := nc.SubscribeSync("_NARUN.cancel.headstream")
	if err != nil {
		t.Fatal(err)
	}
	replies := make(chan string, 1)
	frameAnswers := make(chan string, 1)
	_, err = nc.Subscribe("headstream", func(m *nats.Msg) {
		replies <- m.Reply
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}, "Narun-Status": {"203"}}, Data: []byte("first part")})
		// A service that streams on at once: its first frame may reach
		// the gateway before the exchange ends, and must be answered.
		go func() {
			a, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte("more")}, 10*time.Second)
			if err != nil {
				frameAnswers <- err.Error()
				return
			}
			frameAnswers <- a.Header.Get("Narun-Frame")
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Head(e.hs.URL + "/s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 203 {
		t.Errorf("status %d, want the service's 203", resp.StatusCode)
	}
	reply := <-replies
	m, err := cancels.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no cancel after the head: %v", err)
	}
	if string(m.Data) != reply {
		t.Errorf("cancel for %q, want the exchange %q", m.Data, reply)
	}
	if got := <-frameAnswers; got != "cancel" {
		t.Errorf("the frame after the head was answered %q, want cancel", got)
	}
}

// A response head with more headers than the room a message chunk leaves
// them still goes out: its first part of the body is smaller.
func TestLargeHeadWithLargeBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "bighead"}))
	header := strings.Repeat("h", 70<<10)
	body := randomBytes(2<<20, 5)
	e.serve(t, "bighead", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Large", header)
		_, _ = w.Write(body)
	}))
	resp, err := http.Get(e.hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Large") != header || digest(got) != digest(body) {
		t.Errorf("status %d, header of %d bytes, body of %d bytes: want 200 and both whole", resp.StatusCode, len(resp.Header.Get("X-Large")), len(got))
	}
}

// TestReplyHeaderCases checks that a responder that spells one header name
// in several cases (NATS keeps them apart) has every value of it reach the
// client, in the head and in the trailers.
func TestReplyHeaderCases(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "cases"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("cases", func(m *nats.Msg) {
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}, "set-cookie": {"a=1"}, "Set-Cookie": {"b=2"}, "SET-COOKIE": {"c=3"}}, Data: []byte("a")})
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "x-sum": {"1"}, "X-Sum": {"2"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cookies := resp.Header.Values("Set-Cookie")
	slices.Sort(cookies)
	sums := resp.Trailer.Values("X-Sum")
	slices.Sort(sums)
	if strings.Join(cookies, " ") != "a=1 b=2 c=3" || strings.Join(sums, " ") != "1 2" {
		t.Errorf("Set-Cookie %q, trailer X-Sum %q: want every value of every spelling", cookies, sums)
	}
}

// TestAmbiguousProtocolHeaders has a raw responder give Narun-Status under
// two spellings, as one whose headers are case-sensitive may: two
// different values make a malformed reply, every time, rather than
// whichever value the gateway happened to read first; the same value
// twice is that value.
func TestAmbiguousProtocolHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "ambiguous"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("ambiguous", func(m *nats.Msg) {
		h := nats.Header{"Narun-Status": {"200"}, "narun-status": {"404"}}
		if m.Header.Get("Narun-Path") == "/same" {
			h = nats.Header{"Narun-Status": {"201"}, "NARUN-STATUS": {"201"}}
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: h, Data: []byte("body")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Map order is random: 20 tries see both orders but once in 2^19.
	codes := map[int]int{}
	for range 20 {
		code, _ := get(t, e.hs.URL+"/two")
		codes[code]++
	}
	if codes[http.StatusBadGateway] != 20 {
		t.Errorf("Narun-Status 200 and narun-status 404 gave %v, want 502 every time", codes)
	}
	if code, body := get(t, e.hs.URL+"/same"); code != 201 || body != "body" {
		t.Errorf("Narun-Status 201 under two spellings gave %d %q, want 201", code, body)
	}
}

// TestForbiddenTrailersDropped has a raw responder end its stream with
// fields HTTP forbids in trailers (RFC 9110 6.5.1: framing, routing,
// authentication, caching, content processing) besides one it allows. Over
// HTTP/2 net/http drops them; over HTTP/1.1 it sends every trailer it is
// given, and a client or proxy that merges trailers into the header section
// would take a Content-Length or Host from the service's last frame.
func TestForbiddenTrailersDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "badtrailers"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("badtrailers", func(m *nats.Msg) {
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}, "Trailer": {"X-Sum"}}, Data: []byte("body")})
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "X-Sum": {"1"},
			"Content-Length": {"99"}, "Host": {"evil.example"}, "Authorization": {"Basic eDp5"}, "Cache-Control": {"public"},
			"Content-Type": {"text/html"}, "Content-Encoding": {"gzip"}, "Www-Authenticate": {"Basic"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(e.hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	// The trailer section follows the last chunk.
	_, trailers, ok := strings.Cut(string(raw), "\r\n0\r\n")
	if !ok || !strings.Contains(trailers, "X-Sum: 1\r\n") {
		t.Fatalf("no trailer section with X-Sum in:\n%s", raw)
	}
	for name := range forbiddenTrailers {
		if strings.Contains(strings.ToLower(trailers), "\n"+strings.ToLower(name)+":") || strings.HasPrefix(strings.ToLower(trailers), strings.ToLower(name)+":") {
			t.Errorf("trailer %s sent over HTTP/1.1:\n%s", name, trailers)
		}
	}
}

// TestTrailerAnnounced checks that a streamed response's Trailer header
// reaches the client (RFC 9110 6.6.2: it is not hop-by-hop), so that a
// client learns before the body which trailers may follow; from a Go
// handler over HTTP/1.1 and HTTP/2, and from a raw responder, whose names
// the gateway would not send as trailers are left out of it, as is the
// whole header where no trailer can follow.
func TestTrailerAnnounced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/go", Service: "gotrailers"}, config.Route{Path: "/raw/", Service: "rawtrailers"}))
	e.serve(t, "gotrailers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Sum", "4")
	}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("rawtrailers", func(m *nats.Msg) {
		head := nats.Header{"trailer": {"x-sum, Narun-Status, X-Request-Id", "Transfer-Encoding,Content-Length, X-Head, X-Private, X Bad"},
			"X-Head": {"in the head"}, "Connection": {"X-Private"}}
		switch m.Header.Get("Narun-Path") {
		case "/raw/whole":
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte("body")})
			return
		case "/raw/length":
			head.Set("Content-Length", "4")
		}
		head.Set("Narun-Body", "stream")
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head})
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "X-Sum": {"4"}}, Data: []byte("body")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		rt        http.RoundTripper
		path      string
		announced string // the keys of resp.Trailer before the body is read
		sum       string // the X-Sum trailer
	}{
		{"Go handler, HTTP/1.1", http.DefaultTransport, "/go", "X-Sum", "4"},
		{"Go handler, HTTP/2", h2cClient(t, e), "/go", "X-Sum", "4"},
		{"raw responder", http.DefaultTransport, "/raw/stream", "X-Sum", "4"},
		{"raw responder, whole reply", http.DefaultTransport, "/raw/whole", "", ""},
		{"raw responder, Content-Length over HTTP/1.1", http.DefaultTransport, "/raw/length", "", ""},
	} {
		req, _ := http.NewRequest("GET", e.hs.URL+tc.path, nil)
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		announced := slices.Sorted(maps.Keys(resp.Trailer))
		header := resp.Header.Values("Trailer")
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "body" {
			t.Errorf("%s: body %q, %v", tc.name, body, err)
		}
		if got := strings.Join(announced, ", "); got != tc.announced || len(header) != 0 {
			t.Errorf("%s: announced trailers %q (Trailer header left %q), want %q", tc.name, got, header, tc.announced)
		}
		if got := resp.Trailer.Get("X-Sum"); got != tc.sum {
			t.Errorf("%s: trailer X-Sum %q, want %q", tc.name, got, tc.sum)
		}
	}
}

// TestInterimResponses checks that a 103 Early Hints a Go handler writes
// before its response reaches the client, over HTTP/1.1 and HTTP/2, with
// the headers set so far, which stay in the final response as net/http
// keeps them; and that the gateway drops the interim frames of a raw
// responder that it must not relay (100, 101, a bad status, one after
// the head), and every one to an HTTP/1.0 client.
func TestInterimResponses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/go", Service: "hints"}, config.Route{Path: "/raw", Service: "rawhints"}))
	const link = "</style.css>; rel=preload; as=style"
	e.serve(t, "hints", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", link)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "final")
	}))
	nc := natsConn(t, e)
	interim := func(reply, status string) {
		_ = nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{"Narun-Frame": {"interim"}, "Narun-Status": {status}, "Link": {link}}})
	}
	_, err := nc.Subscribe("rawhints", func(m *nats.Msg) {
		for _, status := range []string{"100", "101", "200", "abc", "103"} {
			interim(m.Reply, status)
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Body": {"stream"}}, Data: []byte("fi")})
		interim(m.Reply, "104")
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}}, Data: []byte("nal")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
		path string
	}{
		{"Go handler, HTTP/1.1", http.DefaultTransport, "/go"},
		{"Go handler, HTTP/2", h2cClient(t, e), "/go"},
		{"raw responder", http.DefaultTransport, "/raw"},
	} {
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.hs.URL+tc.path, nil)
		resp, err := tc.rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "103 " + link; len(got) != 1 || got[0] != want {
			t.Errorf("%s: interim responses %q, want one %q", tc.name, got, want)
		}
		if resp.StatusCode != 200 || string(body) != "final" {
			t.Errorf("%s: final response %d %q, want 200 \"final\"", tc.name, resp.StatusCode, body)
		}
		if tc.path == "/go" && resp.Header.Get("Link") != link {
			t.Errorf("%s: final response's Link %q, want the one the hints had", tc.name, resp.Header.Get("Link"))
		}
	}

	if resp, _ := rawExchange(t, e, "GET /go HTTP/1.0\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("HTTP/1.0 client: first response %d, want the final 200: no interim response to HTTP/1.0", resp.StatusCode)
	}
}

// TestRequestWithoutHost checks that an HTTP/1.0 request without Host
// reaches the service with no host at all: not an empty X-Forwarded-Host
// or Narun-Host, and not the one the client sent.
func TestRequestWithoutHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/nohost", Service: "nohost"}))
	nc := natsConn(t, e)
	heads := make(chan nats.Header, 1)
	_, err := nc.Subscribe("nohost", func(m *nats.Msg) {
		heads <- m.Header
		_ = m.Respond([]byte("ok"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if resp, _ := rawExchange(t, e, "GET /nohost HTTP/1.0\r\nX-Forwarded-Host: chosen.example\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	h := <-heads
	for _, k := range []string{"X-Forwarded-Host", "Narun-Host"} {
		if v, ok := h[k]; ok {
			t.Errorf("%s %q sent for a request without Host, want none", k, v)
		}
	}
}

// TestStreamedHeadBadLength checks that a streamed head whose
// Content-Length is no single number (two values, from one spelling or
// two, or not a number) is sent without it, its body chunked, rather than
// as a response no client can read.
func TestStreamedHeadBadLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "badlength"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("badlength", func(m *nats.Msg) {
		head := nats.Header{"Narun-Body": {"stream"}}
		switch m.Header.Get("Narun-Path") {
		case "/two":
			head["Content-Length"] = []string{"4", "5"}
		case "/spellings":
			head["Content-Length"] = []string{"4"}
			head["content-length"] = []string{"5"}
		case "/nan":
			head["Content-Length"] = []string{"4a"}
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte("bo")})
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}}, Data: []byte("dy")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/two", "/spellings", "/nan"} {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "body" || resp.ContentLength != -1 {
			t.Errorf("%s: body %q (%v), length %d; want \"body\" chunked", path, body, err, resp.ContentLength)
		}
	}
}

// TestStreamedBodyShortOfItsLength has a raw responder stream a head with
// Content-Length and a body that does not reach it, ending early or with a
// frame that would pass it: the client must get an aborted response, over
// HTTP/2 a reset stream rather than one ended as if it were whole (RFC 9113
// 8.1.1). A body that reached its length is whole, whatever follows it.
func TestStreamedBodyShortOfItsLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "short"}))
	nc := natsConn(t, e)
	answers := make(chan string, 8)
	_, err := nc.Subscribe("short", func(m *nats.Msg) {
		path := m.Header.Get("Narun-Path")
		head := nats.Header{"Narun-Body": {"stream"}, "Content-Length": {"10"}}
		first, frame := "ab", "cde"
		switch path {
		case "/long":
			frame = "cdefghijklmn"
		case "/whole":
			first, frame = "abcdefghij", "k"
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte(first)})
		if path == "/short" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}}, Data: []byte(frame)})
			return
		}
		go func() {
			a, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte(frame)}, 10*time.Second)
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- a.Header.Get("Narun-Frame")
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h2 := startH2C(t, e)
	for _, path := range []string{"/short", "/long"} {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("HTTP/1.1 %s: body %q, read error %v; want an incomplete response", path, body, err)
		}
		if path == "/long" {
			if a := <-answers; a != "cancel" {
				t.Errorf("HTTP/1.1 %s: the frame past the length answered with %q, want cancel", path, a)
			}
		}
		if got := h2Ending(t, h2.URL, path); got != "reset" {
			t.Errorf("HTTP/2 %s: stream ended with %s, want reset: the body is short of its Content-Length", path, got)
		}
		if path == "/long" {
			<-answers
		}
	}
	if got := h2Ending(t, h2.URL, "/whole"); got != "end after 10 bytes" {
		t.Errorf("HTTP/2 /whole: stream ended with %s, want end after the declared 10 bytes", got)
	}
}

// TestStreamedHeadPastItsLength has a raw responder stream a head whose own
// payload passes its Content-Length, alone or with a data frame after it:
// the reply is malformed from its head on, so the gateway must abort the
// response, cancel the exchange and count it as malformed then, as for a
// frame that would pass the length, not wait for a frame that may never
// come (the route's timeout) nor take the failed write of a later one for
// a client gone (HTTP/2).
func TestStreamedHeadPastItsLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "past"}))
	nc := natsConn(t, e)
	cancels, err := nc.SubscribeSync(consumer.CancelSubject("past"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe("past", func(m *nats.Msg) {
		head := nats.Header{"Narun-Body": {"stream"}, "Content-Length": {"1"}}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte("ab")})
		if m.Header.Get("Narun-Path") == "/then-data" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Reply: nats.NewInbox(), Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte("c")})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// A new connection each time: Go's client sends a GET again when a
	// reused connection closes without an answer.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	h2 := startH2C(t, e)
	paths := []string{"/alone", "/then-data"}
	for _, path := range paths {
		resp, err := client.Get(e.hs.URL + path)
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("HTTP/1.1 %s: %d, body %q; want an aborted response", path, resp.StatusCode, body)
			}
		}
		if got := h2Ending(t, h2.URL, path); got != "reset" {
			t.Errorf("HTTP/2 %s: stream ended with %s, want reset: the head passes its Content-Length", path, got)
		}
	}
	e.settled(t, nc)
	want := 2 * len(paths)
	if n, _, _ := cancels.Pending(); n != want {
		t.Errorf("%d cancels published, want %d", n, want)
	}
	for o, name := range outcomeNames {
		n := e.gw.metrics.outcomes[o].Load()
		if o == outcomeMalformed && n != uint64(want) || o != outcomeMalformed && n != 0 {
			t.Errorf("%d exchanges counted as %s, want %d malformed and no other", n, name, want)
		}
	}
}

// h2Ending sends GET path over HTTP/2 with prior knowledge and tells how
// the server ends the response's stream: with END_STREAM, and after how
// many bytes of body, or reset. Go's client checks the length itself,
// which hides the difference.
func h2Ending(t *testing.T, base, path string) string {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := readH2Settings(c); err != nil {
		t.Fatal(err)
	}
	// HPACK, without Huffman coding: :method GET, :scheme http (indexed),
	// :path and :authority (literal, indexed names).
	block := []byte{0x82, 0x86, 0x44, byte(len(path))}
	block = append(block, path...)
	block = append(block, 0x41, byte(len(host)))
	block = append(block, host...)
	const endStream, endHeaders = 0x1, 0x4
	frame := []byte{0, 0, byte(len(block)), 0x1, endStream | endHeaders, 0, 0, 0, 1}
	if _, err := c.Write(append(frame, block...)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		var head [9]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return "connection closed: " + err.Error()
		}
		payload := make([]byte, int(head[0])<<16|int(head[1])<<8|int(head[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return "connection closed: " + err.Error()
		}
		if binary.BigEndian.Uint32(head[5:])&math.MaxInt32 != 1 {
			continue
		}
		switch typ, flags := head[3], head[4]; {
		case typ == 0x3:
			return "reset"
		case typ == 0x0:
			n += len(payload)
			if flags&endStream != 0 {
				return "end after " + strconv.Itoa(n) + " bytes"
			}
		case typ == 0x1 && flags&endStream != 0:
			return "end after " + strconv.Itoa(n) + " bytes"
		}
	}
}

// TestNoContentLengthWithoutBody checks that a 204 or 304 whose responder
// set Content-Length (HTTP allows a 304 the length GET would get) goes
// out without it, over HTTP/2 as net/http's HTTP/1 server sends it: there
// its client would wait for a body that never comes.
func TestNoContentLengthWithoutBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "nobody"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("nobody", func(m *nats.Msg) {
		status, stream, _ := strings.Cut(strings.TrimPrefix(m.Header.Get("Narun-Path"), "/"), "/")
		head := nats.Header{"Narun-Status": {status}, "Content-Length": {"12345"}}
		if stream == "" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head, Data: []byte("body")})
			return
		}
		head.Set("Narun-Body", "stream")
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: head})
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h2 := h2cClient(t, e)
	for _, rt := range []http.RoundTripper{http.DefaultTransport, h2} {
		for _, path := range []string{"/204", "/304", "/204/stream", "/304/stream"} {
			req, _ := http.NewRequest("GET", e.hs.URL+path, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cl := resp.Header.Values("Content-Length"); len(cl) != 0 || err != nil || len(body) != 0 || strconv.Itoa(resp.StatusCode) != path[1:4] {
				t.Errorf("%s %s: %d, Content-Length %q, body %q (%v); want no length, no body", resp.Proto, path, resp.StatusCode, cl, body, err)
			}
		}
	}
}

// TestDataAfterBodilessStatus has a raw responder stream a 204 or 304 as
// it streams any response, head, data frames and end: the client gets the
// status without a body, and the responder acks for its frames and no
// cancel, since nothing went wrong.
func TestDataAfterBodilessStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "bodiless"}))
	nc := natsConn(t, e)
	cancels, err := nc.SubscribeSync("_NARUN.cancel.bodiless")
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan []string, 1)
	_, err = nc.Subscribe("bodiless", func(m *nats.Msg) {
		status := strings.TrimPrefix(m.Header.Get("Narun-Path"), "/")
		go func() {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Status": {status}, "Narun-Body": {"stream"}}, Data: []byte("head part")})
			var got []string
			for i := range 3 {
				a, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"data"}}, Data: []byte("part " + strconv.Itoa(i))}, 10*time.Second)
				if err != nil {
					got = append(got, err.Error())
					break
				}
				got = append(got, a.Header.Get("Narun-Frame"))
			}
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"end"}, "X-Sum": {"1"}}, Data: []byte("last part")})
			answers <- got
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h2 := h2cClient(t, e)
	// Not http.DefaultTransport: a parallel test's httptest.Server.Close
	// closes its idle connections, this one's too while the exchange
	// still streams its frames, and the gateway then cancels it.
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	for _, rt := range []http.RoundTripper{h1, h2} {
		for _, status := range []string{"204", "304"} {
			req, _ := http.NewRequest("GET", e.hs.URL+"/"+status, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: %v", status, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strconv.Itoa(resp.StatusCode) != status || len(body) != 0 || err != nil || len(resp.Trailer) != 0 {
				t.Errorf("%s %s: %d, body %q (%v), trailers %v; want the status alone", resp.Proto, status, resp.StatusCode, body, err, resp.Trailer)
			}
			if got := <-answers; !slices.Equal(got, []string{"ack", "ack", "ack"}) {
				t.Errorf("%s %s: data frames answered %q, want three acks", resp.Proto, status, got)
			}
		}
	}
	e.settled(t, nc)
	if n, _, _ := cancels.Pending(); n != 0 {
		t.Errorf("%d cancels published for responses that ended cleanly", n)
	}
	if n := e.gw.metrics.outcomes[outcomeCancelled].Load(); n != 0 {
		t.Errorf("%d exchanges counted as cancelled, want none", n)
	}
}

// TestBodilessHeadClientGone has a raw responder stream a 204 head and not
// yet its end frame, to a client that closes its connection once it has the
// response, as any HTTP/1.1 client without keep-alive does: the client went
// away after its whole response, not before, so the request counts as the
// 204 it got, not as a 499 of a client gone first.
func TestBodilessHeadClientGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "bodilessgone"}))
	nc := natsConn(t, e)
	cancels, err := nc.SubscribeSync("_NARUN.cancel.bodilessgone")
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe("bodilessgone", func(m *nats.Msg) {
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Status": {"204"}, "Narun-Body": {"stream"}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(e.gw.adminHandler())
	t.Cleanup(admin.Close)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(e.hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d, want 204", resp.StatusCode)
	}
	// The service still hears that nobody reads on.
	if _, err := cancels.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no cancel once the client left: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "no request in flight", func() bool {
		return e.gw.metrics.inflight.Load() == 0
	})
	_, m := get(t, admin.URL+"/metrics")
	if !strings.Contains(m, `narun_gateway_requests_total{route="/",code="204"} 1`) || strings.Contains(m, `code="499"`) {
		t.Errorf("a 204 the client got whole is not counted as 204:\n%s", m)
	}
}

// TestManyInterimResponses has a raw responder send many interim frames
// before its head, faster than the gateway relays them: the first
// maxInterim reach the client, in order, the others are dropped, and the
// response itself goes out as ever.
func TestManyInterimResponses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "manyhints"}))
	nc := natsConn(t, e)
	_, err := nc.Subscribe("manyhints", func(m *nats.Msg) {
		for i := range 40 {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"interim"}, "Narun-Status": {"103"}, "Link": {fmt.Sprintf("</%d.css>; rel=preload", i)}}})
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Data: []byte("final")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range maxInterim {
		want = append(want, fmt.Sprintf("</%d.css>; rel=preload", i))
	}
	h2 := h2cClient(t, e)
	for _, rt := range []http.RoundTripper{http.DefaultTransport, h2} {
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, h.Get("Link"))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.hs.URL+"/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "final" {
			t.Errorf("%s: final response %d %q, want 200 \"final\"", resp.Proto, resp.StatusCode, body)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: interim responses %q, want the first %d: %q", resp.Proto, got, maxInterim, want)
		}
	}
}

// A chunked request leaves no second request behind on its connection,
// which the gateway closes after the response:
//   - HTTP/1.0 has no chunked coding: net/http drops the Transfer-Encoding
//     of an HTTP/1.0 request and reads its body by Content-Length or as
//     none, so the rest of a chunked body would be read as the next
//     request, one whatever sent the first may not have meant to send.
//     RFC 9112 6.1 has the connection closed, "even if a Content-Length
//     is present".
//   - An HTTP/1.1 request with both Content-Length and chunked is read as
//     chunked, and net/http drops the length unseen: an intermediary in
//     front that went by the length took what follows the chunked body
//     for the body, not for a request (RFC 9112 6.3).
func TestChunkedRequestLeavesNoSecondRequest(t *testing.T) {
	t.Parallel()
	const smuggled10 = "GET /smuggled HTTP/1.0\r\nHost: a\r\n\r\n"
	const smuggled11 = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	const head = "POST /upload HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
	for name, request := range map[string]string{
		"HTTP/1.0 no length":   head + "\r\n" + smuggled10,
		"HTTP/1.0 with length": head + "Content-Length: 4\r\n\r\n" + fmt.Sprintf("%2x\r\n", len(smuggled10)) + smuggled10 + "\r\n0\r\n\r\n",
		"HTTP/1.1 with length": "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len("0\r\n\r\n")+len(smuggled11)) +
			"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled11,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "paths"}))
			nc := natsConn(t, e)
			paths := make(chan string, 2)
			if _, err := nc.Subscribe("paths", func(m *nats.Msg) {
				paths <- m.Header.Get("Narun-Path")
				_ = m.Respond([]byte("ok"))
			}); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			c := sendRaw(t, e, request)
			all, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the responses (the connection should close): %v", err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			for {
				select {
				case p := <-paths:
					if p != "/upload" {
						t.Errorf("the service got a request for %s, want only /upload; responses:\n%s", p, all)
					}
				default:
					return
				}
			}
		})
	}
}

// TestAsteriskFormOnlyForOptions checks that a request-target of "*" with
// another method than OPTIONS, which HTTP allows for OPTIONS alone (RFC
// 9112 3.2.4), gets 400 rather than reaching a service as a request for
// "/*", as net/http's ServeMux answers it.
func TestAsteriskFormOnlyForOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "star"}))
	nc := natsConn(t, e)
	paths := make(chan string, 4)
	if _, err := nc.Subscribe("star", func(m *nats.Msg) {
		paths <- m.Header.Get("Narun-Method") + " " + m.Header.Get("Narun-Path")
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"GET", "POST", "DELETE"} {
		resp, body := rawExchange(t, e, method+" * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s *: status %d %q, want 400", method, resp.StatusCode, body)
		}
	}
	if resp, _ := rawExchange(t, e, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Errorf("OPTIONS *: status %d, want 200", resp.StatusCode)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-paths:
		t.Errorf("the service got %s", p)
	default:
	}
}

// TestChunkedRequestClosesAfterInterim checks that a chunked HTTP/1.1
// request still closes its connection after the response when the service
// sent an interim response (103) first: the interim must not take away the
// Connection: close that keeps what follows a chunked body that also had a
// Content-Length from being served as a request of its own.
func TestChunkedRequestClosesAfterInterim(t *testing.T) {
	t.Parallel()
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	request := "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len("0\r\n\r\n")+len(smuggled)) +
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "hinted"}))
	nc := natsConn(t, e)
	paths := make(chan string, 2)
	errs := make(chan error, 2)
	if _, err := nc.Subscribe("hinted", func(m *nats.Msg) {
		paths <- m.Header.Get("Narun-Path")
		go func() {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"interim"}, "Narun-Status": {"103"}, "Link": {"</a.css>; rel=preload"}}})
			if m.Header.Get("Narun-Body") == "stream" {
				for {
					chunk, err := nc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Narun-Frame": {"pull"}}}, 10*time.Second)
					if err != nil {
						errs <- fmt.Errorf("pull: %w", err)
						return
					}
					if chunk.Header.Get("Narun-Frame") != "data" {
						break
					}
				}
			}
			errs <- m.Respond([]byte("ok"))
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := sendRaw(t, e, request)
	read := make(chan error, 1)
	var all []byte
	go func() {
		var err error
		all, err = io.ReadAll(c)
		read <- err
	}()
	for {
		select {
		case p := <-paths:
			if p != "/upload" {
				t.Fatalf("the service got a request for %s, the rest of a chunked body: the connection stayed open after the response", p)
			}
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		case err := <-read:
			if err != nil {
				t.Fatalf("reading the responses (the connection should close): %v", err)
			}
			if !bytes.Contains(all, []byte("\r\n\r\nok")) {
				t.Errorf("responses %q, want the service's ok", all)
			}
			return
		}
	}
}

// TestEarlyAnswerSaysClose sends the head of a large upload and part of
// its body to a service that answers before pulling any more of it, as a
// service does that refuses the upload (413, 401): the gateway does not
// read the rest, and net/http closes the connection after the answer, so
// the answer must say Connection: close, or a client that reads it takes
// the connection for one it can send its next request on. A service that
// reads the whole body keeps the connection.
func TestEarlyAnswerSaysClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Path: "/nats/", Service: "refuses"},
		config.Route{Path: "/go/", Service: "refusesgo"},
		config.Route{Path: "/reads/", Service: "reads"},
	))
	answerAs(t, natsConn(t, e), "refuses")
	e.serve(t, "refusesgo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	e.serve(t, "reads", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	for _, c := range []struct {
		path      string
		length    int
		sent      int
		wantClose bool
	}{
		{"/nats/", 64 << 20, 2 << 20, true},
		{"/go/", 64 << 20, 2 << 20, true},
		{"/reads/", 4 << 20, 4 << 20, false},
	} {
		conn := sendRaw(t, e, "POST "+c.path+" HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(c.length)+"\r\n\r\n"+strings.Repeat("x", c.sent))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", c.path, err)
		}
		resp.Body.Close()
		if resp.Close != c.wantClose {
			t.Errorf("%s: answer %d after %d bytes of %d has Connection %q, want close %v", c.path, resp.StatusCode, c.sent, c.length, resp.Header["Connection"], c.wantClose)
		}
	}
}
