package gateway

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

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
}

// waiter receives the messages of one exchange. Flow control bounds what
// the peer may send before the gateway answers, so the buffer is small.
type waiter struct {
	id    uint64
	reply string
	ch    chan *nats.Msg
	// overflow is set when the peer sent more than the protocol allows.
	overflow atomic.Bool
}

const waiterBuffer = 16

func newInboxMux(nc *nats.Conn) (*inboxMux, error) {
	m := &inboxMux{nc: nc, prefix: nats.NewInbox() + ".", waiters: map[uint64]*waiter{}}
	m.pool.New = func() any { return &waiter{ch: make(chan *nats.Msg, waiterBuffer)} }
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
	m.mu.Lock()
	w := m.waiters[id]
	if w != nil {
		select {
		case w.ch <- msg:
		default:
			w.overflow.Store(true)
		}
	}
	m.mu.Unlock()
	if w == nil && id <= m.next.Load() {
		m.over(msg)
	}
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

func (m *inboxMux) open() *waiter {
	w := m.pool.Get().(*waiter)
	w.id = m.next.Add(1)
	// One allocation for the reply subject; the buffer stays on the stack.
	b := make([]byte, 0, 64)
	b = strconv.AppendUint(append(b, m.prefix...), w.id, 36)
	w.reply = string(b)
	w.overflow.Store(false)
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
		case <-w.ch:
			continue
		default:
		}
		break
	}
	m.pool.Put(w)
}

func (m *inboxMux) close() {
	_ = m.sub.Unsubscribe()
}
