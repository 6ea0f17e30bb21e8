package consumer

import (
	"sync"
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
}

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
// none waits.
func (q *queue) cancel(reply string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	seq, ok := q.waiting[reply]
	if !ok {
		return false
	}
	delete(q.waiting, reply)
	q.jobs[seq-q.base].m = nil
	return true
}
