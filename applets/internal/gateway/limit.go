package gateway

import (
	"container/list"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/narun/narun/applets/internal/config"
)

// headGrace is how long a connection may go without a complete request
// head (TLS handshake included) before it may be closed to make room at
// max_connections: a phone on a poor link sends its first request within
// it, while a client that sends nothing, or its headers a byte at a time,
// would otherwise hold its place for the whole 10 s header timeout, and a
// few thousand such would shut every real client out.
const headGrace = 2 * time.Second

// Reasons a connection is closed to make room, the label of
// narun_gateway_connections_reclaimed_total.
const (
	reclaimIdle    = iota // an idle keep-alive connection
	reclaimHead           // one without a complete request head past headGrace
	reclaimClosing        // one answered, waiting out its close beyond maxEnding
	numReclaims
)

var reclaimNames = [numReclaims]string{"idle", "head_incomplete", "closing"}

// connLimit holds the client connections of the HTTP and HTTPS listeners
// under a bound, through their servers' ConnState. Each connection costs
// some 20 KiB even idle, and a file descriptor; unbounded, a flood of
// them takes the memory and descriptors of the whole process, which under
// narun up are the NATS server's and the runner's too. At the bound a new
// connection takes the place of one that has had its answer and waits out
// its close (see closing), else of an idle keep-alive one, as nginx does
// (its client opens another when it needs one), else of the oldest one
// still without a complete request head after headGrace; with neither it
// is closed at once. The admin listener is outside the bound, so /healthz
// and /metrics still answer. A connection whose last answer is written
// leaves the bound for one of its own (see closing).
type connLimit struct {
	max       int
	log       *slog.Logger
	refused   atomic.Uint64
	reclaimed [numReclaims]atomic.Uint64
	// quiet counts the connections closed for quietBound.
	quiet quietClosed
	// now is time.Now; a test moves it on past headGrace.
	now func() time.Time

	mu   sync.Mutex
	open map[net.Conn]struct{}
	idle map[net.Conn]struct{}
	// ending are the connections out of open that closing moved, at
	// most maxEnding.
	ending    map[net.Conn]struct{}
	maxEnding int
	// answered are the connections of open that closing found no room
	// for in ending: answered, they wait out their close.
	answered map[net.Conn]struct{}
	// noHead are the connections without a request head yet, oldest
	// first, as accepted; noHeadAt finds each one's element.
	noHead   *list.List
	noHeadAt map[net.Conn]*list.Element
	lastWarn time.Time
}

// noHeadConn is an element of connLimit.noHead.
type noHeadConn struct {
	conn     net.Conn
	accepted time.Time
}

// connMemory is the memory narun may use for each connection of the
// default max_connections: an idle connection costs some 20 KiB, and one
// whose request waits for body memory about as much, so connections alone
// take at most about a third of it. minDefaultConns is the least default,
// for a device with little memory.
const (
	connMemory      = 64 << 10
	minDefaultConns = 256
)

// maxConnectionsFor is the max_connections for a file that sets none,
// with limit and ram as memory returns them: one connection per
// connMemory of what narun may use, between minDefaultConns and
// config.DefaultMaxConnections; the latter when neither is known. 4096
// connections took narun up to 128 MB, all of a 128 MiB cgroup.
func maxConnectionsFor(limit, ram int64) int {
	m := usableMemory(limit, ram)
	if m == 0 {
		return config.DefaultMaxConnections
	}
	return int(min(max(m/connMemory, minDefaultConns), config.DefaultMaxConnections))
}

func newConnLimit(n int, log *slog.Logger) *connLimit {
	return &connLimit{max: n, log: log, quiet: quietClosed{log: log}, now: time.Now, open: map[net.Conn]struct{}{}, idle: map[net.Conn]struct{}{},
		ending: map[net.Conn]struct{}{}, maxEnding: max(n, minEnding), answered: map[net.Conn]struct{}{}, noHead: list.New(), noHeadAt: map[net.Conn]*list.Element{}}
}

