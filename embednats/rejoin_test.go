package embednats_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// What a cluster member may hold that the others do not know of is what
// nats-server deletes as an orphan once that member is current with a meta
// leader. A member that ran alone without [nats.cluster] is refused
// (TestClusterRefusesAStandaloneStore); these tests show that a member
// that is alone while configured as one, or is cut off, or has the wrong
// cluster name, or is new, has nothing of that kind: alone it can make no
// stream, and what it held before is there when it joins again.

// jsClusterNotAvailable is JetStream's "system temporarily unavailable":
// the server answers so once it has been without a meta leader for 10 s.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// refusesStreams waits until s refuses to make a stream for want of a
// meta leader, and fails the test if s makes it.
func refusesStreams(t *testing.T, s *embednats.Server) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	// A leader that lost its peers steps down only after 10 s without
	// them, and a server answers so only 10 s after its start.
	deadline := time.Now().Add(60 * time.Second)
	for {
		// A server that still counts on a leader leaves the request
		// unanswered: each try has its own bound.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "made-alone"})
		cancel()
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			t.Fatal("a member without its peers made a stream")
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jsClusterNotAvailable:
			return
		case time.Now().After(deadline):
			t.Fatalf("a member without its peers never refused to make a stream: %v", err)
		}
		// An error that comes at once (no responders while JetStream
		// starts) must not make this a busy loop on a shared machine.
		time.Sleep(retryPause)
	}
}

// retryPause paces the tries of a JetStream request that a cluster still
// forming may refuse at once, as waitFor paces its checks.
const retryPause = 20 * time.Millisecond

// putKey makes the bucket kv on the cluster s is a member of, retrying
// until the cluster can place its replicas, and puts key into it.
func putKey(t *testing.T, s *embednats.Server, kv jetstream.KeyValueConfig, key string) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A cluster just formed has no leader to answer, then cannot
		// place the replicas until it heard from each member, then has
		// refused its first stream with "error creating store for
		// stream" (a CI run): each is nats-server's, and passes.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		b, err := js.CreateKeyValue(ctx, kv)
		if err == nil {
			_, err = b.Put(ctx, key, []byte("v"))
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s in %s: %v", key, kv.Bucket, err)
		}
		time.Sleep(retryPause)
	}
}

// localMessages is how many messages s holds in its own copy of stream; -1
// when it holds none.
func localMessages(t *testing.T, s *embednats.Server, stream string) int {
	t.Helper()
	info, err := s.NATS().Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range info.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == stream {
				return int(sd.State.Msgs)
			}
		}
	}
	return -1
}

// holds waits until s holds msgs messages in its own copy of stream.
func holds(t *testing.T, s *embednats.Server, stream string, msgs int) {
	t.Helper()
	waitFor(t, 30*time.Second, "the member's copy of "+stream, func() bool { return localMessages(t, s, stream) == msgs })
}

// (a) A member whose peers never came up elects no leader on its own
// (JetStream's first election needs every member the routes list, and
// at least two), so it makes no stream. When it later joins two that
// formed a cluster of their own, listing only each other, and made a
// bucket, that bucket stays.
func TestClusterMemberStartedAloneMakesNoStreams(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	refusesStreams(t, c.Start(2))
	c.Stop(2)

	var pair []*embednats.Server
	for i := range 2 {
		cfg := c.Config(i)
		cfg.Cluster.Routes = cfg.Cluster.Routes[:2]
		pair = append(pair, natstest.StartConfig(t, cfg))
	}
	putKey(t, pair[0], jetstream.KeyValueConfig{Bucket: "specs", Replicas: 2}, "k")
	joined := c.Start(2)
	waitFor(t, 30*time.Second, "n3 current with the meta leader", func() bool {
		for _, s := range pair {
			info, err := s.NATS().Jsz(nil)
			if err != nil || info.Meta == nil || info.Meta.Leader != s.NATS().Name() {
				continue
			}
			for _, p := range info.Meta.Replicas {
				if p.Name == "n3" && p.Current {
					return true
				}
			}
		}
		return false
	})
	for _, s := range pair {
		if n := localMessages(t, s, "KV_specs"); n != 1 {
			t.Errorf("%s holds %d messages of KV_specs after n3 joined, want 1", s.NATS().Name(), n)
		}
	}
	js, err := jetstream.New(natstest.Connect(t, joined))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "specs")
	if err != nil {
		t.Fatalf("open specs through n3: %v", err)
	}
	if _, err := kv.Get(ctx, "k"); err != nil {
		t.Fatalf("get k through n3: %v", err)
	}
}

// (b) A member of a cluster whose two peers are down has no quorum: it
// makes no stream, and the copies it holds stay for when they are back.
func TestClusterMemberCutOffMakesNoStreams(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	putKey(t, c.Server(2), jetstream.KeyValueConfig{Bucket: "specs", Replicas: 3}, "k")
	holds(t, c.Server(2), "KV_specs", 1)
	c.Stop(0)
	c.Stop(1)
	refusesStreams(t, c.Server(2))
	if n := localMessages(t, c.Server(2), "KV_specs"); n != 1 {
		t.Fatalf("the cut-off member holds %d messages of KV_specs, want 1", n)
	}
	c.Start(0)
	c.Start(1)
	putKey(t, c.Server(2), jetstream.KeyValueConfig{Bucket: "specs", Replicas: 3}, "k2")
	for i := range 3 {
		holds(t, c.Server(i), "KV_specs", 2)
	}
}

// (c) A member started under another cluster name is refused by the
// others' routes and is alone as in (b); started again under the
// cluster's name it catches up, and so does a new one under its name
// with an empty data dir.
func TestClusterMemberUnderAnotherClusterNameRejoins(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	putKey(t, c.Server(0), jetstream.KeyValueConfig{Bucket: "specs", Replicas: 3}, "k")
	holds(t, c.Server(2), "KV_specs", 1)
	c.Stop(2)

	var logs syncBuffer
	misnamed := c.Config(2)
	misnamed.Cluster.Name = "other"
	misnamed.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := embednats.Start(misnamed)
	if err != nil {
		t.Fatal(err)
	}
	waitLogged(t, &logs, "does not match", 0)
	putKey(t, c.Server(0), jetstream.KeyValueConfig{Bucket: "specs", Replicas: 3}, "k2")
	if n := localMessages(t, s, "KV_specs"); n != 1 {
		t.Errorf("the member under another cluster name holds %d messages of KV_specs, want 1", n)
	}
	s.Shutdown()

	holds(t, c.Start(2), "KV_specs", 2)

	c.Stop(2)
	if err := os.RemoveAll(filepath.Join(c.Config(2).DataDir, "jetstream")); err != nil {
		t.Fatal(err)
	}
	holds(t, c.Start(2), "KV_specs", 2)
}
