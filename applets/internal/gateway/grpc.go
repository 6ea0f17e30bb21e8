package gateway

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/narun/narun/consumer"
)

// isGRPC tells a gRPC request by its content type. gRPC-Web
// (application/grpc-web) may carry its status in the body, where no browser
// sees HTTP trailers, and is not one (rpcOf).
func isGRPC(contentType []string) bool {
	return len(contentType) > 0 && consumer.IsGRPC(contentType[0])
}

// isConnectStream tells a streaming call of the Connect protocol
// (connectrpc.com) by its content type, application/connect+<codec>: its
// messages are framed as gRPC's are, and its bidirectional calls need the
// same duplex handling. Its unary calls are plain HTTP requests. Its errors
// are HTTP statuses, which Connect clients read, so it is no isGRPC.
func isConnectStream(contentType []string) bool {
	return len(contentType) > 0 && strings.HasPrefix(contentType[0], "application/connect+")
}

// isGRPCWeb tells a gRPC-Web request by its content type.
func isGRPCWeb(contentType []string) bool {
	return len(contentType) > 0 && strings.HasPrefix(strings.TrimSpace(contentType[0]), "application/grpc-web")
}

// grpcTimeout reads a gRPC client's deadline from its Grpc-Timeout header:
// at most 8 digits and a unit (H, M, S, m, u, n), as gRPC's HTTP/2 mapping
// has it. ok is false for a missing or malformed value, which the gateway
// leaves to the service to judge; one beyond time.Duration's range is the
// longest duration, which no route's timeout exceeds.
func grpcTimeout(v []string) (d time.Duration, ok bool) {
	if len(v) == 0 || len(v[0]) < 2 || len(v[0]) > 9 {
		return 0, false
	}
	s := v[0]
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	n, ok := digits(s[:len(s)-1])
	if !ok {
		return 0, false
	}
	if n > int64(time.Duration(1<<63-1)/unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// clientDeadline is the deadline a gRPC or gRPC-Web client (Grpc-Timeout)
// or a Connect one (Connect-Timeout-Ms, milliseconds, at most 10 digits)
// sent with its request.
func clientDeadline(h http.Header, grpc bool) (time.Duration, bool) {
	if grpc {
		return grpcTimeout(h["Grpc-Timeout"])
	}
	if v := h["Connect-Timeout-Ms"]; len(v) > 0 {
		if len(v[0]) > 10 {
			return 0, false
		}
		ms, ok := digits(v[0])
		return time.Duration(ms) * time.Millisecond, ok
	}
	// gRPC-Web sends gRPC's header, over HTTP/1.1 too.
	if v := h["Grpc-Timeout"]; len(v) > 0 && isGRPCWeb(h["Content-Type"]) {
		return grpcTimeout(v)
	}
	return 0, false
}

// digits reads a number of at most 18 decimal digits, no sign: what both
// timeout headers allow, where strconv would take a sign too.
func digits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// gRPC status codes the gateway's own errors map to.
const (
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcCode is the gRPC status for a gateway error of HTTP status code, as
// gRPC's HTTP mapping has it, except that the gateway knows a 504 is a
// deadline, as is a 408 (the client's part of the exchange was too
// slow), and a 413 a message too large.
func grpcCode(code int) int {
	switch code {
	case http.StatusBadRequest:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return grpcUnimplemented
	case http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return grpcDeadlineExceeded
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return grpcUnavailable
	}
	return grpcUnknown
}

// writeGRPCStatus sets a trailers-only gRPC response: a gRPC client reads
// the status and message from these headers, where an HTTP error page would
// only give it "unexpected content-type".
func writeGRPCStatus(h http.Header, code int, msg string) {
	h.Del("Content-Length")
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(grpcCode(code)))
	h.Set("Grpc-Message", grpcPercentEncode(msg))
}

// grpcPercentEncode escapes a grpc-message value: every byte outside
// printable ASCII, and '%', as %XX.
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// rpcKind is how the gateway's own errors reach a client of an RPC
// protocol other than gRPC: connect-go and gRPC-Web clients read a bare
// HTTP status by gRPC's HTTP mapping, which makes a 504 unavailable, a
// code retry policies retry, where the gateway means a deadline.
type rpcKind uint8

const (
	rpcNone          rpcKind = iota
	rpcGRPCWeb               // trailers-only, as gRPC, under gRPC-Web's content type
	rpcConnectUnary          // the HTTP status with a JSON error body
	rpcConnectStream         // HTTP 200 and an end-stream message holding the error
)

// rpcOf tells a gRPC-Web request and a Connect one, unary or streaming, and
// the content type of an error response to it: the request's, without its
// parameters, which the client checks against the codec it asked for.
func rpcOf(r *http.Request) (rpcKind, string) {
	if r == nil {
		return rpcNone, ""
	}
	if ct := r.Header["Content-Type"]; len(ct) > 0 {
		base, _, _ := strings.Cut(ct[0], ";")
		base = strings.TrimSpace(base)
		if isGRPCWeb(ct) {
			return rpcGRPCWeb, base
		}
		if isConnectStream(ct) {
			return rpcConnectStream, base
		}
	}
	// connect-go sends Connect-Protocol-Version with every POST; a unary
	// call made as a GET says connect=v1 and its encoding in its query instead.
	if len(r.Header["Connect-Protocol-Version"]) > 0 || r.Method == http.MethodGet && strings.Contains(r.URL.RawQuery, "connect=v1") && strings.Contains(r.URL.RawQuery, "encoding=") {
		return rpcConnectUnary, ""
	}
	return rpcNone, ""
}

// connectCodes names the gRPC codes grpcCode gives, as Connect spells them.
var connectCodes = map[int]string{
	grpcUnknown:           "unknown",
	grpcDeadlineExceeded:  "deadline_exceeded",
	grpcPermissionDenied:  "permission_denied",
	grpcResourceExhausted: "resource_exhausted",
	grpcUnimplemented:     "unimplemented",
	grpcInternal:          "internal",
	grpcUnavailable:       "unavailable",
	grpcUnauthenticated:   "unauthenticated",
}

// rpcFrames follows the length-prefixed messages of a gRPC-Web or
// Connect response body as the gateway writes it: where one ends, an
// error message of the gateway's can follow.
type rpcFrames struct {
	kind rpcKind // rpcNone: not followed
	// head holds the bytes of a message's 5-byte prefix seen so far;
	// left, those of its payload still to come.
	head  [5]byte
	headN int
	left  uint32
	// ended is set once the service wrote its own last message (gRPC-Web
	// trailers, Connect's end of stream): nothing may follow it.
	ended bool
}

// follow starts following the response to r, when r is a streaming
// gRPC-Web (binary: grpc-web-text is base64 text) or Connect call.
func (f *rpcFrames) follow(r *http.Request) {
	kind, contentType := rpcOf(r)
	if kind == rpcConnectStream || kind == rpcGRPCWeb && !strings.HasPrefix(contentType, "application/grpc-web-text") {
		f.kind = kind
	}
}

func (f *rpcFrames) feed(p []byte) {
	if f.kind == rpcNone {
		return
	}
	for len(p) > 0 {
		if f.headN < len(f.head) {
			n := copy(f.head[f.headN:], p)
			f.headN += n
			p = p[n:]
			if f.headN == len(f.head) {
				f.left = binary.BigEndian.Uint32(f.head[1:])
				// gRPC-Web marks its trailers with the top bit of the
				// flags, Connect its end of stream with the second.
				if f.kind == rpcGRPCWeb && f.head[0]&0x80 != 0 || f.kind == rpcConnectStream && f.head[0]&0x02 != 0 {
					f.ended = true
				}
			}
			continue
		}
		n := min(uint32(len(p)), f.left)
		f.left -= n
		p = p[n:]
		if f.left == 0 {
			f.headN = 0
		}
	}
	if f.headN == len(f.head) && f.left == 0 {
		f.headN = 0
	}
}

// between reports whether the body written so far ends where a message
// did, and a message of the gateway's may follow.
func (f *rpcFrames) between() bool {
	return f.kind != rpcNone && f.headN == 0 && f.left == 0 && !f.ended
}

// rpcEndMessage is the last message of a gRPC-Web or Connect stream,
// carrying the gateway's error of HTTP status code.
func rpcEndMessage(kind rpcKind, code int, msg string) []byte {
	var payload []byte
	flags := byte(0x80)
	if kind == rpcGRPCWeb {
		payload = []byte("grpc-status: " + strconv.Itoa(grpcCode(code)) + "\r\ngrpc-message: " + grpcPercentEncode(msg) + "\r\n")
	} else {
		flags = 0x02
		payload = append(append([]byte(`{"error":`), connectError(code, msg)...), '}')
	}
	m := make([]byte, 5, 5+len(payload))
	m[0] = flags
	binary.BigEndian.PutUint32(m[1:], uint32(len(payload)))
	return append(m, payload...)
}

// connectError is the JSON of a Connect error for the gateway's HTTP
// status code.
func connectError(code int, msg string) []byte {
	e, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{connectCodes[grpcCode(code)], msg})
	return e
}

// writeRPCError answers a request of kind with the gateway's error of HTTP
// status code, as its protocol carries an error, and returns the bytes of
// body written.
func writeRPCError(w http.ResponseWriter, kind rpcKind, contentType string, code int, msg string) int64 {
	h := w.Header()
	h.Del("Content-Length")
	if kind == rpcGRPCWeb {
		writeGRPCStatus(h, code, msg)
		h.Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		return 0
	}
	h.Set("X-Content-Type-Options", "nosniff")
	if kind == rpcConnectUnary {
		e := connectError(code, msg)
		h.Set("Content-Type", "application/json")
		w.WriteHeader(code)
		n, _ := w.Write(e)
		return int64(n)
	}
	h.Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	n, _ := w.Write(rpcEndMessage(kind, code, msg))
	return int64(n)
}
