package store

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// codeClusterNotAvailable is nats-server's JSClusterNotAvailErr ("JetStream
// system temporarily unavailable"), a member's answer while its group has
// no leader.
const codeClusterNotAvailable = 10008

// Unanswered reports whether err means JetStream did not act on a request,
// or did not say so in time, in a way that may pass: nothing took it (no
// responders; nats.go's "JetStream not enabled" for account info), nothing
// answered in time, the server is reconnecting, or a server said its group
// has no leader now.
func Unanswered(err error) bool {
	// Key listings, watches and object reads create their consumer
	// through nats.go's older JetStream API, whose errors are of its own
	// type: without it, a listing during a leader election failed at once
	// instead of being sent again.
	var legacy *nats.APIError
	return Unsure(err) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		apiCode(err) == codeClusterNotAvailable ||
		errors.As(err, &legacy) && legacy.ErrorCode == codeClusterNotAvailable
}

// Unsure reports whether err leaves open whether the request was carried
// out: it was sent, but its answer did not come.
func Unsure(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}
