package cli

import (
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// nats.go takes a server for dead when MaxPingsOut PINGs in a row go
// unanswered, but a PONG waits behind whatever the server sent before it.
// Over a slow link that is JetStream's flow-control window of an Object
// Store read (a megabyte or two): at 64 KiB/s the PONG comes 20 s later,
// with bytes arriving all along, and nats.go cut the connection every 8 s,
// losing the replies it waited for and starting the read over. So the
// connections Connect makes are judged as OpenSSH judges a server
// (ServerAliveCountMax): dead once nothing at all has come from it for as
// long as the pings would have waited.

// alive watches the connection nats.go uses; current is the one it dialed
// last.
type alive struct {
	silence time.Duration
	current atomic.Pointer[countedConn]
}

// takeOverPings has alive judge the server instead of nats.go's pings, for
// as long as they would have waited, and keeps the pings, now twice as
// often: they are what comes back from an idle server, and what tells a
// server that pings its clients as often as nats.go did (narun's do) that
// this client is there, as its PINGs queue behind the same bytes.
func takeOverPings(o *nats.Options) *alive {
	if o.PingInterval <= 0 || o.MaxPingsOut <= 0 {
		return nil
	}
	a := &alive{silence: o.PingInterval * time.Duration(o.MaxPingsOut+1)}
	o.PingInterval /= 2
	o.MaxPingsOut = math.MaxInt
	return a
}

// conn counts what is read from c, which nats.go is about to use.
func (a *alive) conn(c net.Conn) net.Conn {
	cc := &countedConn{Conn: c}
	a.current.Store(cc)
	return cc
}

// watch ends the connection nats.go uses once nothing has been read from
// it for a.silence while nats.go takes it for connected, so that nats.go
// reconnects as after a read error; it returns when nc is closed. It
// looks every tick, and so acts up to a tick late.
func (a *alive) watch(nc *nats.Conn, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var seen *countedConn
	var reads uint64
	var heard time.Time
	for now := range t.C {
		if nc.IsClosed() {
			return
		}
		c := a.current.Load()
		if c == nil {
			continue
		}
		if n := c.reads.Load(); c != seen || n != reads {
			seen, reads, heard = c, n, now
			continue
		}
		if now.Sub(heard) >= a.silence && nc.IsConnected() {
			c.end(fmt.Errorf("%w: nothing came from the server for %s", nats.ErrStaleConnection, now.Sub(heard).Round(time.Second)))
		}
	}
}

// countedConn is a connection to a NATS server that counts its reads and
// can be ended from outside a read with the error the read returns.
type countedConn struct {
	net.Conn
	reads atomic.Uint64
	ended atomic.Pointer[error]
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.reads.Add(1)
	}
	if err != nil {
		if why := c.ended.Load(); why != nil {
			err = *why
		}
	}
	return n, err
}

// end makes the read under way, and every later one, fail with why.
func (c *countedConn) end(why error) {
	c.ended.Store(&why)
	_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
}
