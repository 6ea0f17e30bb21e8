package gateway

import (
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// quietBound is how much a client may send on a connection while the
// gateway writes nothing to it. HTTP/2 lets a client send frames that ask
// for no answer, and net/http's server reads some of them without end:
// CONTINUATION frames that add no header bytes (it bounds a head by its
// header bytes, not its frames) cost most of a core per connection until
// the idle timeout, two minutes. Everything a client that keeps to the
// protocol sends is answered within the connection's receive window: a
// request by its response, a body the gateway reads by window updates, a
// ping by its ack, and a body not read yet is held to that window, so the
// bound is twice the window, with room for heads, pings and TLS records.
// Over HTTP/1.1, where nothing is written while a body is read, the first
// request lifts it: there the server's own bounds on a head hold.
const quietBound = 2*h2ConnWindow + 1<<20

// quietListener gives its connections the bound limit.
type quietListener struct {
	net.Listener
	limit  int64
	closed *quietClosed
}

func (l quietListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &quietConn{Conn: c, limit: l.limit, closed: l.closed}, nil
}

// quietConn closes itself once its client has sent more than limit bytes
// since the gateway last wrote to it.
type quietConn struct {
	net.Conn
	limit  int64
	closed *quietClosed
	// quiet is what was read since the last write; negative once an
	// HTTP/1 request lifted the bound.
	quiet atomic.Int64
}

func (c *quietConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n == 0 || c.quiet.Load() < 0 {
		return n, err
	}
	// A write in between resets the count, and the swap fails.
	if q := c.quiet.Add(int64(n)); q > c.limit && c.quiet.CompareAndSwap(q, -1) {
		// Counted before the close, which its client may see at once.
		c.closed.note(c.RemoteAddr(), c.limit)
		_ = c.Conn.Close()
	}
	return n, err
}

func (c *quietConn) Write(p []byte) (int, error) {
	if q := c.quiet.Load(); q > 0 {
		// Not a Store: the bound lifted, or the connection closed for it,
		// stays so.
		c.quiet.CompareAndSwap(q, 0)
	}
	return c.Conn.Write(p)
}

// CloseWrite is the TCP connection's: net/http half-closes an HTTP/1
// connection before it closes it, so that a client still sending gets
// the answer before the reset its data would otherwise cause.
func (c *quietConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// liftForHTTP1 lifts the bound of the connection r came on, if r is an
// HTTP/1 request.
func liftForHTTP1(r *http.Request) {
	if r.ProtoMajor != 1 {
		return
	}
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if q, ok := c.(*quietConn); ok && q.quiet.Load() >= 0 {
		q.quiet.Store(-1)
	}
}

// quietClosed counts the connections closed for their bound, for
// narun_gateway_connections_unanswered_total, and logs them, one line per
// quietLogEvery at most: a client that opens connection after connection
// would otherwise fill the log.
type quietClosed struct {
	log    *slog.Logger
	count  atomic.Uint64
	logged atomic.Int64 // unix nanoseconds of the last line
}

const quietLogEvery = 10 * time.Second

func (q *quietClosed) note(remote net.Addr, limit int64) {
	n := q.count.Add(1)
	now := time.Now().UnixNano()
	last := q.logged.Load()
	if now-last < int64(quietLogEvery) || !q.logged.CompareAndSwap(last, now) {
		return
	}
	q.log.Warn("closed a connection whose client sent more than the bound without being answered anything (a flood of HTTP/2 frames that ask for no answer, such as empty CONTINUATION frames?)",
		"remote", remote.String(), "bound_bytes", limit, "closed_so_far", n)
}
