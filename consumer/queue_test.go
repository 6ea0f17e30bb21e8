package consumer

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"sync"
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
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(func() {
		// A test that failed early must not leave the handler blocked.
		released()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	queued := func() int {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		return len(s.q.waiting)
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
	// A message published before Serve subscribes would be lost.
	waitUntil("the service", func() bool { return srv.NATS().GlobalAccount().SubscriptionInterest("queued") })
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
	released()
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

	// A cancel that overtakes its request (they come on two
	// subscriptions) is kept, and the request dropped when it comes.
	if err := nc.Publish(CancelSubject("queued"), []byte(inbox+".overtaken")); err != nil {
		t.Fatal(err)
	}
	waitUntil("the cancel kept", func() bool {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		_, ok := s.q.early[inbox+".overtaken"]
		return ok
	})
	if err := nc.PublishMsg(&nats.Msg{Subject: "queued", Reply: inbox + ".overtaken"}); err != nil {
		t.Fatal(err)
	}
	waitUntil("the overtaken request counted", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stats.NumRequests == 3
	})
	s.mu.Lock()
	st = s.stats
	s.mu.Unlock()
	if handled.Load() != 1 || st.NumErrors != 2 || st.LastError != "cancelled before it arrived" {
		t.Errorf("handler ran %d times, stats %+v: want once, and the overtaken request as an error", handled.Load(), st)
	}
}

// A cancel that comes while a worker registers its request reaches the
// handler however the two interleave. Before, a cancel that looked for
// the handler before it was registered, then was kept for later after the
// worker had looked for a kept one, was lost: the handler ran to its
// deadline.
func TestCancelDuringRegistrationReachesTheHandler(t *testing.T) {
	srv := natstest.Start(t)
	cfg := Config{Name: "race"}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		ran      bool
		cause    error
		deadline time.Time
	}
	var mu sync.Mutex
	results := map[string]*outcome{}
	s := newServer(natstest.Connect(t, srv), cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		deadline, _ := r.Context().Deadline()
		mu.Lock()
		o := results[r.Header.Get("X-Id")]
		o.ran, o.cause, o.deadline = true, r.Context().Err(), deadline
		mu.Unlock()
	}))
	// The timeout is what a lost cancel costs: short, yet long enough
	// that the cancel goes out well before it.
	const timeout = "200"
	// The race is narrow: many tries, bounded in time, make it show, on
	// two cores or more (on one the goroutines hardly interleave there).
	end := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(end); i++ {
		reply := nats.NewInbox()
		o := &outcome{}
		mu.Lock()
		results[reply] = o
		mu.Unlock()
		m := &nats.Msg{Subject: "race", Reply: reply, Header: nats.Header{HeaderTimeout: {timeout}, "X-Id": {reply}}}
		var wg sync.WaitGroup
		var cancelled time.Time
		wg.Add(2)
		go func() { defer wg.Done(); s.serve(job{m: m, arrived: time.Now()}) }()
		go func() {
			defer wg.Done()
			// Varies where the cancel lands in the worker's registration.
			for range i % 64 {
				runtime.Gosched()
			}
			s.cancel(&nats.Msg{Data: []byte(reply)})
			cancelled = time.Now()
		}()
		wg.Wait()
		// A cancel done before the deadline ends the context first, or
		// keeps the handler from running at all.
		if o.ran && errors.Is(o.cause, context.DeadlineExceeded) && cancelled.Before(o.deadline) {
			t.Fatalf("iteration %d: the cancel was done %v before the deadline, yet the handler's context ended by it", i, o.deadline.Sub(cancelled))
		}
	}
}

// A request's time runs from when it arrived, not from when a worker took
// it: one that waited its whole timeout in the queue is over.
func TestTimeoutRunsFromArrival(t *testing.T) {
	m := &nats.Msg{Header: nats.Header{HeaderTimeout: {"30000"}}}
	r, cancel, err := decodeRequest(context.Background(), m, time.Now().Add(-time.Minute), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if r.Context().Err() == nil {
		t.Error("a request that arrived a minute ago with 30 s to live is not over")
	}
}

// The queue keeps the jobs in order, takes out a cancelled one, and
// does not grow without end while it never empties.
func TestQueueOrderCancelAndCompaction(t *testing.T) {
	q := queue{waiting: map[string]uint64{}, early: map[string]time.Time{}}
	push := func(reply string) { q.push(job{m: &nats.Msg{Reply: reply}}) }
	pop := func() string {
		j, ok := q.pop()
		if !ok {
			return ""
		}
		return j.m.Reply
	}
	push("a")
	push("b")
	push("c")
	now := time.Now()
	if !q.cancel("b", now) || q.cancel("b", now) || q.cancel("x", now) {
		t.Error("cancel: want true once for a queued job, then false")
	}
	if got := pop() + pop() + pop(); got != "ac" {
		t.Errorf("popped %q, want a then c", got)
	}
	for i := range 10 {
		push("w" + strconv.Itoa(i))
	}
	for i := range 100000 {
		push("n" + strconv.Itoa(i))
		if pop() == "" {
			t.Fatal("queue empty while jobs wait")
		}
	}
	if c := cap(q.jobs); c > 1000 || len(q.waiting) != 10 {
		t.Errorf("after 100000 jobs through a queue of 10: capacity %d, %d waiting", c, len(q.waiting))
	}
	if !q.cancel("n99995", now) {
		t.Error("a job queued after compaction cannot be cancelled")
	}
}

// Cancels that match nothing are forgotten after earlyFor: every
// instance hears the cancels of the requests others served.
func TestUnmatchedCancelsAreForgotten(t *testing.T) {
	q := queue{waiting: map[string]uint64{}, early: map[string]time.Time{}}
	start := time.Now()
	for i := range 1000 {
		q.cancel("old"+strconv.Itoa(i), start)
	}
	q.cancel("new", start.Add(earlyFor+time.Second))
	if len(q.early) != 1 || len(q.earlyOrder) != 1 {
		t.Errorf("%d cancels kept (%d in order), want only the recent one", len(q.early), len(q.earlyOrder))
	}
	if !q.cancelled("new") || q.cancelled("new") {
		t.Error("a kept cancel must be taken once")
	}
}

// nats.go never calls a closed handler set after its subscription closed,
// so run also ends when it finds the subscription closed, while that
// subscription's last dispatch may still be running: a request dispatched
// after the workers stopped must be dropped, not handed to a worker that
// is gone (a panic on a closed channel, before).
func TestDispatchAfterStopIsDropped(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	cfg := Config{Name: "late"}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	svc := natstest.Connect(t, srv)
	s := newServer(svc, cfg, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { handled.Add(1) }))
	done := make(chan error, 1)
	go func() { done <- s.run(context.Background()) }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := nc.Request("late", nil, time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request before the stop: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	svc.Close()
	if err := <-done; err == nil {
		t.Fatal("run ended without an error when its connection closed")
	}
	s.q.mu.Lock()
	workers := s.q.workers
	s.q.mu.Unlock()
	if workers == 0 {
		t.Fatal("no worker was started: the test checks nothing")
	}
	s.dispatch(&nats.Msg{Subject: "late", Reply: nats.NewInbox()})
	if n := handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want once: the late request was served", n)
	}
}
