package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// Request bodies share max_body_memory: with room for two 512 KiB bodies,
// a third waits until one is done with, in the meantime a small request
// passes, and one that waits past its route's deadline gets 503 with
// Retry-After. Two clients that send half a head's body and stall hold
// the room while the gateway reads.
func TestBodyMemoryIsShared(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("svc"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	}))
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)},
		config.Route{Path: "/hurried", Service: "svc", Timeout: config.Duration(300 * time.Millisecond)})
	cfg.MaxBodyMemory = 1 << 20
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	base := "http://" + r.addrs["http"]
	metric := func(name string) string {
		_, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
		for line := range strings.Lines(m) {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}

	const size = 512 << 10
	body := bytes.Repeat([]byte("b"), size)
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", r.addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		if _, err := c.Write(body[:size/2]); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	testutil.Eventually(t, 10*time.Second, "both stalled bodies to hold the body memory", func() bool {
		return metric("narun_gateway_body_memory_bytes") == strconv.Itoa(1<<20)
	})

	third := make(chan string, 1)
	go func() {
		resp, err := http.Post(base+"/up", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			third <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		third <- resp.Status + " " + string(b)
	}()
	testutil.Eventually(t, 10*time.Second, "the third body to wait for room", func() bool {
		return metric("narun_gateway_body_memory_waits_total") == "1"
	})

	resp, err := http.Post(base+"/small", "text/plain", strings.NewReader("small"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "5" {
		t.Fatalf("a small request while the body memory is full: %s %q, want 200 \"5\"", resp.Status, got)
	}

	resp, err = http.Post(base+"/hurried", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a body that waited past its deadline: %s (Retry-After %q) %q, want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"), got)
	}

	select {
	case s := <-third:
		t.Fatalf("the third body was served while the room was taken: %s", s)
	default:
	}
	if _, err := stalled[0].Write(body[size/2:]); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-third:
		if want := "200 OK " + strconv.Itoa(size); s != want {
			t.Fatalf("third body: %s, want %s", s, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the third body still waits after a stalled one was done")
	}
}

// A gRPC or Connect stream takes messageBuf of the budget, not a chunk,
// and a message larger than that a chunk when there is room for it at
// once; without room, it travels in messageBuf pieces. Every byte arrives
// either way.
func TestMessageStreamStartsSmall(t *testing.T) {
	t.Parallel()
	const chunk = 256 << 10
	large := strings.Repeat("L", 200<<10)
	body := grpcMessage("hi") + grpcMessage(large) + grpcMessage("bye")
	for _, tt := range []struct {
		name   string
		budget int64
		pieces int // of the large message
		held   int64
	}{
		{name: "room to grow", budget: 1 << 20, pieces: 1, held: chunk},
		{name: "no room to grow", budget: messageBuf, pieces: 4, held: messageBuf},
	} {
		t.Run(tt.name, func(t *testing.T) {
			budget := newBodyBudget(tt.budget, nil)
			pool := &sync.Pool{New: func() any { return new([]byte) }}
			b := &bodySource{r: strings.NewReader(body), limit: 1 << 30, chunk: chunk, pool: pool, messages: true,
				budget: budget, ctx: context.Background(), deadline: time.Now().Add(time.Minute)}
			defer func() {
				b.release()
				if n := budget.held.Load(); n != 0 {
					t.Errorf("%d bytes of the budget held after release", n)
				}
			}()
			var chunks []string
			for {
				data, last, err := b.next()
				if err != nil {
					t.Fatal(err)
				}
				if last {
					break
				}
				chunks = append(chunks, string(data))
				if len(chunks) == 1 {
					if n := budget.held.Load(); n != messageBuf {
						t.Errorf("after a small message the stream holds %d bytes of the budget, want %d", n, messageBuf)
					}
				}
			}
			if n := budget.held.Load(); n != tt.held {
				t.Errorf("after the large message the stream holds %d bytes of the budget, want %d", n, tt.held)
			}
			if got := strings.Join(chunks, ""); got != body {
				t.Fatalf("the stream read %d bytes, want %d intact", len(got), len(body))
			}
			if want := 2 + tt.pieces; len(chunks) != want {
				t.Errorf("%d chunks, want %d (the large message in %d)", len(chunks), want, tt.pieces)
			}
		})
	}
}

// A body of unknown length starts in messageBuf and fills a chunk once
// that is full, if the budget has room at once; without room it goes on
// in messageBuf pieces. Every byte arrives either way, and the budget is
// whole again once the stream is done.
func TestStreamGrowsWhenThereIsRoom(t *testing.T) {
	t.Parallel()
	const chunk = 256 << 10
	data := bytes.Repeat([]byte("0123456789abcdef"), (600<<10)/16)
	for _, tt := range []struct {
		name   string
		budget int64
		first  int // bytes the first pull takes once the reader waits
	}{
		{name: "room to grow", budget: 1 << 20, first: chunk},
		{name: "no room to grow", budget: messageBuf, first: messageBuf},
	} {
		t.Run(tt.name, func(t *testing.T) {
			budget := newBodyBudget(tt.budget, nil)
			held, err := budget.take(context.Background(), time.Now().Add(time.Minute), int64(streamStart(chunk)))
			if err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			go func() {
				_, err := pw.Write(data)
				pw.CloseWithError(err)
			}()
			pool := &sync.Pool{New: func() any { return new([]byte) }}
			s := startStream(pr, 1<<30, chunk, pool, false, budget, held)
			testutil.Eventually(t, 10*time.Second, "the stream's buffer to fill", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.end == tt.first
			})
			var got []byte
			for {
				part, last, err := s.next()
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 0 && len(part) != tt.first {
					t.Errorf("first pull took %d bytes, want %d", len(part), tt.first)
				}
				got = append(got, part...)
				s.release()
				if last {
					break
				}
			}
			s.stop()
			s.done()
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, want the %d written", len(got), len(data))
			}
			testutil.Eventually(t, 10*time.Second, "the budget whole again", func() bool { return budget.held.Load() == 0 })
		})
	}
}

// A gRPC call whose body waits for memory ends when its service answers
// without pulling (an error at once, trailers only): the wait ends with
// the exchange, not at the route's deadline.
func TestDuplexCallEndsWhileItsBodyWaitsForMemory(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)})
	cfg.MaxBodyMemory = messageBuf
	e := newEnv(t, cfg)
	sub, err := e.nc.Subscribe("svc", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Narun-Status", "200")
		r.Header.Set("Content-Type", "application/grpc")
		r.Header.Set("Grpc-Status", "12")
		_ = m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	held, err := e.gw.bodies.take(context.Background(), time.Now().Add(time.Minute), messageBuf)
	if err != nil || held != messageBuf {
		t.Fatalf("take the whole budget: %d, %v", held, err)
	}
	defer e.gw.bodies.give(held)
	tr := h2cClient(t, e)
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+e.hs.Listener.Addr().String()+"/pkg.Svc/M", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the call did not end while its body waited for memory (route timeout 1m): %v", err)
	}
	if got := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status"); got != "12" {
		t.Errorf("grpc-status %q, want the service's 12", got)
	}
}

