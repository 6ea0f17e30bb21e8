package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// splitLines reads r to its end and calls emit for each line without its
// line ending. A line longer than maxLine is emitted in parts, all but the
// last marked partial, so a program printing without newlines is still
// drained: the reader never stops reading, whatever it reads.
func splitLines(r io.Reader, maxLine int, emit func(line []byte, partial bool)) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			emit(bytes.TrimRight(b, "\r\n"), false)
		case errors.Is(err, bufio.ErrBufferFull):
			emit(b, true)
		default:
			if len(b) > 0 {
				emit(b, false)
			}
			return
		}
	}
}

// ring keeps the last lines written to it.
type ring[T any] struct {
	mu    sync.Mutex
	items []T
	next  int
	full  bool
}

func newRing[T any](n int) *ring[T] { return &ring[T]{items: make([]T, n)} }

func (r *ring[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items[r.next] = v
	r.next = (r.next + 1) % len(r.items)
	if r.next == 0 {
		r.full = true
	}
}

// all returns the kept items, oldest first.
func (r *ring[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]T(nil), r.items[:r.next]...)
	}
	return append(append([]T(nil), r.items[r.next:]...), r.items[:r.next]...)
}
