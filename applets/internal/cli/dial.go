package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// dialStagger is how long a dial to one server of a nats_url list gets
// before the next server is dialed too, as happy eyeballs (RFC 8305) waits
// between addresses: a device's own server, listed first, answers well
// within it and keeps its clients, and a dead one delays them by no more.
const dialStagger = 250 * time.Millisecond

// Connect is nats.Connect, except that with a nats_url list it connects
// about as fast as the fastest server that answers, at the first
// connection and at every reconnect: nats.go dials the servers one after
// the other and waits out the dial timeout of each dead one before the
// next (a powered-off device answers no SYN), which cost every ctl
// command seconds while a cluster member was down. The servers stay in
// the order given, as the reconnect list, so a device's own server listed
// first is still preferred when it answers. A server is taken for dead
// once nothing has come from it for as long as nats.go's pings would have
// waited, not once they go unanswered (alive.go).
func Connect(urls string, opts ...nats.Option) (*nats.Conn, error) {
	o := nats.GetDefaultOptions()
	o.Servers = splitURLs(urls)
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.InProcessServer != nil || o.CustomDialer != nil || o.Dialer != nil || o.ReconnectToServerCB != nil {
		return o.Connect()
	}
	r := &racer{timeout: cmp.Or(o.Timeout, nats.DefaultTimeout), stagger: dialStagger, backoff: func() time.Duration {
		jitter := o.ReconnectJitter
		if o.Secure || o.TLSConfig != nil {
			jitter = o.ReconnectJitterTLS
		}
		if jitter <= 0 {
			return o.ReconnectWait
		}
		return o.ReconnectWait + rand.N(jitter)
	}}
	// The racer dials a URL's host itself, so that the address nats.go
	// asks it for is the URL's and finds the connection raced for it; a
	// net.Dialer spreads its timeout over a name's addresses as nats.go
	// would.
	r.greeted = !o.TLSHandshakeFirst && !slices.ContainsFunc(o.Servers, isWebSocket)
	o.CustomDialer, o.SkipHostLookup, o.ReconnectToServerCB = r, true, r.pick
	o.ConnectedCB = r.afterHandshake(o.ConnectedCB)
	o.ReconnectedCB = r.afterHandshake(o.ReconnectedCB)
	r.next = serverAddrs(o.Servers)
	r.alive = takeOverPings(&o)
	nc, err := o.Connect()
	if err != nil {
		return nil, err
	}
	if nc.IsConnected() {
		r.established()
	}
	if r.alive != nil {
		go r.alive.watch(nc, o.PingInterval)
	}
	return nc, nil
}

// isWebSocket says whether a server URL is a websocket's, whose server
// speaks only once the client has.
func isWebSocket(u string) bool {
	scheme, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(u)), "://")
	return scheme == "ws" || scheme == "wss"
}

