package gateway

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// inboxMux routes every message of every exchange through one wildcard
// subscription, like nats.go's request mux, but keeps a token open for
// several messages (pulls, stream frames), so no exchange costs a
// SUB/UNSUB round trip to the server.
type inboxMux struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription
	next   atomic.Uint64
	pool   sync.Pool

	mu      sync.Mutex
	waiters map[uint64]*waiter

	// mem counts the frames not yet acked, which hold their body in the
	// gateway's memory until their client has it.
	mem *memRelease

	// lost is closed when the connection to NATS has been down for
	// grace, and replaced: the exchanges in flight then will most likely
	// never see their reply, which went to a server that no longer knows
	// the gateway's inbox.
	lost atomic.Pointer[chan struct{}]
	// grace is how long the connection may be down before the exchanges
	// in flight give up: two of nats.go's reconnect attempts and a
	// second (5 s by default), so that a server restarted at once, or
	// another member of a cluster, is found again in time; a reply sent
	// meanwhile may still come.
	grace time.Duration
}

// waiter receives the messages of one exchange. Flow control bounds what
// the peer may send before the gateway answers, so the buffer is small.
type waiter struct {
	id    uint64
	reply string
	ch    chan *nats.Msg
	// overflow is set when the peer sent more than the protocol allows.
	overflow atomic.Bool
	// interims counts the interim frames that came, under the mux's lock.
	interims int
	// window is the response window the request gave the service, and
	// unacked the body of the data frames that came with a reply subject
	// and are not acked yet, which the service keeps within it.
	window  int64
	unacked atomic.Int64
	mem     *memRelease
}

// acked gives back the window a data frame took; called before its ack is
// sent, so that the next frame the ack lets the service send finds room.
func (w *waiter) acked(m *nats.Msg) {
	if m.Reply != "" {
		w.unacked.Add(-int64(len(m.Data)))
		w.mem.drop(int64(len(m.Data)))
	}
}

const waiterBuffer = 16

// maxInterim is how many interim (1xx) frames of an exchange the gateway
// relays; it drops the others, rather than the response, which they would
// push out of the waiter's buffer: interim frames need no ack, so nothing
// else holds a responder back. A few hints are what they are for, and 5 is
// as many as clients that count them accept before they fail the request
// (Go's, until it bounded their size instead; quic-go's HTTP/3 client).
const maxInterim = 5