// track is the servers' ConnState.
func (l *connLimit) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew:
		now := l.now()
		if len(l.open) >= l.max && !l.reclaimOne(l.answered, reclaimClosing) && !l.reclaimOne(l.idle, reclaimIdle) && !l.reclaimNoHead(now) {
			l.refused.Add(1)
			if now.Sub(l.lastWarn) >= time.Minute {
				l.lastWarn = now
				l.log.Warn("connection limit reached: new connections are closed at once while none is idle or without its request head for "+headGrace.String(),
					"max_connections", l.max, "refused", l.refused.Load())
			}
			closeConn(c)
			return
		}
		l.open[c] = struct{}{}
		l.noHeadAt[c] = l.noHead.PushBack(noHeadConn{conn: c, accepted: now})
	case http.StateIdle:
		if _, ok := l.open[c]; ok {
			l.idle[c] = struct{}{}
		}
		l.headed(c)
	case http.StateActive:
		delete(l.idle, c)
		l.headed(c)
	case http.StateClosed, http.StateHijacked:
		l.forget(c)
	}
}

// headed notes that c has sent a request head (or, over HTTP/2, its
// preface). l.mu is held.
func (l *connLimit) headed(c net.Conn) {
	if e, ok := l.noHeadAt[c]; ok {
		l.noHead.Remove(e)
		delete(l.noHeadAt, c)
	}
}

// minEnding is the least maxEnding: a client whose uploads are refused
// one after another over loopback or a LAN leaves some hundreds of
// connections a second waiting out their close, some 20 KiB each (its
// goroutine and buffers), 5 MiB for 256.
const minEnding = 256

// closing notes that c's last answer is written and it closes next.
// net/http then waits up to 500 ms for the client to read the answer
// before a reset could discard it (closeWriteAndWait): counted against
// max all that time, connections whose uploads were refused would take
// every place, and new ones would be closed unanswered. Closing c early
// would bring back the reset, so it leaves the bound for one of its own,
// maxEnding; beyond that it counts against max again, so that even
// clients that do not read their answer hold at most max + maxEnding,
// and a new connection takes its place before any other's: a few clients
// whose requests are refused one after another would otherwise keep max
// full of connections that have had their answer.
func (l *connLimit) closing(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.open[c]; !ok {
		return
	}
	if len(l.ending) >= l.maxEnding {
		l.answered[c] = struct{}{}
		return
	}
	l.forget(c)
	l.ending[c] = struct{}{}
}

// forget drops c from every set. l.mu is held.
func (l *connLimit) forget(c net.Conn) {
	delete(l.open, c)
	delete(l.idle, c)
	delete(l.ending, c)
	delete(l.answered, c)
	l.headed(c)
}

// reclaimOne closes a connection of set, if there is one, counted as
// reason: one of answered loses at most the end of an answer its client
// has not read yet, one of idle nothing its client cannot open again.
// l.mu is held.
func (l *connLimit) reclaimOne(set map[net.Conn]struct{}, reason int) bool {
	for c := range set {
		l.forget(c)
		closeConn(c)
		l.reclaimed[reason].Add(1)
		return true
	}
	return false
}

// reclaimNoHead closes the oldest connection without a request head,
// if it has had headGrace to send one. l.mu is held.
func (l *connLimit) reclaimNoHead(now time.Time) bool {
	e := l.noHead.Front()
	if e == nil {
		return false
	}
	h := e.Value.(noHeadConn)
	if now.Sub(h.accepted) < headGrace {
		return false
	}
	l.forget(h.conn)
	closeConn(h.conn)
	l.reclaimed[reclaimHead].Add(1)
	return true
}

// count is the connections counted against max, those in ending not.
func (l *connLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

type connKey struct{}

// withConn is the servers' ConnContext: the handler finds the connection
// its request came on, to tell l when it closes after the answer.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
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
