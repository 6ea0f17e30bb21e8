package gateway

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// errExchangeOver ends a wait for request body data once the exchange has
// ended; the pull that waited is refused.
var errExchangeOver = errors.New("the exchange is over")

// bodyStream forwards a request body of unknown length (HTTP/1.1 chunked, or
// HTTP/2 without content-length) as it arrives. A goroutine reads it into one
// buffer and each pull takes all that came since the one before:
// a client that trickles (a log shipped line by line, `curl -T -` reading a
// pipe) reaches the service as it sends, instead of a chunk or the end of
// the body later, and one that sends fast fills whole chunks while the
// previous chunk travels. The buffer starts at messageBuf, as most such
// bodies are small, and becomes a chunk the first time it fills up, if
// max_body_memory has room for that at once.
type bodyStream struct {
	r     io.Reader
	limit int64
	buf   *[]byte
	pool  *sync.Pool
	chunk int
	// held is what buf holds of budget, given back with it.
	budget *bodyBudget
	held   int64
	// users counts the reader and the exchange: the last to be done with
	// buf gives it back to the pool.
	users atomic.Int32

	arrived chan struct{} // the reader added data or ended
	// begin, when not nil, holds the reader back until the first pull
	// closes it (once): the client waits for 100 Continue, which net/http
	// sends on the first read.
	begin     chan struct{}
	beginOnce sync.Once
	space     chan struct{} // a taker gave part of buf back
	over      chan struct{} // closed when the exchange ends

	mu sync.Mutex
	// buf[start:end] has arrived and is not taken yet, except its first
	// lent bytes, which a taker is publishing: only the reader moves end
	// or moves data, and only when nothing is lent.
	start, end, lent int
	read             int64
	err              error // io.EOF once the body ended
}

// streamStart is the size a stream's buffer starts at, and takes of
// max_body_memory, for chunks of chunk bytes.
func streamStart(chunk int) int {
	return min(chunk, messageBuf)
}

// startStream starts reading r, or with deferred, starts once the first
// pull asks for the body. Its buffer, streamStart(chunk) long, has held of
// budget, which it gives back with the buffer.
func startStream(r io.Reader, limit int64, chunk int, pool *sync.Pool, deferred bool, budget *bodyBudget, held int64) *bodyStream {
	var buf *[]byte
	if size := streamStart(chunk); size < chunk {
		buf, _ = sizedBuf(sizeShift(int64(size)))
		*buf = (*buf)[:size]
	} else {
		buf = chunkBuf(pool, chunk)
	}
	s := &bodyStream{r: r, limit: limit, buf: buf, pool: pool, chunk: chunk, budget: budget, held: held,
		arrived: make(chan struct{}, 1), space: make(chan struct{}, 1), over: make(chan struct{})}
	if deferred {
		s.begin = make(chan struct{})
	}
	s.users.Store(2)
	go s.run()
	return s
}

// run reads the body until it ends, fails or the exchange is over. Over
// HTTP/1 a read cannot be interrupted, so it may outlive the exchange until
// the client sends more or the connection's read deadline (the exchange's)
// passes.
func (s *bodyStream) run() {
	defer s.done()
	if s.begin != nil {
		select {
		case <-s.begin:
		case <-s.over:
			return
		}
	}
	buf := *s.buf
	for {
		s.mu.Lock()
		if s.lent == 0 && s.start > 0 && (s.start == s.end || s.end == len(buf)) {
			s.end = copy(buf, buf[s.start:s.end])
			s.start = 0
		}
		if s.lent == 0 && s.end == len(buf) && len(buf) < s.chunk {
			buf = s.grow(buf)
		}
		end := s.end
		s.mu.Unlock()
		if end == len(buf) {
			select {
			case <-s.space:
				continue
			case <-s.over:
				return
			}
		}
		select {
		case <-s.over:
			return
		default:
		}
		n, err := s.r.Read(buf[end:])
		s.mu.Lock()
		s.end += n
		s.read += int64(n)
		if s.read > s.limit {
			err = bodyTooLarge(s.limit)
		}
		s.err = err
		s.mu.Unlock()
		notify(s.arrived)
		if err != nil {
			return
		}
	}
}

// grow makes buf, full and lent to no taker, a chunk if the budget has
// room for it now, and returns the buffer to read into. s.mu is held.
func (s *bodyStream) grow(buf []byte) []byte {
	extra, ok := s.budget.tryTake(int64(s.chunk - len(buf)))
	if !ok {
		return buf
	}
	small := s.buf
	s.buf = chunkBuf(s.pool, s.chunk)
	copy(*s.buf, buf)
	putSized(small)
	s.held += extra
	return *s.buf
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// head waits up to wait for the body to end or fill a chunk, and takes
// what arrived by then, perhaps nothing: a small body sent with the request
// travels in the head, and one still coming costs the service a pull.
func (s *bodyStream) head(timer *time.Timer, wait time.Duration) (data []byte, more bool, err error) {
	timer.Reset(wait)
	defer timer.Stop()
	for !s.endedOrFull() {
		select {
		case <-s.arrived:
		case <-timer.C:
			return s.take()
		}
	}
	return s.take()
}

func (s *bodyStream) endedOrFull() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil || s.end-s.start == len(*s.buf)
}

// next waits until some of the body arrives, or it ends, and takes all
// there is; last is true when nothing follows.
func (s *bodyStream) next() (data []byte, last bool, err error) {
	if s.begin != nil {
		s.beginOnce.Do(func() { close(s.begin) })
	}
	for {
		s.mu.Lock()
		ready := s.err != nil || s.end > s.start
		s.mu.Unlock()
		if ready {
			data, more, err := s.take()
			return data, !more, err
		}
		select {
		case <-s.arrived:
		case <-s.over:
			return nil, false, errExchangeOver
		}
	}
}

// take lends the data that arrived until release: the caller publishes it
// (NATS copies it) and gives it back.
func (s *bodyStream) take() (data []byte, more bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil && s.err != io.EOF {
		return nil, false, s.err
	}
	s.lent = s.end - s.start
	return (*s.buf)[s.start:s.end], s.err == nil, nil
}

func (s *bodyStream) release() {
	s.mu.Lock()
	s.start += s.lent
	s.lent = 0
	s.mu.Unlock()
	notify(s.space)
}

// stop tells the stream the exchange is over: waits end, the reader stops
// at its next turn. The exchange calls done once nothing it took is still
// being published.
func (s *bodyStream) stop() {
	close(s.over)
}

func (s *bodyStream) done() {
	if s.users.Add(-1) == 0 {
		if len(*s.buf) < s.chunk {
			putSized(s.buf)
		} else {
			s.pool.Put(s.buf)
		}
		s.budget.give(s.held)
	}
}
