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

// SetAliveEvery has the services started until t ends look for quiet
// requests every d, which allows the gateway a silence of 5d.
func SetAliveEvery(t testing.TB, d time.Duration) {
	old := aliveEvery
	aliveEvery = d
	t.Cleanup(func() { aliveEvery = old })
}
