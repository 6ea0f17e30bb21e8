package gateway

import (
	"sync/atomic"

	"github.com/narun/narun/consumer"
)

// Response windows (docs/PROTOCOL.md §3): how much of a response's body a
// service may send ahead of the gateway's acks. Each is held in the gateway's
// memory while the client reads slowly: at 8 frames of about 1 MiB each and
// nothing bounding their sum, 300 clients reading a byte a second took narun
// up to 605 MB. The gateway therefore gives each request a window out of a
// budget, the size of max_body_memory, and a request that finds the budget
// taken gets the least window, whose cost is bounded by max_connections as
// the rest of a connection's is.
const (
	// maxWindow keeps the pipe of a 1 MiB response, or of a fast client,
	// as full as 4 frames of nearly max_payload did before. A request
	// without consumer.HeaderWindow gives it: most do, and need not carry
	// the header.
	maxWindow = consumer.DefaultWindow
	// minWindow still lets a response travel in frames of 16 KiB.
	minWindow = 64 << 10
)

// windowBudget is the memory the response windows of the requests in flight
// share. A nil budget (memory unknown) bounds nothing.
type windowBudget struct {
	size int64
	held atomic.Int64
}

// take gives a new request its window and what it holds of the budget, to
// give back when the exchange ends: as much of maxWindow as the budget has
// free, or minWindow, held of nothing, when that is less.
func (b *windowBudget) take() (window, held int64) {
	if b == nil {
		return maxWindow, 0
	}
	for {
		h := b.held.Load()
		n := min(maxWindow, b.size-h)
		if n < minWindow {
			return minWindow, 0
		}
		if b.held.CompareAndSwap(h, h+n) {
			return n, n
		}
	}
}

func (b *windowBudget) give(held int64) {
	if held > 0 {
		b.held.Add(-held)
	}
}
