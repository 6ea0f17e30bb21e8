package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// aliveEvery is how often the running requests are looked at for a
// silence to break with FrameAlive, and the silence that calls for one: a
// request quiet since just after a look gets its frame at the second look
// after, aliveEvery*2 later at most.
var aliveEvery = 2 * time.Second

// aliveTimeout is the silence that the alive frames allow the gateway to
// take for a dead instance: five times aliveEvery, two and a half times
// the longest gap between two of them, so that a service slowed by load
// is not taken for one killed.
func aliveTimeout() time.Duration { return 5 * aliveEvery }

// running is a request whose handler runs: what a cancel ends, and what
// keepAlive reads.
type running struct {
	cancel context.CancelFunc
	w      *responseWriter
}

// liveness is what keepAlive reads of a response from its own goroutine.
type liveness struct {
	// lastSent is when the exchange last sent the gateway a message, in
	// Unix nanoseconds.
	lastSent atomic.Int64
	// unacked counts the data frames that await their ack, which the
	// responseWriter's writes wait for too, and acks is the channel they
	// arrive on once the response streams.
	unacked atomic.Int32
	acks    atomic.Pointer[chan *nats.Msg]
}

func (l *liveness) sent(now time.Time) { l.lastSent.Store(now.UnixNano()) }

// quiet reports whether the exchange has sent nothing for aliveEvery and
// waits for nothing from the gateway: while data frames await their acks
// the gateway is busy writing to the client, and an alive frame would take
// a place in its buffer for the exchange that a data frame may need.
func (l *liveness) quiet(now time.Time) bool {
	if now.UnixNano()-l.lastSent.Load() < int64(aliveEvery) {
		return false
	}
	waiting := int(l.unacked.Load())
	if acks := l.acks.Load(); acks != nil {
		// Acks arrived that the handler's next write has not taken yet.
		waiting -= len(*acks)
	}
	return waiting <= 0
}

// startKeepAlive runs keepAlive until the function it returns is called,
// which returns once keepAlive has.
func (s *server) startKeepAlive() (stop func()) {
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		s.keepAlive(done)
	}()
	return func() {
		close(done)
		<-ended
	}
}

// keepAlive sends FrameAlive for each running request that has been quiet
// for aliveEvery, until done closes. A killed instance sends nothing, and
// NATS tells the gateway nothing of it: without these the client of a
// long request, a Server-Sent Events stream above all, waited until the
// route's timeout, hours for some.
func (s *server) keepAlive(done <-chan struct{}) {
	tick := time.NewTicker(aliveEvery)
	defer tick.Stop()
	timeout := strconv.FormatInt(aliveTimeout().Milliseconds(), 10)
	var quiet []*responseWriter
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			quiet = quiet[:0]
			s.mu.Lock()
			for _, run := range s.inflight {
				if run.w.ctx.Err() == nil && run.w.live.quiet(now) {
					quiet = append(quiet, run.w)
				}
			}
			s.mu.Unlock()
			for _, w := range quiet {
				w.live.sent(now)
				m := &nats.Msg{Subject: w.reply, Header: nats.Header{HeaderFrame: {FrameAlive}, HeaderAliveTimeout: {timeout}}}
				if err := s.nc.PublishMsg(m); err != nil {
					s.asyncErr(fmt.Errorf("tell %s that its request is still worked on: %w", w.reply, err))
				}
			}
			clear(quiet)
		}
	}
}
