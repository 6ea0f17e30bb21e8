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
// its deadline; its client's body waits in the kernel meanwhile.
type bodyBudget struct {
	size  int64
	sem   *semaphore.Weighted
	held  atomic.Int64
	waits atomic.Uint64
}

func newBodyBudget(size int64) *bodyBudget {
	return &bodyBudget{size: size, sem: semaphore.NewWeighted(size)}
}

// defaultBodyMemory is a sixteenth of the memory narun may use: Go's soft
// limit when it has one (narun sets it from its cgroup), else the
// machine's RAM. With the fourfold cost above, that is a quarter of it.
func defaultBodyMemory() int64 {
	limit := debug.SetMemoryLimit(-1)
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		if ram := int64(si.Totalram) * int64(si.Unit); ram > 0 && ram < limit {
			limit = ram
		}
	}
	if limit == math.MaxInt64 {
		return 0
	}
	return max(limit/16, 4<<20)
}

// take reserves n bytes, waiting for them until deadline or until parent
// ends, and returns what it reserved, to give back. n beyond the whole
// budget takes all of it. A nil budget bounds nothing.
func (b *bodyBudget) take(parent context.Context, deadline time.Time, n int64) (int64, error) {
	if b == nil || n < budgetedBuf {
		return 0, nil
	}
	n = min(n, b.size)
	if !b.sem.TryAcquire(n) {
		b.waits.Add(1)
		ctx, cancel := context.WithDeadline(parent, deadline)
		defer cancel()
		if err := b.sem.Acquire(ctx, n); err != nil {
			return 0, fmt.Errorf("%w (%d bytes, waited until the request's deadline or its end)", errBodyBudget, n)
		}
	}
	b.held.Add(n)
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
	b.held.Add(n)
	return n, true
}

// give returns what take or tryTake reserved.
func (b *bodyBudget) give(n int64) {
	if n > 0 {
		b.held.Add(-n)
		b.sem.Release(n)
	}
}
