package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"
)

// errBodyBudget ends a request whose body found no room in the gateway's
// body memory before its deadline.
var errBodyBudget = errors.New("no room for the request body: the gateway's body memory is taken by other requests")

// budgetedBuf is the smallest body buffer that counts against the budget:
// smaller ones are bounded by the connections (max_connections), and
// small requests must pass while large ones wait.
const budgetedBuf = 64 << 10

// bodyBudget bounds the bytes of the buffers that request bodies take in
// the gateway at once. Each such buffer costs the process about four times
// its size while it travels (nats.go's write buffer, the server's copies),
// so without a bound the memory grows with concurrent uploads until the
// kernel kills the process: 64 of 1 MiB at once took 300 MB. A request
// whose buffer finds no room waits for one, in order of arrival, up to
// its deadline; its client's body waits in the kernel meanwhile. The
// waiting request itself costs the gateway about 20 KB (its goroutine,
// its connection's buffers, the request), so the waiters are bounded too:
// 4000 clients that each announced 1 MiB and sent a byte took narun up to
// 128 MB, all of a 128 MiB cgroup. One beyond the bound fails at once.
type bodyBudget struct {
	size int64
	// maxWaiting is as many requests as the whole budget holds first
	// buffers: those that wait get room within about one round of the
	// bodies in flight, and a client turned away learns it at once,
	// rather than at the route's deadline, an hour for an upload route.
	maxWaiting int64
	sem        *semaphore.Weighted
	held       atomic.Int64
	waiting    atomic.Int64
	waits      atomic.Uint64
	refused    atomic.Uint64

	// mem counts what is held, to hand it back to the OS once unused.
	mem *memRelease
}

// minBodyWaiters is the least maxWaiting: a small max_body_memory must
// still let a few requests queue rather than fail.
const minBodyWaiters = 16

func newBodyBudget(size int64, mem *memRelease) *bodyBudget {
	return &bodyBudget{size: size, maxWaiting: max(size/budgetedBuf, minBodyWaiters), sem: semaphore.NewWeighted(size), mem: mem}
}

// memory is what narun may use, as the defaults sized by it read it: Go's
// soft limit (narun sets it from its cgroup), math.MaxInt64 for none, and
// the machine's RAM, 0 if unknown.
func memory() (limit, ram int64) {
	limit = debug.SetMemoryLimit(-1)
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		ram = int64(si.Totalram) * int64(si.Unit)
	}
	return limit, ram
}

// usableMemory is the smaller of limit and ram as memory returns them, 0
// when neither is known.
func usableMemory(limit, ram int64) int64 {
	if ram > 0 && ram < limit {
		limit = ram
	}
	if limit == math.MaxInt64 {
		return 0
	}
	return limit
}

// defaultBodyMemory is a sixteenth of the memory narun may use: Go's soft
// limit when it has one, else the machine's RAM. With the fourfold cost
// above, that is a quarter of it.
func defaultBodyMemory() int64 {
	m := usableMemory(memory())
	if m == 0 {
		return 0
	}
	return max(m/16, 4<<20)
}

// take reserves n bytes for a request's first buffer, waiting for them
// until deadline or until parent ends, unless maxWaiting requests wait
// already, and returns what it reserved, to give back. n beyond the whole
// budget takes all of it. A nil budget bounds nothing.
func (b *bodyBudget) take(parent context.Context, deadline time.Time, n int64) (int64, error) {
	return b.reserve(parent, deadline, n, true)
}

// takeMore is take for a request whose body is under way: it waits
// whatever the number of waiters, for refusing it would cut a body the
// gateway has begun to pass on, and such requests are bounded already by
// the budget they took first.
func (b *bodyBudget) takeMore(parent context.Context, deadline time.Time, n int64) (int64, error) {
	return b.reserve(parent, deadline, n, false)
}

func (b *bodyBudget) reserve(parent context.Context, deadline time.Time, n int64, bounded bool) (int64, error) {
	if b == nil || n < budgetedBuf {
		return 0, nil
	}
	n = min(n, b.size)
	if !b.sem.TryAcquire(n) {
		if b.waiting.Add(1) > b.maxWaiting && bounded {
			b.waiting.Add(-1)
			b.refused.Add(1)
			return 0, fmt.Errorf("%w (%d bytes; %d requests wait for room already, the most allowed)", errBodyBudget, n, b.maxWaiting)
		}
		defer b.waiting.Add(-1)
		b.waits.Add(1)
		ctx, cancel := context.WithDeadline(parent, deadline)
		defer cancel()
		if err := b.sem.Acquire(ctx, n); err != nil {
			return 0, fmt.Errorf("%w (%d bytes, waited until the request's deadline or its end)", errBodyBudget, n)
		}
	}
	b.hold(n)
	return n, nil
}

// tryTake reserves n bytes if they are free now; it never waits, so that
// a request holding part of the budget cannot wait for more while others
// wait for its part. A nil budget has room for anything.
func (b *bodyBudget) tryTake(n int64) (int64, bool) {
	if b == nil {
		return 0, true
	}
	if !b.sem.TryAcquire(n) {
		return 0, false
	}
	b.hold(n)
	return n, true
}

func (b *bodyBudget) hold(n int64) {
	b.held.Add(n)
	b.mem.hold(n)
}

// give returns what take or tryTake reserved.
func (b *bodyBudget) give(n int64) {
	if n > 0 {
		b.held.Add(-n)
		b.sem.Release(n)
		b.mem.drop(n)
	}
}
