package gateway

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connLimit holds the client connections of the HTTP and HTTPS listeners
// under a bound, through their servers' ConnState. Each connection costs
// some 20 KiB even idle, and a file descriptor; unbounded, a flood of
// them takes the memory and descriptors of the whole process, which under
// narun up are the NATS server's and the runner's too. At the bound a new
// connection takes the place of an idle keep-alive one, as nginx does
// (its client opens another when it needs one); with none idle it is
// closed at once. The admin listener is outside the bound, so /healthz
// and /metrics still answer.
type connLimit struct {
	max     int
	log     *slog.Logger
	refused atomic.Uint64

	mu       sync.Mutex
	open     map[net.Conn]struct{}
	idle     map[net.Conn]struct{}
	lastWarn time.Time
}

func newConnLimit(max int, log *slog.Logger) *connLimit {
	return &connLimit{max: max, log: log, open: map[net.Conn]struct{}{}, idle: map[net.Conn]struct{}{}}
}

// track is the servers' ConnState.
func (l *connLimit) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew:
		if len(l.open) >= l.max && !l.evictIdle() {
			l.refused.Add(1)
			if now := time.Now(); now.Sub(l.lastWarn) >= time.Minute {
				l.lastWarn = now
				l.log.Warn("connection limit reached: new connections are closed at once while none is idle",
					"max_connections", l.max, "refused", l.refused.Load())
			}
			closeConn(c)
			return
		}
		l.open[c] = struct{}{}
	case http.StateIdle:
		if _, ok := l.open[c]; ok {
			l.idle[c] = struct{}{}
		}
	case http.StateActive:
		delete(l.idle, c)
	case http.StateClosed, http.StateHijacked:
		delete(l.open, c)
		delete(l.idle, c)
	}
}

// evictIdle closes an idle connection, if there is one. l.mu is held.
func (l *connLimit) evictIdle() bool {
	for c := range l.idle {
		delete(l.idle, c)
		delete(l.open, c)
		closeConn(c)
		return true
	}
	return false
}

func (l *connLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// closeConn closes the socket under a TLS connection: tls.Conn's Close
// would first write an alert, and wait for a client that does not read
// while holding up the accept loop.
func closeConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}
