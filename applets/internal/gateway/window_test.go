package gateway

import (
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// TestWindowsShareTheBodyMemory holds requests at a responder that reads
// each one's window: together they stay within max_body_memory, but for
// the least window each is given, and the windows come back once their
// exchanges end.
func TestWindowsShareTheBodyMemory(t *testing.T) {
	const budget, held = 6 << 20, 12
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)})
	cfg.MaxBodyMemory = budget
	e := newEnv(t, cfg)
	svc, heads := heldHeads(t, e, held+1)
	var wg sync.WaitGroup
	for range held {
		wg.Go(func() {
			resp, err := http.Get(e.hs.URL + "/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	window := func(m *nats.Msg) int {
		t.Helper()
		v := m.Header.Get(consumer.HeaderWindow)
		if v == "" {
			return maxWindow
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: %v", consumer.HeaderWindow, err)
		}
		if n < minWindow || n > maxWindow {
			t.Errorf("a window of %d bytes, want from %d to %d", n, minWindow, maxWindow)
		}
		return n
	}
	var got []*nats.Msg
	total := 0
	for range held {
		select {
		case m := <-heads:
			got = append(got, m)
			if n := window(m); n > minWindow {
				total += n
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d requests reached the responder", len(got), held)
		}
	}
	if total > budget {
		t.Errorf("the windows above the least one take %d bytes together, more than max_body_memory (%d)", total, budget)
	}
	for _, m := range got {
		if err := m.Respond(nil); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	e.settled(t, svc)
	go func() {
		resp, err := http.Get(e.hs.URL + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case m := <-heads:
		if n := window(m); n != maxWindow {
			t.Errorf("a request alone got a window of %d bytes, want %d", n, maxWindow)
		}
		_ = m.Respond(nil)
	case <-time.After(10 * time.Second):
		t.Fatal("the last request did not reach the responder")
	}
}

// TestMuxRefusesFramesPastTheWindow delivers data frames to an exchange as
// a responder that ignores its window would send them: within the window
// they queue, and the frame that would pass it marks the exchange as
// broken; the body of a frame handled (and acked) leaves room again.
func TestMuxRefusesFramesPastTheWindow(t *testing.T) {
	srv := natstest.Start(t)
	m, err := newInboxMux(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	const window = 100 << 10
	w := m.open(window)
	defer m.release(w)
	frame := func(size int, reply string) *nats.Msg {
		return &nats.Msg{Subject: w.reply, Reply: reply, Data: make([]byte, size), Header: nats.Header{consumer.HeaderFrame: {consumer.FrameData}}}
	}
	m.deliver(&nats.Msg{Subject: w.reply, Data: make([]byte, 900<<10), Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}})
	m.deliver(frame(60<<10, "ack.1"))
	m.deliver(frame(80<<10, ""))
	m.deliver(frame(40<<10, "ack.2"))
	if w.overflow.Load() {
		t.Fatal("a head, a frame without a reply subject and 100 KiB of frames to ack passed the window of 100 KiB")
	}
	<-w.ch
	handled := <-w.ch
	w.acked(handled)
	m.deliver(frame(60<<10, "ack.3"))
	if w.overflow.Load() {
		t.Fatal("the window had room again once the first frame was handled")
	}
	m.deliver(frame(1, "ack.4"))
	if !w.overflow.Load() {
		t.Fatal("a frame that passes the window was not refused")
	}
}

// TestFramePastTheWindowAnswered streams to a request with the least
// window a first data frame larger than it: the gateway aborts the
// response, and the frame that broke the window is answered with cancel,
// as every other frame it does not write is, so a service waiting for its
// ack learns at once that nobody reads on (docs/PROTOCOL.md §3).
func TestFramePastTheWindowAnswered(t *testing.T) {
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)}))
	// No budget: every request gets the least window.
	e.gw.windows = &windowBudget{}
	svc, heads := heldHeads(t, e, 1)
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(e.hs.URL + "/")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	var head *nats.Msg
	select {
	case head = <-heads:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the responder")
	}
	if got := head.Header.Get(consumer.HeaderWindow); got != strconv.Itoa(minWindow) {
		t.Fatalf("%s: %q, want %d", consumer.HeaderWindow, got, minWindow)
	}
	if err := svc.PublishMsg(&nats.Msg{Subject: head.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}}); err != nil {
		t.Fatal(err)
	}
	answer, err := svc.RequestMsg(&nats.Msg{Subject: head.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameData}}, Data: make([]byte, 2*minWindow)}, 10*time.Second)
	if err != nil {
		t.Fatalf("a frame past the window: %v", err)
	}
	if got := answer.Header.Get(consumer.HeaderFrame); got != consumer.FrameCancel {
		t.Errorf("a frame past the window answered with %q, want %q", got, consumer.FrameCancel)
	}
	if err := <-done; err == nil {
		t.Error("the client got a whole response from a stream that broke its window")
	}
}

// TestMuxKeepsNoLaterMessageAlive holds a message in one exchange, as a
// client that does not read leaves its frames queued, while the messages
// that came after it on the subscription pass through another exchange:
// nats.go leaves each message it delivered linked to the next one that was
// queued behind it, so the held message must not be the one nats.go
// delivered, or it keeps all of them alive. 300 clients that read nothing
// kept 150 MB of other responses' frames in `narun up` so.
func TestMuxKeepsNoLaterMessageAlive(t *testing.T) {
	const later = 8
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	m, err := newInboxMux(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	held, passing := m.open(maxWindow), m.open(maxWindow)
	defer m.release(held)
	defer m.release(passing)
	// With the mux locked, deliver waits on the first message, and the
	// others queue behind it in the subscription, linked one to the next.
	m.mu.Lock()
	send := func(w *waiter) {
		if err := nc.Publish(w.reply, make([]byte, 16<<10)); err != nil {
			t.Fatal(err)
		}
	}
	send(passing)
	send(held)
	for range later {
		send(passing)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _, err := m.sub.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if n == later+2 {
			break
		}
		if time.Now().After(deadline) {
			m.mu.Unlock()
			t.Fatalf("%d of %d messages queued in the subscription", n, later+2)
		}
		runtime.Gosched()
	}
	m.mu.Unlock()
	<-passing.ch
	gone := make([]weak.Pointer[byte], later)
	for i := range gone {
		gone[i] = weak.Make(&(<-passing.ch).Data[0])
	}
	runtime.GC()
	runtime.GC()
	alive := 0
	for _, p := range gone {
		if p.Value() != nil {
			alive++
		}
	}
	if alive > 0 {
		t.Errorf("a message held in one exchange keeps %d of the %d messages that came after it alive", alive, later)
	}
	if len(held.ch) != 1 {
		t.Fatalf("the held exchange has %d messages, want 1", len(held.ch))
	}
}

// heldHeads subscribes a responder of the test's own to e's service
// subject "svc": the request heads arrive on the channel, n of them
// buffered, for the test to answer on the connection it returns.
func heldHeads(t *testing.T, e *env, n int) (*nats.Conn, chan *nats.Msg) {
	t.Helper()
	svc := natstest.Connect(t, e.srv)
	heads := make(chan *nats.Msg, n)
	sub, err := svc.ChanSubscribe("svc", heads)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	return svc, heads
}
