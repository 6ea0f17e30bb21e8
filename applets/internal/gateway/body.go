package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

var errBodyTooLarge = errors.New("request body too large")

// bodyTooLarge is the error of a request body past limit, in one wording
// whether its length said so or it ran past the limit as it was read.
func bodyTooLarge(limit int64) error {
	return fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, limit)
}

// Bodies of known length that fit in one message are read into a pooled
// buffer of the next power of two from 4 KiB: one pool per size, so a 64 KiB
// upload neither takes nor clears a message-sized buffer.
const (
	minSizeShift = 12
	maxSizeShift = 20
)

var sizedBufs [maxSizeShift - minSizeShift + 1]sync.Pool

// sizeShift is the power of two of the sized buffer for n bytes, beyond
// maxSizeShift when there is none.
func sizeShift(n int64) int {
	return max(bits.Len64(uint64(n-1)), minSizeShift)
}

// putSized gives a buffer of sizedBuf, its length untouched, back to its
// pool.
func putSized(b *[]byte) {
	sizedBufs[sizeShift(int64(len(*b)))-minSizeShift].Put(b)
}

func sizedBuf(shift int) (*[]byte, int) {
	i := shift - minSizeShift
	if b, ok := sizedBufs[i].Get().(*[]byte); ok {
		return b, i
	}
	b := make([]byte, 1<<shift)
	return &b, i
}

// bodySource cuts a client's request body into message-sized chunks, read
// only when the service pulls them.
type bodySource struct {
	r     io.Reader
	limit int64
	chunk int
	pool  *sync.Pool // of *[]byte, grown to chunk on use
	cl    int64
	read  int64
	eof   bool
	small *[]byte
	class int // sizedBufs index of small
	// big is a chunk, or until the body (a message stream: one message)
	// needed that much, a sized buffer from messageBuf up.
	big *[]byte
	// budget bounds the buffers of all bodies; what this one holds of it
	// is held, for small or big. A wait for it ends at deadline or with ctx.
	budget   *bodyBudget
	ctx      context.Context
	deadline time.Time
	held     int64
	// messages makes a chunk end where the client's gRPC message ends: in
	// a bidirectional stream the client sends its next message only after
	// the reply to this one, so filling a whole chunk would never finish.
	messages bool
	left     int64 // bytes of the current gRPC message not read yet
}

// first returns the part of the body that travels with the request head and
// whether more follows.
func (b *bodySource) first(contentLength int64) ([]byte, bool, error) {
	b.cl = contentLength
	if b.r == nil || b.r == http.NoBody || contentLength == 0 {
		b.eof = true
		return nil, false, nil
	}
	if shift := sizeShift(contentLength); contentLength > 0 && contentLength <= int64(b.chunk) && shift <= maxSizeShift {
		return b.firstSmall(int(contentLength), shift)
	}
	data, last, err := b.next()
	return data, !last, err
}

// firstSmall reads a body of n bytes that fits in the head, into a sized
// buffer that starts at messageBuf and doubles as the body arrives, the
// budget taken for each size only once the one before is full: a client
// that announces a large body and sends it slowly (or never) holds about
// what it sent, not what it announced. A doubling that finds no room in
// the budget at once does not wait for it, holding what it has (others
// may wait for that): the head carries what arrived, and the rest
// travels in pulls.
func (b *bodySource) firstSmall(n, shift int) ([]byte, bool, error) {
	cur := min(shift, sizeShift(messageBuf))
	held, err := b.budget.take(b.ctx, b.deadline, 1<<cur)
	if err != nil {
		return nil, false, err
	}
	b.held = held
	b.small, b.class = sizedBuf(cur)
	for {
		k, err := io.ReadFull(b.r, (*b.small)[b.read:min(n, 1<<cur)])
		b.read += int64(k)
		if err != nil {
			return nil, false, err
		}
		if b.read == int64(n) {
			b.eof = true
			return (*b.small)[:n], false, nil
		}
		extra, ok := b.budget.tryTake(1<<(cur+1) - 1<<cur)
		if !ok {
			return (*b.small)[:b.read], true, nil
		}
		b.held += extra
		cur++
		old := b.small
		b.small, b.class = sizedBuf(cur)
		copy(*b.small, (*old)[:b.read])
		putSized(old)
	}
}

// next reads the following chunk; last is true when it ends the body.
func (b *bodySource) next() (data []byte, last bool, err error) {
	if b.eof {
		return nil, true, nil
	}
	if b.big == nil {
		// Like a body in the head (firstSmall), a chunk starts at
		// messageBuf and grows as it fills.
		size := min(b.chunk, messageBuf)
		take := b.budget.take
		if b.read > 0 {
			// The head carried what firstSmall read.
			take = b.budget.takeMore
		}
		held, err := take(b.ctx, b.deadline, int64(size))
		if err != nil {
			return nil, false, err
		}
		b.held = held
		if size < b.chunk {
			b.big, _ = sizedBuf(sizeShift(int64(size)))
		} else {
			b.big = chunkBuf(b.pool, b.chunk)
		}
	}
	if b.messages {
		return b.nextMessage()
	}
	n := 0
	for {
		k, err := io.ReadFull(b.r, (*b.big)[n:])
		n += k
		b.read += int64(k)
		if b.read > b.limit {
			return nil, false, bodyTooLarge(b.limit)
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if b.cl > 0 && b.read < b.cl {
				return nil, false, io.ErrUnexpectedEOF
			}
			b.eof = true
		case err != nil:
			return nil, false, err
		case b.cl > 0 && b.read >= b.cl:
			b.eof = true
		}
		if b.eof || len(*b.big) == b.chunk || !b.growBig(n, 2*len(*b.big)) {
			return (*b.big)[:n], b.eof, nil
		}
	}
}

