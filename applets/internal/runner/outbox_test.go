package runner

import (
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// stallingProxy forwards TCP connections to a NATS server until stall is
// called; from then on it drops those it forwarded and holds each new one
// open without sending a byte, as a server does that accepts and never
// answers: a stopped process, or one too busy to.
type stallingProxy struct {
	ln     net.Listener
	target string
	// held receives each connection accepted while stalled.
	held chan struct{}

	mu      sync.Mutex
	stalled bool
	conns   []net.Conn
	waiting []net.Conn
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, target: target, held: make(chan struct{}, 16)}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.release()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *stallingProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.stalled {
			p.waiting = append(p.waiting, c)
			p.mu.Unlock()
			p.held <- struct{}{}
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() { _, _ = io.Copy(c, s); c.Close() }()
	}
}

// stall cuts the connections forwarded so far and holds the next ones.
func (p *stallingProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// release closes the connections held and forwards the next ones again.
func (p *stallingProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = false
	for _, c := range p.waiting {
		c.Close()
	}
	p.waiting = nil
}

// lastTick is the highest n of the lines "probe: tick n", -1 without one.
func lastTick(lines []string) int {
	last := -1
	for _, l := range lines {
		if s, ok := strings.CutPrefix(l, "probe: tick "); ok {
			if n, err := strconv.Atoi(s); err == nil {
				last = max(last, n)
			}
		}
	}
	return last
}

// A NATS server that accepts the runner's connection and never answers
// has nats.go hold the connection's lock through the whole handshake,
// which every publish waits for: the instances' output and state changes
// must not wait with it, nor the apps writing that output.
func TestInstancesDoNotWaitForNATS(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	u, err := url.Parse(c.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newStallingProxy(t, u.Host)
	// The handshake waits up to a minute for the server's first line:
	// longer than the test.
	nc, err := nats.Connect("nats://"+proxy.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond), nats.Timeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tr := startRunner(t, c, func(o *Options) { o.Conn = nc })
	// Before the runner stops, whose heartbeat may wait for NATS.
	t.Cleanup(proxy.release)
	c.deploy(t, "tick", "1.0.0", probeBin, "args = [\"tick\"]\n")
	before := tr.wait(t, "tick", "healthy", allIn(1, state.Healthy))[0]
	// Not a given line: an instance keeps its last 10 lines, which a
	// tick every 10 ms replaces before a loaded machine gets here.
	testutil.Eventually(t, 10*time.Second, "tick printing", func() bool { return lastTick(tr.lines("tick")) >= 1 })

	proxy.stall()
	select {
	case <-proxy.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the runner's connection did not reconnect through the stalled proxy")
	}
	from := lastTick(tr.lines("tick"))
	testutil.Eventually(t, 10*time.Second, "100 more lines of the instance while NATS does not answer", func() bool {
		return lastTick(tr.lines("tick")) >= from+100
	})
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "tick", "restart while NATS does not answer", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].PID != before.PID && l[0].State == state.Healthy
	})
}

// What the outbox drops while NATS does not take it is counted for
// /metrics, not only told in the runner's log.
func TestOutboxCountsDropped(t *testing.T) {
	t.Parallel()
	o := newOutbox(nil, slog.New(slog.DiscardHandler))
	msg := make([]byte, outboxBytes/2)
	for range 5 {
		o.publish("narun.logs.a.n.0-abc", msg)
	}
	if n := o.messagesDropped(); n != 3 {
		t.Errorf("5 messages of half the outbox queued: %d dropped, want 3", n)
	}
}
