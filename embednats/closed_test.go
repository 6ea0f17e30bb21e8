package embednats_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// The server keeps each closed client connection, with its
// subscriptions, for its monitoring's /connz?state=closed: every narun ctl
// call and app restart adds one, and nats-server's default of 10000 held
// about 10 MB on a device whose ctl is polled, more than its idle heap.
func TestClosedConnectionsKeptAreFew(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	const closed = embednats.ClosedConnectionsKept + 20
	for range closed {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	waitFor(t, 10*time.Second, "the server to count every connection closed", func() bool {
		v, err := s.NATS().Varz(nil)
		return err == nil && v.TotalConnections >= closed && v.Connections <= 1
	})
	cz, err := s.NATS().Connz(&server.ConnzOptions{State: server.ConnClosed})
	if err != nil {
		t.Fatal(err)
	}
	if cz.Total > embednats.ClosedConnectionsKept {
		t.Errorf("%d closed connections kept, want at most %d", cz.Total, embednats.ClosedConnectionsKept)
	}
}
