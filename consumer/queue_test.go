package consumer

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats/natstest"
)

// A request the gateway cancels while it waits for a free worker leaves
// the queue without reaching the handler, and counts as an error.
func TestCancelledQueuedRequestIsDropped(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	var handled atomic.Int32
	busy, release := make(chan struct{}), make(chan struct{})
	cfg := Config{Name: "queued", MaxConcurrent: 1}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	s := newServer(natstest.Connect(t, srv), cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handled.Add(1) == 1 {
			close(busy)
			<-release
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	queued := func() int {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		return len(s.q.jobs) - s.q.head
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitUntil("the service", func() bool {
		_, err := nc.Request("$SRV.PING.queued", nil, time.Second)
		return err == nil
	})
	inbox := nats.NewInbox()
	if err := nc.PublishMsg(&nats.Msg{Subject: "queued", Reply: inbox + ".first"}); err != nil {
		t.Fatal(err)
	}
	<-busy
	if err := nc.PublishMsg(&nats.Msg{Subject: "queued", Reply: inbox + ".gone"}); err != nil {
		t.Fatal(err)
	}
	waitUntil("the second request queued", func() bool { return queued() == 1 })
	if err := nc.Publish(CancelSubject("queued"), []byte(inbox+".gone")); err != nil {
		t.Fatal(err)
	}
	waitUntil("the cancelled request out of the queue", func() bool { return queued() == 0 })
	close(release)
	waitUntil("the first request counted", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stats.NumRequests == 2
	})
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	if handled.Load() != 1 || st.NumErrors != 1 || st.LastError != "cancelled while waiting for a worker" {
		t.Errorf("handler ran %d times, stats %+v: want once, and the cancelled request as an error", handled.Load(), st)
	}
}