// splitURLs is how nats.Connect splits its comma-separated list.
func splitURLs(s string) []string {
	var urls []string
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// serverAddrs are the host:port that nats.go dials for urls, each once,
// in order: the URL's, with the scheme's default port when it has none.
// A URL that does not parse ends the list there; nats.go reports it.
func serverAddrs(urls []string) []string {
	var addrs []string
	for _, s := range urls {
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil {
			break
		}
		host := u.Host
		if u.Port() == "" {
			port := "4222"
			switch u.Scheme {
			case "ws":
				port = "80"
			case "wss":
				port = "443"
			}
			host = strings.TrimSuffix(host, ":") + ":" + port
		}
		if !slices.Contains(addrs, host) {
			addrs = append(addrs, host)
		}
	}
	return addrs
}

// errSkipped is what a server that had not answered yet gets when another
// one did: nats.go moves on to that one.
var errSkipped = errors.New("not answering yet when another server did")

// racer is the nats.go CustomDialer of Connect. When nats.go dials the
// first server of its list, at the first connection and at each reconnect
// (pick), the racer dials every server, a stagger apart in the list's
// order, and keeps what came of each for nats.go's next dial of it: the
// connection of the first to answer, the errors of those before it that
// failed or had not answered by then.
type racer struct {
	// timeout bounds each dial: nats.Timeout.
	timeout time.Duration
	// stagger is the wait before dialing the next server too.
	stagger time.Duration
	// greeted says that a server answers only once it sent its first
	// bytes (NATS's INFO), not once its kernel accepted the connection:
	// a server whose process is stopped or hung still accepts, and nats.go
	// would wait out its handshake with it, at every reconnect, without
	// ever trying the servers after it. Not with websockets or a TLS
	// handshake first, where the client speaks first.
	greeted bool
	// backoff is the least time from one round of dials to the next when
	// no connection came of the first (ReconnectWait and its jitter, as
	// nats.go pauses after a pass over its servers), so that a server that
	// accepts and then fails the handshake (a refused login) is not dialed
	// in a tight loop.
	backoff func() time.Duration
	// alive, when set, watches the connections nats.go is given.
	alive *alive

	mu sync.Mutex
	// next is the servers the next dial of one of them races.
	next []string
	// raced holds, by address, what the next dial of it returns.
	raced map[string]dialed
	// lastRace is when the last round of dials started.
	lastRace time.Time
	// connected says a connection came of the last round: losing it
	// races the servers again at once, as nats.go moves on to the next
	// server at once (a rolling restart of the servers must not leave
	// clients out for a backoff each time).
	connected bool
}

// established records that nats.go completed a handshake.
func (r *racer) established() {
	r.mu.Lock()
	r.connected = true
	r.mu.Unlock()
}

// afterHandshake is a nats.go connection callback that records the
// handshake, then calls cb.
func (r *racer) afterHandshake(cb nats.ConnHandler) nats.ConnHandler {
	return func(nc *nats.Conn) {
		r.established()
		if cb != nil {
			cb(nc)
		}
	}
}

type dialed struct {
	conn net.Conn
	err  error
}

// Dial is nats.go's dial of addr, with the connection it gets watched.
func (r *racer) Dial(network, addr string) (net.Conn, error) {
	conn, err := r.dial(network, addr)
	if conn != nil && r.alive != nil {
		conn = r.alive.conn(conn)
	}
	return conn, err
}

// dial races the servers when nats.go dials one of those it was told of,
// else returns what the last round found for addr, else dials it.
func (r *racer) dial(network, addr string) (net.Conn, error) {
	r.mu.Lock()
	if i := slices.Index(r.next, addr); i >= 0 {
		addrs := append([]string{addr}, slices.Delete(slices.Clone(r.next), i, i+1)...)
		r.next = nil
		r.mu.Unlock()
		return r.round(addrs)
	}
	d, ok := r.raced[addr]
	delete(r.raced, addr)
	r.mu.Unlock()
	if ok {
		return d.conn, d.err
	}
	dialer := net.Dialer{Timeout: r.timeout}
	return dialer.Dial(network, addr)
}

// pick is nats.go's ReconnectToServer callback: the server that answered
// first in the last round, when nats.go did not take its connection yet,
// else the first server, whose dial races them all: at once when the last
// round gave a connection, else at least a backoff after it started.
func (r *racer) pick(servers []nats.Server, _ nats.ServerInfo) (*nats.Server, time.Duration) {
	if len(servers) == 0 {
		return nil, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range servers {
		if d, ok := r.raced[s.URL.Host]; ok && d.conn != nil {
			r.next = nil
			return &servers[i], 0
		}
	}
	r.next = make([]string, len(servers))
	for i, s := range servers {
		r.next[i] = s.URL.Host
	}
	if r.connected {
		r.connected = false
		return &servers[0], 0
	}
	return &servers[0], max(0, r.backoff()-time.Since(r.lastRace))
}

// round races addrs and returns what came of the first; it keeps the
// winner's connection, and the errors of those before it, which nats.go,
// trying its servers in order, dials next.
func (r *racer) round(addrs []string) (net.Conn, error) {
	started := time.Now()
	win, conn, errs := r.race(addrs)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastRace = started
	for _, d := range r.raced {
		if d.conn != nil {
			d.conn.Close()
		}
	}
	r.raced = map[string]dialed{}
	if win == 0 {
		return conn, nil
	}
	before := addrs[1:]
	if win > 0 {
		before = addrs[1:win]
		r.keep(addrs[win], conn)
	}
	for i, addr := range before {
		r.raced[addr] = dialed{err: skipped(addr, errs[i+1])}
	}
	return nil, skipped(addrs[0], errs[0])
}

// skipped is err, or when the dial to addr did not end, errSkipped.
func skipped(addr string, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("dial %s: %w", addr, errSkipped)
}

// keep holds conn for the next dial of addr; one nats.go does not come
// for (it was closed meanwhile) is closed once a dial would have timed
// out. r.mu is held.
func (r *racer) keep(addr string, conn net.Conn) {
	r.raced[addr] = dialed{conn: conn}
	time.AfterFunc(r.timeout, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if d, ok := r.raced[addr]; ok && d.conn == conn {
			delete(r.raced, addr)
			conn.Close()
		}
	})
}

// race dials addrs, each a stagger after the one before or as soon as
// one fails, and returns the index and connection of the first to
// answer, or -1 when none did, with the error of each dial that failed
// before then.
func (r *racer) race(addrs []string) (int, net.Conn, []error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type answer struct {
		i    int
		conn net.Conn
		err  error
	}
	answers := make(chan answer, len(addrs))
	dialer := net.Dialer{Timeout: r.timeout}
	started := 0
	start := func() {
		i := started
		started++
		go func() {
			deadline := time.Now().Add(r.timeout)
			conn, err := dialer.DialContext(ctx, "tcp", addrs[i])
			if err == nil && r.greeted {
				conn, err = awaitGreeting(ctx, conn, deadline)
			}
			answers <- answer{i, conn, err}
		}()
	}
	errs := make([]error, len(addrs))
	next := time.NewTimer(r.stagger)
	defer next.Stop()
	start()
	for failed := 0; failed < len(addrs); {
		select {
		case a := <-answers:
			if a.err == nil {
				// The dials still running end with the cancel; one
				// that connected anyway is closed.
				go func(n int) {
					for range n {
						if late := <-answers; late.conn != nil {
							late.conn.Close()
						}
					}
				}(started - failed - 1)
				return a.i, a.conn, errs
			}
			errs[a.i] = a.err
			failed++
			if started < len(addrs) {
				start()
				next.Reset(r.stagger)
			}
		case <-next.C:
			if started < len(addrs) {
				start()
				next.Reset(r.stagger)
			}
		}
	}
	return -1, nil, errs
}

// awaitGreeting waits until conn's server sends its first bytes, until
// deadline or until ctx ends, and returns a connection that reads them
// again; on failure it closes conn.
func awaitGreeting(ctx context.Context, conn net.Conn, deadline time.Time) (net.Conn, error) {
	if err := conn.SetReadDeadline(deadline); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", conn.RemoteAddr(), err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if !stop() || err != nil {
		conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("dial %s: connected, but the server sent nothing: %w", conn.RemoteAddr(), err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", conn.RemoteAddr(), err)
	}
	return &greetedConn{Conn: conn, first: buf[:n]}, nil
}

// greetedConn is a connection whose first bytes were read already.
type greetedConn struct {
	net.Conn
	first []byte
}

func (c *greetedConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
