package consumer

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// Header names of the narun HTTP-over-NATS protocol (docs/PROTOCOL.md).
// Every name starts with HeaderPrefix; the gateway drops client headers with
// that prefix so that a client cannot forge them.
const (
	HeaderPrefix = "Narun-"

	// Request head, gateway to service. Scheme defaults to "http" and
	// Proto to "HTTP/1.1"; in a request made by hand, Method to GET, Path
	// to "/" and Timeout to 30 s, which the gateway always sends. The
	// request id travels as the HTTP header X-Request-Id.
	HeaderMethod     = "Narun-Method"
	HeaderPath       = "Narun-Path"
	HeaderQuery      = "Narun-Query"
	HeaderHost       = "Narun-Host"
	HeaderScheme     = "Narun-Scheme"
	HeaderProto      = "Narun-Proto"
	HeaderRemoteAddr = "Narun-Remote-Addr"
	// HeaderTimeout is the time left in milliseconds: relative, so that
	// clocks of the gateway and the service need not agree.
	HeaderTimeout = "Narun-Timeout"
	// HeaderWindow bounds, in bytes, the response body that may travel
	// to the gateway ahead of its acks: the body in any one message of
	// the response, and that of the data frames not yet acked, together.
	// The gateway gives less of it when many requests are in flight, so
	// that clients that read slowly cannot fill its memory.
	HeaderWindow = "Narun-Window"

	// Response head, service to gateway; absent means 200.
	HeaderStatus = "Narun-Status"

	// HeaderBody set to BodyStream on a head says that more of the body
	// follows in frames; absent, the payload is the whole body.
	HeaderBody = "Narun-Body"
	// HeaderFrame marks every message after the heads; absent, a message
	// on the reply subject is the response head.
	HeaderFrame = "Narun-Frame"
	// HeaderAliveTimeout, on a FrameAlive, is how long in milliseconds
	// the gateway may wait for the service's next message of the exchange
	// before it takes the service for gone.
	HeaderAliveTimeout = "Narun-Alive-Timeout"
)

// Values of HeaderBody and HeaderFrame.
const (
	BodyStream = "stream"

	FramePull   = "pull"   // service asks for the next request body chunk
	FrameData   = "data"   // a body chunk; more follow
	FrameEnd    = "end"    // the last chunk (may be empty); its headers are trailers
	FrameAck    = "ack"    // gateway has written a response chunk to the client
	FrameCancel = "cancel" // the exchange is over: stop sending
	// FrameInterim is an interim (1xx) response, 103 Early Hints say, sent
	// before the response head with its status in HeaderStatus.
	FrameInterim = "interim"
	// FrameAlive says that the service still works on the request. Sent
	// after a silence, it lets the gateway give up on an instance that
	// died mid-request (HeaderAliveTimeout) where NATS tells nothing and
	// the client would wait until the route's timeout.
	FrameAlive = "alive"
)

// Micro error headers, as written by nats.go/micro and any NATS Micro
// implementation.
const (
	HeaderServiceError     = "Nats-Service-Error"
	HeaderServiceErrorCode = "Nats-Service-Error-Code"
)

// CancelSubject is where the gateway announces that nobody waits for a
// request any more (the client went away, the route's timeout passed, the
// body could not be read, the reply broke the protocol: docs/PROTOCOL.md
// §4); the payload is the reply subject of that request. Every instance of
// a service listens on it (no queue group).
func CancelSubject(serviceSubject string) string {
	return "_NARUN.cancel." + serviceSubject
}

// IsReservedSubject reports whether a subject is one a service may not be
// served on: the NATS server's own API ($JS, $KV, $SYS...), the replies to
// other clients (_INBOX.), and narun's own (_NARUN.). A request that the
// gateway sends there goes with the gateway's login, so Serve refuses such a
// Config.Subject, and narun refuses routes to them.
func IsReservedSubject(subject string) bool {
	return strings.HasPrefix(subject, "$") || strings.HasPrefix(subject, "_NARUN.") || strings.HasPrefix(subject, nats.InboxPrefix)
}

// literalSubject reports whether s names one NATS subject: no wildcard,
// no white space, no empty token.
func literalSubject(s string) bool {
	return !strings.ContainsAny(s, " \t\r\n*>") && !strings.HasPrefix(s, ".") && !strings.HasSuffix(s, ".") && !strings.Contains(s, "..")
}

// IsGRPC reports whether a request's Content-Type is gRPC's
// (application/grpc, application/grpc+proto, ...), which travels as
// HTTP/2 whatever carried it: gRPC is defined over HTTP/2 alone, and
// grpc-go's handler refuses another version. gRPC-Web
// (application/grpc-web) is not: it is made for HTTP/1.1 too.
func IsGRPC(contentType string) bool {
	rest, ok := strings.CutPrefix(contentType, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// IsReserved reports whether an HTTP header name belongs to the protocol.
func IsReserved(name string) bool {
	return len(name) >= len(HeaderPrefix) && strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix)
}