// A client that leaves while its body waits for memory is a cancelled
// request (499 in the metrics), not the gateway's 503.
func TestClientGoneWhileBodyWaitsIsCancelled(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)})
	cfg.MaxBodyMemory = messageBuf
	e := newEnv(t, cfg)
	held, err := e.gw.bodies.take(context.Background(), time.Now().Add(time.Minute), messageBuf)
	if err != nil {
		t.Fatal(err)
	}
	defer e.gw.bodies.give(held)
	tr := h2cClient(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+e.hs.Listener.Addr().String()+"/up", strings.NewReader(strings.Repeat("b", 100<<10)))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		testutil.Eventually(t, 10*time.Second, "the body waiting for memory", func() bool { return e.gw.bodies.waits.Load() > 0 })
		cancel()
	}()
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	line := countedLine(t, e, "/")
	if !strings.Contains(line, `code="499"`) {
		t.Errorf("%s; want code 499", line)
	}
}

// slowBodyEnv serves /upload by a service nobody runs, whose requests
// wait for their bodies until the test ends, and /api by one that counts
// the body, with budget bytes of body memory.
func slowBodyEnv(t *testing.T, budget int64) *env {
	t.Helper()
	cfg := gwConfig(
		config.Route{Path: "/upload", Service: "nobody", Timeout: config.Duration(time.Minute)},
		config.Route{Path: "/api", Service: "api", Timeout: config.Duration(3 * time.Second)},
	)
	cfg.MaxBodyMemory = config.Size(budget)
	e := newEnv(t, cfg)
	e.serve(t, "api", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d", n)
	}))
	return e
}

// slowBodyStarted waits until the gateway reads one more body than the
// held before, and returns what the bodies hold now.
func slowBodyStarted(t *testing.T, e *env, before int64) int64 {
	t.Helper()
	var held int64
	testutil.Eventually(t, 10*time.Second, "the gateway to read one more slow body", func() bool {
		held = e.gw.bodies.held.Load()
		return held > before
	})
	return held
}

// postAPI sends a 100 KiB body, more than the free 64 KiB, to /api and
// wants it served.
func postAPI(t *testing.T, e *env) {
	t.Helper()
	const size = 100 << 10
	resp, err := http.Post(e.hs.URL+"/api", "application/octet-stream", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "got " + strconv.Itoa(size); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("a 100 KiB upload beside slow ones: %s %q, want 200 %q", resp.Status, got, want)
	}
}

// A body of known length holds body memory for what arrived of it, not
// for its length: four clients that announce nearly a chunk each and send
// a byte hold a messageBuf each, and the bodies of others still fit.
func TestSlowBodiesHoldOnlyWhatArrived(t *testing.T) {
	t.Parallel()
	e := slowBodyEnv(t, 4<<20)
	var held int64
	for range 4 {
		c := dialRaw(t, e)
		if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 983040\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		held = slowBodyStarted(t, e, held)
	}
	if held != 4*messageBuf {
		t.Errorf("four slow bodies hold %d bytes of body memory, want %d", held, 4*messageBuf)
	}
	postAPI(t, e)
}

