package consumer

import (
	"testing"
	"time"
)

// SetPingInterval has the connections ListenAndServe opens until t ends
// ping the server every d, so that a dead link is given up after 3d.
func SetPingInterval(t testing.TB, d time.Duration) {
	old := pingInterval
	pingInterval = d
	t.Cleanup(func() { pingInterval = old })
}
