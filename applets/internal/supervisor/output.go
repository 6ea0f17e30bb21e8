package supervisor

import (
	"bytes"
	"io"
	"sync"
	"unicode/utf8"
)

// splitLines reads r to its end and calls emit for each line without its
// line ending. A line longer than maxLine is emitted in parts, all but the
// last marked partial, so a program printing without newlines is still
// drained: the reader never stops reading, whatever it reads. A part ends
// before a character it would cut in two: each part is published as a JSON
// string on its own, where half a character becomes U+FFFD and is lost.
// What emit gets is valid until it returns.
func splitLines(r io.Reader, maxLine int, emit func(line []byte, partial bool)) {
	// Room for a line of maxLine bytes and its "\r\n": a line that fits is
	// never cut because its ending had not come yet.
	buf := make([]byte, maxLine+2)
	whole := func(line []byte) {
		if len(line) > maxLine {
			cut := runeCut(line[:maxLine])
			emit(line[:cut], true)
			line = line[cut:]
		}
		emit(line, false)
	}
	n := 0 // buf[:n] is read and not emitted yet
	for {
		m, err := r.Read(buf[n:])
		// Only the bytes just read can end a line: those before did not.
		start, from := 0, n
		n += m
		for {
			i := bytes.IndexByte(buf[from:n], '\n')
			if i < 0 {
				break
			}
			whole(bytes.TrimSuffix(buf[start:from+i], []byte("\r")))
			start = from + i + 1
			from = start
		}
		if start == 0 && n == len(buf) {
			start = runeCut(buf[:maxLine])
			emit(buf[:start], true)
		}
		n = copy(buf, buf[start:n])
		if err != nil {
			if n > 0 {
				whole(buf[:n])
			}
			return
		}
	}
}

// runeCut is where a part cut from b ends: before the last character when b
// holds only its first bytes, else at the end of b. Bytes that are not
// UTF-8 are cut anywhere: no more bytes would make them a character.
func runeCut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
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