func newInboxMux(nc *nats.Conn) (*inboxMux, error) {
	m := &inboxMux{nc: nc, prefix: nats.NewInbox() + ".", waiters: map[uint64]*waiter{},
		grace: 2*nc.Opts.ReconnectWait + nc.Opts.ReconnectJitter + time.Second}
	m.pool.New = func() any { return &waiter{ch: make(chan *nats.Msg, waiterBuffer)} }
	lost := make(chan struct{})
	m.lost.Store(&lost)
	sub, err := nc.Subscribe(m.prefix+"*", m.deliver)
	if err != nil {
		return nil, fmt.Errorf("subscribe to reply inbox: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("subscribe to reply inbox: %w", err)
	}
	m.sub = sub
	return m, nil
}

func (m *inboxMux) deliver(msg *nats.Msg) {
	if len(msg.Subject) <= len(m.prefix) {
		return
	}
	id, err := strconv.ParseUint(msg.Subject[len(m.prefix):], 36, 64)
	if err != nil {
		return
	}
	// Sending under the lock means release, which also takes it, can
	// never race with a late message into a recycled waiter.
	frame := frameOf(msg.Header)
	interim := frame == consumer.FrameInterim
	m.mu.Lock()
	w := m.waiters[id]
	if w != nil && (!interim || w.interims < maxInterim) {
		if interim {
			w.interims++
		}
		// Still queued when past the window: the exchange learns of
		// it when it takes the message, as it may wait for none other.
		if frame == consumer.FrameData && msg.Reply != "" {
			if w.unacked.Add(int64(len(msg.Data))) > w.window {
				w.overflow.Store(true)
			}
			m.mem.hold(int64(len(msg.Data)))
		}
		// A copy: nats.go leaves the message it delivered linked to the
		// next one queued on the subscription, so a frame that waits for
		// a client that does not read would keep every message delivered
		// after it alive, other exchanges' whole responses included.
		h := msg.Header
		if h == nil && msg.Size() > len(msg.Subject)+len(msg.Reply)+len(msg.Data) {
			h = undecodable
		}
		select {
		case w.ch <- &nats.Msg{Subject: msg.Subject, Reply: msg.Reply, Header: h, Data: msg.Data}:
		default:
			w.overflow.Store(true)
		}
	}
	m.mu.Unlock()
	if w == nil && id <= m.next.Load() {
		m.over(msg)
	}
}

// undecodable stands for the header of a message that came with a header
// block nats.go could not decode (a line without a colon, a first line
// other than NATS/1.0's). nats.go hands such a message over with no header
// at all, which would read as a head without Narun-Status: a 200 with the
// payload, whatever status the block held. Size counts the block as
// received. No decoded header has a name with a colon in it.
var undecodable = nats.Header{undecodableKey: nil}

const undecodableKey = ":undecodable"

// frameOf is a message's frame type as scanMeta reads it, without
// comparing every header of the messages that have one in Go's spelling.
func frameOf(h nats.Header) string {
	if v, ok := h[consumer.HeaderFrame]; ok {
		if len(v) == 0 {
			return ""
		}
		return trimOWS(v[0])
	}
	for k, v := range h {
		if len(k) == len(consumer.HeaderFrame) && len(v) > 0 && strings.EqualFold(k, consumer.HeaderFrame) {
			return trimOWS(v[0])
		}
	}
	return ""
}

// over answers a pull or a data frame that arrives after its exchange
// ended, as the exchange would have: a service waiting for the answer
// learns at once that nobody reads on, instead of at its own timeout.
func (m *inboxMux) over(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	switch scanMeta(msg.Header).frame {
	case consumer.FramePull, consumer.FrameData:
		_ = m.nc.PublishMsg(&nats.Msg{Subject: msg.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameCancel}}})
	}
}

// open starts an exchange whose request gives the service window.
func (m *inboxMux) open(window int64) *waiter {
	w := m.pool.Get().(*waiter)
	w.id = m.next.Add(1)
	// One allocation for the reply subject; the buffer stays on the stack.
	b := make([]byte, 0, 64)
	b = strconv.AppendUint(append(b, m.prefix...), w.id, 36)
	w.reply = string(b)
	w.overflow.Store(false)
	w.interims = 0
	w.window = window
	w.unacked.Store(0)
	w.mem = m.mem
	m.mu.Lock()
	m.waiters[w.id] = w
	m.mu.Unlock()
	return w
}

func (m *inboxMux) release(w *waiter) {
	m.mu.Lock()
	delete(m.waiters, w.id)
	m.mu.Unlock()
	for {
		select {
		case msg := <-w.ch:
			// Sent before the exchange ended, read after: answered as a
			// late one is.
			m.over(msg)
			continue
		default:
		}
		break
	}
	// Frames that came and were never acked: the exchange ended first.
	m.mem.drop(w.unacked.Swap(0))
	m.pool.Put(w)
}

// connectionLost is closed when the exchanges open now must give up, the
// connection to NATS being lost.
func (m *inboxMux) connectionLost() <-chan struct{} { return *m.lost.Load() }

// watchConnection ends the exchanges in flight when the connection has
// been down for m.grace, or is closed, until ctx is done.
func (m *inboxMux) watchConnection(ctx context.Context) {
	changes := m.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer m.nc.RemoveStatusListener(changes)
	grace := time.NewTimer(m.grace)
	grace.Stop()
	defer grace.Stop()
	down := false
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-changes:
			switch st {
			case nats.CONNECTED:
				down = false
				grace.Stop()
			case nats.CLOSED:
				m.giveUp()
			default:
				// Armed when the connection goes, not again at each
				// failed attempt: a server that keeps refusing the
				// handshake must not put the give-up off for ever.
				if !down {
					down = true
					grace.Reset(m.grace)
				}
			}
		case <-grace.C:
			if !m.nc.IsConnected() {
				m.giveUp()
			}
		}
	}
}

func (m *inboxMux) giveUp() {
	next := make(chan struct{})
	close(*m.lost.Swap(&next))
}

func (m *inboxMux) close() {
	_ = m.sub.Unsubscribe()
}
