package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// relay carries one NATS client connection to a server, and holds what
// the client sends once told to, as a slow or congested link does: those
// bytes have left the client but not reached the server. It lets them
// through with the client's next PING, whose PONG no client can have
// before the server has everything sent ahead of it.
type relay struct {
	addr string

	mu sync.Mutex
	// pings counts the client's PINGs passed on, pongs the server's.
	pings, pongs int
	holding      bool
	held         []byte
	// dropping loses what the client sends, as a link that went dead
	// without a word does.
	dropping bool
	// heldAtEnd is what was held when the client closed its side;
	// ended is closed then.
	heldAtEnd int
	ended     chan struct{}
}

func startRelay(t *testing.T, server string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &relay{addr: ln.Addr().String(), ended: make(chan struct{})}
	go func() {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		defer client.Close()
		srv, err := net.Dial("tcp", server)
		if err != nil {
			t.Errorf("relay: dial %s: %v", server, err)
			return
		}
		defer srv.Close()
		go r.back(client, srv)
		r.forth(client, srv)
	}()
	return r
}

// forth passes the client's bytes to the server, unless held.
func (r *relay) forth(client, srv net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		r.mu.Lock()
		out := buf[:n]
		if r.dropping {
			out = nil
		}
		if r.holding {
			r.held = append(r.held, out...)
			out = nil
			if bytes.Contains(r.held, []byte("PING\r\n")) {
				out, r.held, r.holding = r.held, nil, false
			}
		}
		if err != nil {
			// Sent before the end, it still reaches the server.
			r.heldAtEnd = len(r.held)
			out, r.held = append(out, r.held...), nil
			close(r.ended)
		}
		r.pings += bytes.Count(out, []byte("PING\r\n"))
		r.mu.Unlock()
		if _, werr := srv.Write(out); werr != nil || err != nil {
			// Let the server see the end too.
			_ = srv.(*net.TCPConn).CloseWrite()
			return
		}
	}
}

// back passes the server's bytes to the client.
func (r *relay) back(client, srv net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := srv.Read(buf)
		r.mu.Lock()
		r.pongs += bytes.Count(buf[:n], []byte("PONG\r\n"))
		r.mu.Unlock()
		if _, werr := client.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

func (r *relay) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holding = true
}

func (r *relay) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropping = true
}

// answered counts the client's PINGs passed on, if the server answered
// them all.
func (r *relay) answered() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pings, r.pings == r.pongs
}

// serveHeld runs ListenAndServe with cfg in a goroutine, its handler
// holding the first request until release is closed, then answering
// body; entered is closed as the handler starts, and done gets what
// ListenAndServe returns. Later requests are answered at once: a test's
// probe for the drained subscription may still reach the handler while
// the drain is under way.
func serveHeld(ctx context.Context, cfg consumer.Config, body string) (entered, release chan struct{}, done chan error) {
	entered, release, done = make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var held atomic.Bool
	go func() {
		done <- consumer.ListenAndServe(ctx, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if held.CompareAndSwap(false, true) {
				close(entered)
				<-release
			}
			_, _ = io.WriteString(w, body)
		}))
	}()
	return entered, release, done
}

