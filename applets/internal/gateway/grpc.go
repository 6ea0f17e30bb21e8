package gateway

import (
	"net/http"
	"strconv"
	"strings"
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
