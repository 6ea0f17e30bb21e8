package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// isGRPC tells a gRPC request by its content type. gRPC-Web
// (application/grpc-web) carries its status in the body and is not one.
func isGRPC(contentType []string) bool {
	if len(contentType) == 0 {
		return false
	}
	ct := contentType[0]
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// isConnectStream tells a streaming call of the Connect protocol
// (connectrpc.com) by its content type, application/connect+<codec>: its
// messages are framed as gRPC's are, and its bidirectional calls need the
// same duplex handling. Its unary calls are plain HTTP requests. Its errors
// are HTTP statuses, which Connect clients read, so it is no isGRPC.
func isConnectStream(contentType []string) bool {
	return len(contentType) > 0 && strings.HasPrefix(contentType[0], "application/connect+")
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

// clientDeadline is the deadline a gRPC client (Grpc-Timeout) or a Connect
// one (Connect-Timeout-Ms, milliseconds, at most 10 digits) sent with its
// request.
func clientDeadline(h http.Header, grpc bool) (time.Duration, bool) {
	if grpc {
		return grpcTimeout(h["Grpc-Timeout"])
	}
	v := h["Connect-Timeout-Ms"]
	if len(v) == 0 || len(v[0]) > 10 {
		return 0, false
	}
	ms, ok := digits(v[0])
	return time.Duration(ms) * time.Millisecond, ok
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
