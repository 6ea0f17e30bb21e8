package consumer

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats/natstest"
)

// A write larger than a chunk goes out from the handler's slice: copied
// whole into the writer's buffer first, it held its size a second time
// until the response ended, and what was left of it was moved down after
// each chunk sent, a cost in the square of its size (1.6 GB moved for
// 10 MB under a 64 KiB max_payload). What is written before and after it
// still goes out whole and in order.
func TestLargeWriteIsNotBufferedWhole(t *testing.T) {
	srv := natstest.Start(t)
	gw := natstest.Connect(t, srv)
	cfg := Config{Name: "large"}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	s := newServer(natstest.Connect(t, srv), cfg, nil)
	reply := gw.NewInbox()
	var mu sync.Mutex
	var got bytes.Buffer
	ended := make(chan struct{})
	sub, err := gw.Subscribe(reply, func(m *nats.Msg) {
		mu.Lock()
		got.Write(m.Data)
		mu.Unlock()
		if m.Reply != "" {
			_ = gw.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderFrame: {FrameAck}}})
		}
		if m.Header.Get(HeaderFrame) == FrameEnd {
			close(ended)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The server must have the subscription before the writer, on another
	// connection, sends to it: otherwise it answers the first data frame's
	// ack inbox with "no responders", which the writer takes for a gateway
	// gone.
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const chunk = 64 << 10
	w := &responseWriter{s: s, reply: reply, hdr: http.Header{}, ctx: ctx, chunk: chunk, window: DefaultWindow}
	t.Cleanup(func() {
		if w.ackSub != nil {
			_ = w.ackSub.Unsubscribe()
		}
	})
	body := make([]byte, 4<<20+123)
	for i := range body {
		body[i] = byte(i % 251)
	}
	for i, part := range [][]byte{body[:1000], body[1000 : len(body)-500], body[len(body)-500:]} {
		if n, err := w.Write(part); n != len(part) || err != nil {
			t.Fatalf("write %d of %d bytes: %d, %v", i, len(part), n, err)
		}
		if cap(w.buf) > 2*chunk {
			t.Fatalf("after write %d of %d bytes, the writer buffers %d bytes (capacity), want at most 2 chunks (%d)", i, len(part), cap(w.buf), 2*chunk)
		}
	}
	w.end(nil)
	if w.err != nil {
		t.Fatal(w.err)
	}
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("no end frame")
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got.Bytes(), body) {
		t.Errorf("the gateway got %d bytes, not the %d written in order", got.Len(), len(body))
	}
}
