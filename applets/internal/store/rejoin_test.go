package store

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A member that has just restarted drops some of the JetStream requests it
// gets in its first moments. A runner connected to it waits 3 s for
// narun-apps before it starts its cached specs, so a lookup must be sent
// again rather than wait out its caller's time: one that is not never gets
// its answer, whatever the time it is given, and this test's is generous,
// so that a slow machine does not fail it. Several restarts, because not
// every one loses a request.
func TestOpenOnARejoinedMemberIsAnswered(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	// Neither the JetStream leader nor the member asked: electing leaders
	// is not what this test times.
	restarted := (c.Leader() + 1) % 3
	asked := connect(t, c.Server((restarted+1)%3))
	openAll(t, asked, nil)
	for round := range 3 {
		c.Stop(restarted)
		testutil.Eventually(t, 20*time.Second, "every stream led by a running member", func() bool { return allLed(asked) })
		s := c.Start(restarted)
		nc := natstest.Connect(t, s)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		for _, b := range kvBuckets {
			if _, err := KV(ctx, js, b, nil); err != nil {
				t.Fatalf("restart %d: open %s %v after the restart: %v", round+1, b, time.Since(start), err)
			}
		}
		for _, b := range objectBuckets {
			if _, err := Objects(ctx, js, b, nil); err != nil {
				t.Fatalf("restart %d: open %s %v after the restart: %v", round+1, b, time.Since(start), err)
			}
		}
		if _, err := LogsStream(ctx, js, nil); err != nil {
			t.Fatalf("restart %d: open the logs stream %v after the restart: %v", round+1, time.Since(start), err)
		}
		cancel()
		nc.Close()
	}
}

func allLed(js jetstream.JetStream) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	streams := []string{names.LogsStream}
	for _, b := range kvBuckets {
		streams = append(streams, "KV_"+b)
	}
	for _, b := range objectBuckets {
		streams = append(streams, "OBJ_"+b)
	}
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil || s.CachedInfo().Cluster == nil || s.CachedInfo().Cluster.Leader == "" {
			return false
		}
	}
	return true
}