// growBig makes big, whose first n bytes it keeps, size bytes long, or a
// chunk when size is beyond the sized buffers or the chunk, if the budget
// has room for the difference now. It never waits, so that a request
// holding part of the budget cannot wait for more while others wait for
// its part.
func (b *bodySource) growBig(n, size int) bool {
	if size >= b.chunk || sizeShift(int64(size)) > maxSizeShift {
		size = b.chunk
	}
	extra, ok := b.budget.tryTake(int64(size - len(*b.big)))
	if !ok {
		return false
	}
	old := b.big
	if size < b.chunk {
		b.big, _ = sizedBuf(sizeShift(int64(size)))
	} else {
		b.big = chunkBuf(b.pool, b.chunk)
	}
	copy(*b.big, (*old)[:n])
	b.putBuf(old)
	b.held += extra
	return true
}

// chunkBuf is a buffer of pool, chunk long.
func chunkBuf(pool *sync.Pool, chunk int) *[]byte {
	buf := pool.Get().(*[]byte)
	// By capacity: an exchange with less room for the body may have
	// sliced a pooled buffer shorter.
	if cap(*buf) < chunk {
		*buf = make([]byte, chunk)
	}
	*buf = (*buf)[:chunk]
	return buf
}

// putBuf gives buf, big or one it replaced, back to its pool.
func (b *bodySource) putBuf(buf *[]byte) {
	if len(*buf) < b.chunk {
		putSized(buf)
	} else {
		b.pool.Put(buf)
	}
}

// grpcPrefix is the length of a gRPC message's prefix: a flag byte and
// the message length as a 32-bit big-endian number.
const grpcPrefix = 5

// messageBuf is the buffer a gRPC or Connect stream starts with, where
// others take a chunk: every gRPC call over HTTP/2 is read as a stream,
// and may stay open as long as the call lasts, holding its buffer and its
// part of max_body_memory, while most messages are small. A message that
// does not fit takes a chunk if max_body_memory has room for it at once,
// else it travels in more pulls.
const messageBuf = 64 << 10

// nextMessage reads the rest of the current gRPC message, or the prefix and
// start of the next one, up to a chunk: never a byte the client has not
// committed to send.
func (b *bodySource) nextMessage() ([]byte, bool, error) {
	buf := *b.big
	n := 0
	if b.left == 0 {
		k, err := io.ReadFull(b.r, buf[:grpcPrefix])
		b.read += int64(k)
		switch {
		case k == 0 && errors.Is(err, io.EOF):
			b.eof = true
			return nil, true, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, false, fmt.Errorf("gRPC message prefix cut after %d bytes", k)
		case err != nil:
			return nil, false, err
		}
		b.left = int64(binary.BigEndian.Uint32(buf[1:grpcPrefix]))
		n = grpcPrefix
	}
	if b.read+b.left > b.limit {
		return nil, false, bodyTooLarge(b.limit)
	}
	if len(buf) < b.chunk && int64(n)+b.left > int64(len(buf)) && b.growBig(n, b.chunk) {
		buf = *b.big
	}
	k, err := io.ReadFull(b.r, buf[n:n+int(min(b.left, int64(len(buf)-n)))])
	b.read += int64(k)
	b.left -= int64(k)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, false, fmt.Errorf("gRPC message cut %d bytes short", b.left)
	}
	if err != nil {
		return nil, false, err
	}
	return buf[:n+k], false, nil
}

// unread is how much of a body of known length is not read yet.
func (b *bodySource) unread() int64 {
	if b.eof || b.cl <= 0 {
		return 0
	}
	return b.cl - b.read
}

// sent returns the small buffer once the head is published: NATS copied it.
func (b *bodySource) sent() {
	if b.small != nil {
		sizedBufs[b.class].Put(b.small)
		b.small = nil
		b.budget.give(b.held)
		b.held = 0
	}
}

func (b *bodySource) release() {
	// The source sits in a pooled exchange: let the request go.
	b.r, b.ctx = nil, nil
	b.sent()
	if b.big != nil {
		b.putBuf(b.big)
		b.big = nil
		b.budget.give(b.held)
		b.held = 0
	}
}

// stripEscaped removes the route prefix from the escaped path, keeping the
// client's escaping of the rest (%2F stays %2F).
func stripEscaped(escaped string, rt *route) string {
	if rest, ok := strings.CutPrefix(escaped, rt.escPrefix); ok && (rest == "" || rest[0] == '/') {
		if rest == "" {
			return "/"
		}
		return rest
	}
	u, err := url.PathUnescape(escaped)
	if err != nil {
		u = escaped
	}
	return (&url.URL{Path: rt.stripped(u)}).EscapedPath()
}