// So do the streams of one HTTP/2 connection, which could otherwise take
// max_body_memory whole with a byte each.
func TestSlowHTTP2StreamsHoldOnlyWhatArrived(t *testing.T) {
	t.Parallel()
	const streams = 64
	e := slowBodyEnv(t, streams<<20)
	tr := h2cClient(t, e)
	var held int64
	for range streams {
		pr, pw := io.Pipe()
		t.Cleanup(func() { _ = pw.Close() })
		req, err := http.NewRequest("POST", e.hs.URL+"/upload", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 983040
		go func() {
			if resp, err := tr.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
		}()
		if _, err := pw.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		held = slowBodyStarted(t, e, held)
	}
	if held != streams*messageBuf {
		t.Errorf("%d slow streams hold %d bytes of body memory, want %d", streams, held, streams*messageBuf)
	}
	postAPI(t, e)
}

// With no room in the budget for a body to grow into, it travels in
// messageBuf pieces, the first with the head and the rest in pulls, and
// arrives whole: a body never waits for more room while it holds some.
func TestBodyWithoutRoomToGrowArrivesInPieces(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "check", Timeout: config.Duration(time.Minute)})
	cfg.MaxBodyMemory = messageBuf + messageBuf/2
	e := newEnv(t, cfg)
	body := make([]byte, 1<<20+1)
	for i := range body {
		body[i] = byte(i % 251)
	}
	e.serve(t, "check", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(got, body[:len(got)]) {
			http.Error(w, fmt.Sprintf("%d bytes, not the body sent: %v", len(got), err), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, len(got))
	}))
	// One that fits in the head, and one larger than a chunk.
	for _, size := range []int{512 << 10, len(body)} {
		resp, err := http.Post(e.hs.URL+"/", "application/octet-stream", bytes.NewReader(body[:size]))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != strconv.Itoa(size) {
			t.Errorf("a %d-byte body with room for %d: %s %q, want 200 %q", size, messageBuf, resp.Status, got, strconv.Itoa(size))
		}
	}
	if held := e.gw.bodies.held.Load(); held != 0 {
		t.Errorf("%d bytes of body memory still held after the requests", held)
	}
}

// Requests whose bodies wait for body memory are bounded: each costs
// about 20 KB while it waits, and 4000 clients that announced a body and
// sent a byte took narun up past a 128 MiB cgroup's limit. One beyond the
// bound gets 503 with Retry-After at once, while the others still wait,
// and those are served once the memory frees.
func TestBodyWaitersAreBounded(t *testing.T) {
	t.Parallel()
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)})
	// Only the route's timeout may end the stalled body, long after the test.
	cfg.BodyIdleTimeout = config.Duration(time.Minute)
	cfg.MaxBodyMemory = messageBuf
	e := newEnv(t, cfg)
	e.serve(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	const size = 100 << 10
	head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size)
	body := make([]byte, size)
	answer := func(c net.Conn, answers chan<- string) {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answers <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers <- resp.Status + " Retry-After=" + resp.Header.Get("Retry-After") + " " + string(b)
	}

	holder := dialRaw(t, e)
	if _, err := io.WriteString(holder, head+"x"); err != nil {
		t.Fatal(err)
	}
	slowBodyStarted(t, e, 0)
	held := make(chan string, 1)
	go answer(holder, held)

	waiting := int(e.gw.bodies.maxWaiting)
	answers := make(chan string, waiting)
	for range waiting {
		c := dialRaw(t, e)
		if _, err := c.Write(append([]byte(head), body...)); err != nil {
			t.Fatal(err)
		}
		go answer(c, answers)
	}
	testutil.Eventually(t, 10*time.Second, "every request to wait for body memory", func() bool {
		return e.gw.bodies.waits.Load() == uint64(waiting)
	})

	extra := dialRaw(t, e)
	if _, err := extra.Write(append([]byte(head), body...)); err != nil {
		t.Fatal(err)
	}
	// Far short of the route's minute: a refusal comes at once.
	_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	refused := make(chan string, 1)
	answer(extra, refused)
	if got := <-refused; !strings.HasPrefix(got, "503 Service Unavailable Retry-After=1 ") || !strings.Contains(got, "request id: ") {
		t.Fatalf("a request beyond the %d waiting for body memory: %q, want 503 with Retry-After and the request id", waiting, got)
	}
	select {
	case got := <-answers:
		t.Fatalf("a waiting request was answered before the memory freed: %q", got)
	default:
	}
	var m strings.Builder
	_ = e.gw.metrics.write(&m)
	if !strings.Contains(m.String(), "\nnarun_gateway_body_memory_refused_total 1\n") {
		t.Errorf("no narun_gateway_body_memory_refused_total 1 in the metrics:\n%s", m.String())
	}

	if _, err := holder.Write(body[1:]); err != nil {
		t.Fatal(err)
	}
	want := "200 OK Retry-After= " + strconv.Itoa(size)
	for _, ch := range append([]chan string{held}, slices.Repeat([]chan string{answers}, waiting)...) {
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("a request that waited for body memory: %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the requests that waited for body memory were not all served once it freed")
		}
	}
}
