package runner

import (
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
)

// outbox publishes the runner's instance events and output lines on a
// goroutine of its own. nats.go's Publish can wait for seconds: while it
// reconnects it holds the connection's lock through each attempt's
// handshake, for up to its connect timeout with a server that accepts and
// does not answer (stopped, overloaded, behind a link that drops packets),
// and a write to a full socket waits up to its flusher timeout, a minute.
// Called from the supervisors, that wait reached the apps: a state change
// waited under the supervisor's lock, and an instance's output was no
// longer read, so the app blocked writing to its stdout and ran at a
// fraction of its speed until NATS answered. Here only this goroutine
// waits; what does not fit in outboxBytes meanwhile is dropped, with a
// warning in the runner's log.
type outbox struct {
	conn *nats.Conn
	log  *slog.Logger
	wake chan struct{}
	done chan struct{}

	mu    sync.Mutex
	queue []outMsg
	// size counts the bytes queued and those being published.
	size    int
	dropped int
	// droppedTotal counts the messages ever dropped, for /metrics.
	droppedTotal int
}

type outMsg struct {
	subject string
	data    []byte
}

// outboxBytes bounds what waits for NATS: as much as nats.go keeps for
// a server it reconnects to.
const outboxBytes = nats.DefaultReconnectBufSize

func newOutbox(conn *nats.Conn, log *slog.Logger) *outbox {
	return &outbox{conn: conn, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// publish queues data for subject, or drops it when the queue is full; it
// never blocks.
func (o *outbox) publish(subject string, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.size+len(data) > outboxBytes {
		if o.dropped == 0 {
			o.log.Warn("NATS takes instance events and output lines slower than they come (unreachable, or reconnecting): dropping them until it catches up",
				"queued_bytes", o.size)
		}
		o.dropped++
		o.droppedTotal++
		return
	}
	if o.dropped > 0 {
		o.log.Warn("NATS takes instance events and output lines again; some were dropped", "dropped", o.dropped)
		o.dropped = 0
	}
	o.queue = append(o.queue, outMsg{subject: subject, data: data})
	o.size += len(data)
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// messagesDropped is how many messages were ever dropped.
func (o *outbox) messagesDropped() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.droppedTotal
}

// run publishes what is queued, in order, until stop is closed, then
// what is left, and closes done.
func (o *outbox) run(stop <-chan struct{}) {
	defer close(o.done)
	for {
		select {
		case <-o.wake:
			o.flush()
		case <-stop:
			o.flush()
			return
		}
	}
}

// flush publishes until the queue is empty.
func (o *outbox) flush() {
	for {
		o.mu.Lock()
		batch := o.queue
		o.queue = nil
		o.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		var n int
		for _, m := range batch {
			if err := o.conn.Publish(m.subject, m.data); err != nil {
				o.log.Debug("publish", "subject", m.subject, "err", err)
			}
			n += len(m.data)
		}
		o.mu.Lock()
		o.size -= n
		o.mu.Unlock()
	}
}
