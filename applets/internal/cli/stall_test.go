package cli_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats/natstest"
)

// freezingProxy forwards connections to a NATS server until freeze is
// called; from then on it neither reads nor writes on them and holds them
// open, as a server whose process is stopped, or a link that drops every
// packet, once the socket buffers between fill up.
type freezingProxy struct {
	ln     net.Listener
	target string
	frozen chan struct{}
	freeze func()

	mu    sync.Mutex
	conns []net.Conn
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frozen := make(chan struct{})
	p := &freezingProxy{ln: ln, target: target, frozen: frozen, freeze: sync.OnceFunc(func() { close(frozen) })}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *freezingProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		select {
		case <-p.frozen:
			continue
		default:
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, s)
		p.mu.Unlock()
		go p.pipe(s, c)
		go p.pipe(c, s)
	}
}

// pipe copies src to dst until the proxy is frozen or a side closes.
func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			return
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// A server that stops reading while the client writes (a stopped process,
// a link that drops every packet) fills the socket, and nats.go holds the
// connection's lock through a write to it: every publish, IsConnected and
// the pings that would find the server dead wait for that write. The
// client must fail over to the next server within seconds, as it does when
// the pings go unanswered, not after nats.go's default minute.
func TestFailoverFromServerThatStopsReading(t *testing.T) {
	t.Parallel()
	first := natstest.Start(t)
	next := natstest.Start(t)
	proxy := newFreezingProxy(t, strings.TrimPrefix(first.ClientURL(), "nats://"))
	opts, err := cli.NATSOptions("stall", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	reconnected := make(chan string, 4)
	opts = append(opts, nats.ReconnectHandler(func(nc *nats.Conn) { reconnected <- nc.ConnectedUrl() }))
	proxyURL := "nats://" + proxy.ln.Addr().String()
	nc, err := cli.Connect(proxyURL+","+next.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got := nc.ConnectedUrl(); got != proxyURL {
		t.Fatalf("connected to %s, want the first server %s", got, proxyURL)
	}

	proxy.freeze()
	frozen := time.Now()
	done := make(chan struct{})
	var publisher sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		publisher.Wait()
	})
	publisher.Go(func() {
		payload := make([]byte, 64<<10)
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = nc.Publish("flood", payload)
		}
	})
	const within = 20 * time.Second
	select {
	case u := <-reconnected:
		if u != next.ClientURL() {
			t.Errorf("reconnected to %s, want %s", u, next.ClientURL())
		}
		t.Logf("failed over after %s", time.Since(frozen).Round(100*time.Millisecond))
	case <-time.After(within):
		t.Fatalf("still on the server that stopped reading %s after it stopped", within)
	}
}
