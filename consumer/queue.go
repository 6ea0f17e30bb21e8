package consumer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// queue holds the requests that arrived, with when they arrived, until a
// worker takes them. Keeping them here rather than in the subscription's
// buffer means the wait counts against a request's timeout, and a request
// that timed out or was cancelled while it waited never reaches the
// handler: under overload, the work done is work a client still waits for.
type queue struct {
	mu   sync.Mutex
	jobs []job
	head int
	// base is the sequence number of jobs[0]; waiting finds a queued job
	// by its reply subject, as a sequence number, so that a cancel takes
	// it out without a search.
	base    uint64
	waiting map[string]uint64
	// handoff gives a job straight to a worker that said it is idle:
	// a channel handoff runs the worker next, where waking it by other
	// means costs a quarter more per request.
	handoff chan job
	// idle is how many workers wait on handoff and were not given a job.
	idle    int
	workers int
	// stopped is set once the workers are told to finish: a request
	// dispatched after it is dropped, as its connection is gone.
	stopped bool
	// early are cancels that matched no request: a cancel may overtake
	// its request (the two come on different subscriptions), or land
	// after a worker took the request and before its handler is
	// registered. Each is kept for earlyFor, in arrival order in
	// earlyOrder.
	early      map[string]time.Time
	earlyOrder []earlyCancel
	// earlyCount is len(early), read without q.mu: serve looks for a kept
	// cancel only when there is one, not on every request.
	earlyCount atomic.Int32
}

type earlyCancel struct {
	reply string
	at    time.Time
}

// earlyFor is how long a cancel that matched nothing is kept. A cancel
// that overtook its request is matched within moments; every instance
// also hears the cancels of requests other instances served, which are
// never matched, so a few seconds bound the memory they take.
const earlyFor = 5 * time.Second

// job is a request as it arrived; a nil m is a job cancelled while queued.
type job struct {
	m       *nats.Msg
	arrived time.Time
}

// push queues j; q.mu must be held.
func (q *queue) push(j job) {
	q.waiting[j.m.Reply] = q.base + uint64(len(q.jobs))
	q.jobs = append(q.jobs, j)
}

// pop takes the oldest job still wanted; false when none is left. q.mu
// must be held.
func (q *queue) pop() (job, bool) {
	for q.head < len(q.jobs) {
		j, seq := q.jobs[q.head], q.base+uint64(q.head)
		q.jobs[q.head] = job{}
		q.head++
		q.compact()
		if j.m == nil {
			continue
		}
		if s, ok := q.waiting[j.m.Reply]; ok && s == seq {
			delete(q.waiting, j.m.Reply)
		}
		return j, true
	}
	return job{}, false
}

// compact gives back the slots of taken jobs: all of them when the queue
// is empty, else once they are half of it, so that a queue that never
// empties under overload does not grow without end.
func (q *queue) compact() {
	switch {
	case q.head == len(q.jobs):
		q.base += uint64(len(q.jobs))
		q.jobs, q.head = q.jobs[:0], 0
	case q.head >= 64 && 2*q.head >= len(q.jobs):
		n := copy(q.jobs, q.jobs[q.head:])
		clear(q.jobs[n:])
		q.jobs = q.jobs[:n]
		q.base += uint64(q.head)
		q.head = 0
	}
}

// cancel drops the queued job whose reply subject is reply; false if
// none waits, and the cancel is then kept for a request that comes later.
func (q *queue) cancel(reply string, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	seq, ok := q.waiting[reply]
	if !ok {
		q.remember(reply, now)
		return false
	}
	delete(q.waiting, reply)
	q.jobs[seq-q.base].m = nil
	return true
}

// remember keeps an unmatched cancel, and forgets those past earlyFor;
// q.mu must be held.
func (q *queue) remember(reply string, now time.Time) {
	for len(q.earlyOrder) > 0 && now.Sub(q.earlyOrder[0].at) > earlyFor {
		old := q.earlyOrder[0]
		if q.early[old.reply] == old.at {
			delete(q.early, old.reply)
		}
		q.earlyOrder[0] = earlyCancel{}
		q.earlyOrder = q.earlyOrder[1:]
	}
	if len(q.earlyOrder) == 0 {
		q.earlyOrder = nil
	}
	q.early[reply] = now
	q.earlyOrder = append(q.earlyOrder, earlyCancel{reply, now})
	q.earlyCount.Store(int32(len(q.early)))
}

// cancelled takes a kept cancel for reply; q.mu must be held.
func (q *queue) cancelled(reply string) bool {
	if len(q.early) == 0 {
		return false
	}
	if _, ok := q.early[reply]; !ok {
		return false
	}
	delete(q.early, reply)
	q.earlyCount.Store(int32(len(q.early)))
	return true
}

// takeEarly takes a kept cancel for reply, locking q.mu only when one is
// kept at all.
func (q *queue) takeEarly(reply string) bool {
	if q.earlyCount.Load() == 0 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cancelled(reply)
}
