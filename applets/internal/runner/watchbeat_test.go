package runner

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
)

// The runner's watch of narun-apps hears from JetStream every
// store.WatchHeartbeat, so that one its cluster member took with it is
// made again within seconds, not nats.go's 10 to 15 (docs/CLUSTER.md).
func TestAppsWatchHeartbeat(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	startRunner(t, c, nil)
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	if beats := testutil.WatchHeartbeats(t, js, names.AppsBucket, 1); beats[0] != store.WatchHeartbeat {
		t.Fatalf("heartbeat of the watch of %s: %s, want %s", names.AppsBucket, beats[0], store.WatchHeartbeat)
	}
}
