package cli

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// ClientLogging is NATSLogging for a connection that an applet opens for
// itself, with the way to close it: once closed, the connection's
// callbacks log nothing. nats.go runs its callbacks on a goroutine of its
// own, and says "connected" there after Connect returned; an applet that
// refuses its configuration right after connecting (a duplicate gateway
// route) closed the connection first, and the callback then logged "nats
// connected" with no url after the applet's error. closeConn returns once
// the callbacks left have run, or after a few seconds if one is stuck.
func ClientLogging(log *slog.Logger) (opts []nats.Option, closeConn func(*nats.Conn)) {
	var muted atomic.Bool
	closed := make(chan struct{})
	opts = append(NATSLogging(slog.New(muteHandler{log.Handler(), &muted})),
		// Last, so that it keeps a closed handler set before it.
		func(o *nats.Options) error {
			prev := o.ClosedCB
			o.ClosedCB = func(nc *nats.Conn) {
				if prev != nil {
					prev(nc)
				}
				close(closed)
			}
			return nil
		})
	closeConn = func(nc *nats.Conn) {
		muted.Store(true)
		nc.Close()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
	}
	return opts, closeConn
}

// muteHandler passes records on to Handler until muted is set.
type muteHandler struct {
	slog.Handler
	muted *atomic.Bool
}

func (h muteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.muted.Load() && h.Handler.Enabled(ctx, l)
}

func (h muteHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.muted.Load() {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h muteHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return muteHandler{h.Handler.WithAttrs(attrs), h.muted}
}

func (h muteHandler) WithGroup(name string) slog.Handler {
	return muteHandler{h.Handler.WithGroup(name), h.muted}
}
