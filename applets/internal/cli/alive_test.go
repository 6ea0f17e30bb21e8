package cli_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats/natstest"
)

// quickPings are the applets' options with pings every 100 ms, of which
// two may be outstanding: a server is taken for dead after 300 ms of
// silence, so that the tests below take seconds.
func quickPings(t *testing.T, more ...nats.Option) []nats.Option {
	t.Helper()
	opts, err := cli.NATSOptions("alive", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.PingInterval(100*time.Millisecond), nats.MaxPingsOutstanding(2))
	return append(opts, more...)
}

// pacedLink forwards connections to target, and what the server sends at
// no more than rate bytes a second, as a slow link to a device does.
func pacedLink(t *testing.T, target string, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := s.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				start, sent := time.Now(), 0
				buf := make([]byte, 1<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						sent += n
						time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Second / time.Duration(rate))))
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// A link that is busy bringing what the server sent keeps the connection,
// though the PONGs wait behind it far longer than the pings allow: 128 KiB
// at 64 KiB/s is 2 s, against 300 ms.
func TestBusySlowLinkIsNotTakenForDead(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	link := pacedLink(t, strings.TrimPrefix(srv.ClientURL(), "nats://"), 64<<10)
	disconnected := make(chan error, 8)
	nc, err := cli.Connect(link, quickPings(t, nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { disconnected <- err }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("bulk")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := natstest.Connect(t, srv)
	const parts = 8
	for range parts {
		if err := pub.Publish("bulk", make([]byte, 16<<10)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range parts {
		if _, err := sub.NextMsg(20 * time.Second); err != nil {
			t.Fatalf("part %d of %d: %v", i+1, parts, err)
		}
	}
	select {
	case err := <-disconnected:
		t.Fatalf("connection cut while the link was bringing data: %v", err)
	default:
	}
	if n := nc.Stats().Reconnects; n != 0 {
		t.Fatalf("%d reconnects while the link was bringing data", n)
	}
}

// A server from which nothing comes any more (a link that drops every
// packet) is left for the next one once the pings would have waited.
func TestSilentServerIsLeft(t *testing.T) {
	t.Parallel()
	first := natstest.Start(t)
	next := natstest.Start(t)
	proxy := newFreezingProxy(t, strings.TrimPrefix(first.ClientURL(), "nats://"))
	reconnected := make(chan string, 4)
	disconnected := make(chan error, 4)
	proxyURL := "nats://" + proxy.ln.Addr().String()
	nc, err := cli.Connect(proxyURL+","+next.ClientURL(), quickPings(t,
		nats.ReconnectHandler(func(nc *nats.Conn) { reconnected <- nc.ConnectedUrl() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { disconnected <- err }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != proxyURL {
		t.Fatalf("connected to %s, want the first server %s", got, proxyURL)
	}
	proxy.freeze()
	const within = 20 * time.Second
	select {
	case u := <-reconnected:
		if u != next.ClientURL() {
			t.Errorf("reconnected to %s, want %s", u, next.ClientURL())
		}
	case <-time.After(within):
		t.Fatalf("still on the silent server %s after it fell silent", within)
	}
	if err := <-disconnected; !errors.Is(err, nats.ErrStaleConnection) {
		t.Errorf("disconnected with %v, want a stale connection", err)
	}
}