// A reply sent by a handler that outlived the drain of the service's
// subscription is still in flight when Serve returns: ListenAndServe
// must not close the connection before the server has it, as a process
// that exits then can lose it (a close with data unread resets the
// connection, dropping what the kernel had yet to send).
func TestListenAndServeStopsOnceTheServerHasTheLastReply(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	r := startRelay(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	t.Setenv("NARUN_NATS_URL", "nats://"+r.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	entered, release, done := serveHeld(ctx, consumer.Config{Name: "last"}, "last reply")
	nc := natstest.Connect(t, srv)
	waitServing(t, srv, "last")
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, err := request(nc, "last", "/")
		if err != nil {
			t.Error(err)
		}
		reply <- m
	}()
	<-entered

	// The subscription drained, and its drain's PING answered: Serve
	// waits for nothing more but the handler, whose reply then comes
	// after every PING sent so far.
	before, _ := r.answered()
	cancel()
	waitFor(t, "the request subscription drained", func() bool {
		_, err := request(nc, "last", "/")
		pings, all := r.answered()
		return errors.Is(err, nats.ErrNoResponders) && pings > before && all
	})
	r.hold()
	close(release)

	<-r.ended
	r.mu.Lock()
	held := r.heldAtEnd
	r.mu.Unlock()
	if held > 0 {
		t.Errorf("the service closed its connection with %d bytes, its last reply among them, not yet at the server", held)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe = %v, want nil", err)
	}
	if m := <-reply; m == nil || string(m.Data) != "last reply" {
		t.Errorf("last reply %+v, want it", m)
	}
}

// A reply that the server never confirmed (the link went dead under the
// last one) may be lost: ListenAndServe must say so, where it returned
// nil once nats.go gave up on the drain.
func TestListenAndServeSaysTheLastRepliesMayBeLost(t *testing.T) {
	// The dead link is given up after three pings unanswered: 8 s at the
	// library's interval.
	consumer.SetPingInterval(t, 200*time.Millisecond)
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	r := startRelay(t, strings.TrimPrefix(srv.ClientURL(), "nats://"))
	t.Setenv("NARUN_NATS_URL", "nats://"+r.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	entered, release, done := serveHeld(ctx, consumer.Config{Name: "lost"}, "lost reply")
	nc := natstest.Connect(t, srv)
	waitServing(t, srv, "lost")
	if err := nc.PublishMsg(&nats.Msg{Subject: "lost", Reply: "nobody", Header: nats.Header{consumer.HeaderPath: {"/"}}}); err != nil {
		t.Fatal(err)
	}
	<-entered
	cancel()
	waitFor(t, "the request subscription drained", func() bool {
		_, err := request(nc, "lost", "/")
		return errors.Is(err, nats.ErrNoResponders)
	})
	r.drop()
	close(release)
	if err := <-done; err == nil {
		t.Error("ListenAndServe = nil after a stop whose last reply the server never confirmed, want an error")
	}
}

// A stop while the connection waits to reconnect must not lose the replies
// the handlers gave meanwhile, which nats.go holds for the next server:
// ListenAndServe sends them once NATS is back, where it closed the
// connection, and them with it, at once.
func TestListenAndServeStopWhileReconnectingSendsHeldReplies(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: natstest.FreeAddr(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A stream keeps the reply for the test whenever it comes, with no
	// subscriber that must be back first.
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "REPLIES", Subjects: []string{"replies.>"}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NARUN_NATS_URL", srv.ClientURL())
	disconnected, waiting := make(chan struct{}, 1), make(chan struct{}, 1)
	notify := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	cfg := consumer.Config{Name: "held", ErrorHandler: func(err error) {
		switch {
		case strings.HasPrefix(err.Error(), "nats disconnected"):
			notify(disconnected)
		case strings.Contains(err.Error(), "waiting up to"):
			notify(waiting)
		}
	}}
	entered, release, done := serveHeld(ctx, cfg, "held reply")
	nc := natstest.Connect(t, srv)
	waitServing(t, srv, "held")
	if err := nc.PublishMsg(&nats.Msg{Subject: "held", Reply: "replies.1", Header: nats.Header{consumer.HeaderPath: {"/"}}}); err != nil {
		t.Fatal(err)
	}
	<-entered
	srv.NATS().Shutdown()
	<-disconnected
	cancel()
	close(release)
	select {
	case err := <-done:
		t.Fatalf("ListenAndServe returned (%v) while NATS was down, with a reply still to send", err)
	case <-waiting:
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe = %v, want nil", err)
	}
	js, err = jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), "REPLIES")
	if err != nil {
		t.Fatal(err)
	}
	// The server stores a message from its stream's queue, after the
	// flush that ended ListenAndServe has had its answer.
	var m *jetstream.RawStreamMsg
	waitFor(t, "the held reply in the stream", func() bool {
		m, err = stream.GetLastMsgForSubject(context.Background(), "replies.1")
		return err == nil
	})
	if string(m.Data) != "held reply" {
		t.Errorf("reply %q, want %q", m.Data, "held reply")
	}
}
