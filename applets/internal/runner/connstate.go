package runner

import (
	"context"

	"github.com/nats-io/nats.go"
)

// followConn keeps r.connected as nats.go's status events say, until ctx
// ends. Asking the connection itself (IsConnected) takes its lock, which
// nats.go holds through a whole reconnect handshake: against a server that
// accepts and never answers, for as long as the dial timeout, and a
// restart that asked would wait that long for nothing it needs.
func (r *Runner) followConn(ctx context.Context) {
	nc := r.opts.Conn
	events := nc.StatusChanged()
	// Every change after this read is an event, read in order after it.
	r.connected.Store(nc.IsConnected())
	go func() {
		defer nc.RemoveStatusListener(events)
		for {
			select {
			case st, ok := <-events:
				if !ok {
					return
				}
				r.connected.Store(st == nats.CONNECTED)
			case <-ctx.Done():
				return
			}
		}
	}()
}
