package cli_test

import (
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// dialTimeout is long enough that waiting out one dial of a server that
// does not answer fails the test's deadline, which a connection that
// passes it over is well within.
const (
	dialTimeout = 30 * time.Second
	deadline    = dialTimeout / 2
)

// deadOptions are the applets' options, with the dial timeout above and
// reconnects signalled on reconnected.
func deadOptions(t *testing.T, reconnected chan<- string) []nats.Option {
	t.Helper()
	opts, err := cli.NATSOptions("dial", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	return append(opts, nats.RetryOnFailedConnect(false), nats.Timeout(dialTimeout),
		nats.ReconnectHandler(func(nc *nats.Conn) { reconnected <- nc.ConnectedUrl() }))
}

// connectBefore connects, failing the test when that takes until the
// deadline: it waited out a dial of the server that does not answer.
func connectBefore(t *testing.T, urls string, opts []nats.Option) *nats.Conn {
	t.Helper()
	type connected struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan connected, 1)
	go func() {
		nc, err := cli.Connect(urls, opts...)
		done <- connected{nc, err}
	}()
	select {
	case c := <-done:
		if c.err != nil {
			t.Fatalf("connect to %s: %v", urls, c.err)
		}
		t.Cleanup(c.nc.Close)
		return c.nc
	case <-time.After(deadline):
		t.Fatalf("connect to %s: not connected after %s, waiting on the server that does not answer (dial timeout %s)", urls, deadline, dialTimeout)
		return nil
	}
}

// A powered-off device listed first (its SYNs unanswered) costs the first
// connection nothing: the client connects to the next server, and keeps
// the list in its order for reconnects.
func TestConnectPassesOverAServerThatDoesNotAnswer(t *testing.T) {
	dead := "nats://" + testutil.Unanswering(t)
	live := natstest.Start(t).ClientURL()
	nc := connectBefore(t, dead+","+live, deadOptions(t, make(chan string, 1)))
	if got := nc.ConnectedUrl(); got != live {
		t.Errorf("connected to %s, want %s", got, live)
	}
	if got, want := nc.Servers(), []string{dead, live}; !slices.Equal(got, want) {
		t.Errorf("server pool %q, want the configured order %q", got, want)
	}
}

// A server listed first whose process is stopped or hung, which its
// kernel still accepts connections for, is passed over as one that does
// not answer: waiting for its greeting held the client on it, at the
// first connection and at every reconnect, while the next server served.
func TestConnectPassesOverAServerThatAcceptsAndSaysNothing(t *testing.T) {
	silent := "nats://" + testutil.Silent(t)
	live := natstest.Start(t).ClientURL()
	nc := connectBefore(t, silent+","+live, deadOptions(t, make(chan string, 1)))
	if got := nc.ConnectedUrl(); got != live {
		t.Errorf("connected to %s, want %s", got, live)
	}
}

// Nor does it cost a reconnect: when the server the client is on goes
// away, it reconnects to the one that answers.
func TestReconnectPassesOverAServerThatDoesNotAnswer(t *testing.T) {
	dead := "nats://" + testutil.Unanswering(t)
	first, second := natstest.Start(t), natstest.Start(t)
	reconnected := make(chan string, 1)
	nc := connectBefore(t, dead+","+first.ClientURL()+","+second.ClientURL(), deadOptions(t, reconnected))
	if got := nc.ConnectedUrl(); got != first.ClientURL() {
		t.Fatalf("connected to %s, want %s", got, first.ClientURL())
	}
	first.Shutdown()
	select {
	case got := <-reconnected:
		if got != second.ClientURL() {
			t.Errorf("reconnected to %s, want %s", got, second.ClientURL())
		}
	case <-time.After(deadline):
		t.Fatalf("not reconnected after %s, waiting on the server that does not answer (dial timeout %s)", deadline, dialTimeout)
	}
}

// A connection that worked and is lost is raced for again at once, however
// recent the last race: in a rolling restart a client moves from server to
// server a few seconds apart, and waiting out ReconnectWait at each move
// left a gateway without NATS for part of it.
func TestReconnectAtOnceAfterAConnectionThatWorked(t *testing.T) {
	a, b, c := natstest.Start(t), natstest.Start(t), natstest.Start(t)
	reconnected := make(chan string, 1)
	opts := append(deadOptions(t, reconnected), nats.ReconnectWait(time.Hour))
	nc := connectBefore(t, a.ClientURL()+","+b.ClientURL()+","+c.ClientURL(), opts)
	for _, s := range []interface {
		ClientURL() string
		Shutdown()
	}{a, b} {
		if got := nc.ConnectedUrl(); got != s.ClientURL() {
			t.Fatalf("connected to %s, want %s", got, s.ClientURL())
		}
		s.Shutdown()
		select {
		case <-reconnected:
		case <-time.After(deadline):
			t.Fatalf("not reconnected %s after %s stopped: waiting out ReconnectWait (1h) after a connection that worked", deadline, s.ClientURL())
		}
	}
	if got := nc.ConnectedUrl(); got != c.ClientURL() {
		t.Errorf("connected to %s, want %s", got, c.ClientURL())
	}
}

// When nothing answers, the error is the dial's timeout, as nats.go's
// own: ctl tells the operator the device is down from it.
func TestConnectWhenNothingAnswers(t *testing.T) {
	urls := "nats://" + testutil.Unanswering(t) + ",nats://" + testutil.Unanswering(t)
	opts, err := cli.NATSOptions("dial", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := cli.Connect(urls, append(opts, nats.RetryOnFailedConnect(false), nats.Timeout(time.Second))...)
	if err == nil {
		nc.Close()
		t.Fatal("connected to servers that do not answer")
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !op.Timeout() {
		t.Errorf("error %v (%T), want a dial timeout", err, err)
	}
}
