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
	// handoff gives a job straight to a worker that said it is idle:
	// a channel handoff runs the worker next, where waking it by other
	// means costs a quarter more per request.
	handoff chan job
	// idle is how many workers wait on handoff and were not given a job.
	idle    int
	workers int
}

type job struct {
	m       *nats.Msg
	arrived time.Time
}

// pop takes the oldest job; q.mu must be held and the queue not empty.
func (q *queue) pop() job {
	j := q.jobs[q.head]
	q.jobs[q.head] = job{}
	q.head++
	if q.head == len(q.jobs) {
		q.jobs, q.head = q.jobs[:0], 0
	}
	return j
}

// remove takes the waiting job whose reply subject is reply, if any.
func (q *queue) remove(reply string) (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := q.head; i < len(q.jobs); i++ {
		if j := q.jobs[i]; j.m.Reply == reply {
			copy(q.jobs[i:], q.jobs[i+1:])
			q.jobs[len(q.jobs)-1] = job{}
			q.jobs = q.jobs[:len(q.jobs)-1]
			if q.head == len(q.jobs) {
				q.jobs, q.head = q.jobs[:0], 0
			}
			return j, true
		}
	}
	return job{}, false
}
