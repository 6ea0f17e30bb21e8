package gateway

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// errBodyStalled is a request body of which nothing arrived for
// body_idle_timeout while the gateway waited for it.
var errBodyStalled = errors.New("request body stalled")

// timedBody bounds each wait for more of a client's request body by idle,
// within the exchange's deadline, as nginx's client_body_timeout does: a
// client that stalls its body (on purpose, or gone without a word) would
// otherwise hold its connection, an in-flight request and the service that
// waits for the body until the route's timeout, an hour for a route made
// for uploads. The bound runs only while a read waits: between reads the
// connection's deadline is the exchange's again, so a service that takes
// its time between pulls is not taken for a slow client (over HTTP/2 a
// deadline passed ends the body even with no read waiting).
//
// It also tells a read that failed at a deadline from a client gone, which
// over HTTP/1 look alike to the exchange: net/http cancels the request's
// context as the read fails, before the read returns.
type timedBody struct {
	r        io.Reader
	conn     deadliner
	idle     time.Duration // 0: the exchange's deadline only
	deadline time.Time     // the exchange's

	mu      sync.Mutex
	reading bool
	// until is the idle deadline of the read in progress; zero when the
	// exchange's deadline comes first.
	until  time.Time
	failed error // the error of a read that failed at a deadline
	// ended is set once a read returned an error, io.EOF included: over
	// HTTP/1 net/http then reads the connection in the background to
	// notice the client hanging up, with no deadline, and a deadline set
	// here would end that read as if the client had.
	ended bool
	// over is set when the exchange ends: a read may outlive it (over
	// HTTP/1 a read cannot be interrupted), and must then leave the
	// connection's deadlines alone, which a next request may have set.
	over bool
}

func (b *timedBody) start(r io.Reader, conn deadliner, idle time.Duration, deadline time.Time) {
	b.r, b.conn, b.idle, b.deadline = r, conn, idle, deadline
	b.reading, b.until, b.failed, b.ended, b.over = false, time.Time{}, nil, false, false
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.over {
		b.mu.Unlock()
		return 0, errExchangeOver
	}
	if b.ended {
		b.mu.Unlock()
		return b.r.Read(p)
	}
	b.reading = true
	b.until = time.Time{}
	if until := time.Now().Add(b.idle); b.idle > 0 && until.Before(b.deadline) {
		b.until = until
		_ = b.conn.SetReadDeadline(until)
	}
	b.mu.Unlock()
	n, err := b.r.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	b.ended = err != nil
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline stays passed: net/http reads what is left of a
		// small body before it sends the 408, and must not wait for it.
		b.failed = err
		if !b.until.IsZero() {
			b.failed = b.stalled()
		}
		return n, b.failed
	}
	if !b.until.IsZero() && !b.over && err == nil {
		_ = b.conn.SetReadDeadline(b.deadline)
	}
	return n, err
}

// failure is the error of a read that failed at a deadline, or of one
// that waits past it; nil if there is none, or no timedBody.
func (b *timedBody) failure() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failed != nil || !b.reading {
		return b.failed
	}
	now := time.Now()
	switch {
	case !b.until.IsZero() && !now.Before(b.until):
		return b.stalled()
	case !now.Before(b.deadline):
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (b *timedBody) stalled() error {
	return fmt.Errorf("%w: nothing received for %v", errBodyStalled, b.idle)
}

// stop ends the body's hold on the connection's deadlines.
func (b *timedBody) stop() {
	b.mu.Lock()
	b.over = true
	b.mu.Unlock()
}
