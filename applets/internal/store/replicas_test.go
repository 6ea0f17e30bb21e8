package store

import (
	"context"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

var (
	kvBuckets     = []string{names.AppsBucket, names.NodesBucket, names.RoutesBucket, names.SecretsBucket}
	objectBuckets = []string{names.BinariesBucket, names.FilesBucket}
)

// openAll opens (or creates) every narun bucket and stream the way the
// applets do, logging to log (nil discards), and reports each one's
// replicas by stream name.
func openAll(t *testing.T, js jetstream.JetStream, log *slog.Logger) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := map[string]int{}
	for _, b := range kvBuckets {
		kv, err := KV(ctx, js, b, log)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got["KV_"+b] = st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas
	}
	for _, b := range objectBuckets {
		obs, err := Objects(ctx, js, b, log)
		if err != nil {
			t.Fatal(err)
		}
		st, err := obs.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got["OBJ_"+b] = st.Replicas()
	}
	s, err := LogsStream(ctx, js, log)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got[names.LogsStream] = info.Config.Replicas
	return got
}

func all(n int) map[string]int {
	want := map[string]int{names.LogsStream: n}
	for _, b := range kvBuckets {
		want["KV_"+b] = n
	}
	for _, b := range objectBuckets {
		want["OBJ_"+b] = n
	}
	return want
}

func connect(t *testing.T, s *embednats.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A member that is down when the buckets are created does not cost them a
// replica: the cluster, which knows its members, places one on it. A bucket
// an older client created with fewer gets the missing ones when opened.
func TestReplicasWithAMemberDown(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	// Not the leader: a new leader may take seconds to be elected, which
	// is not what this test is about.
	leader := c.Leader()
	down := (leader + 1) % 3
	js := connect(t, c.Server(leader))
	ctx := context.Background()
	// The cluster places replicas on a member that is down only because
	// WaitPlaceable made it hear what the member can hold.
	c.Stop(down)
	testutil.Eventually(t, 10*time.Second, "the JetStream leader seeing the member down", func() bool { return c.LeaderSeesDown(down) })
	cfg, err := KVConfig(names.AppsBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Replicas = 1
	if _, err := js.CreateKeyValue(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := openAll(t, js, nil); !maps.Equal(got, all(3)) {
		t.Fatalf("opened with a member down: %v, want 3 replicas each", got)
	}
}

// Buckets created where the cluster cannot place three replicas get what
// it can, and opening them again neither fails nor lowers them; a later
// open raises them once it can (TestReplicasWithAMemberDown raises one
// made with a single replica). A cluster of two members is such a cluster,
// deterministically: one restarted with a member missing is too, but its
// JetStream election took more than a minute in CI runs.
func TestReplicasFollowTheCluster(t *testing.T) {
	c := natstest.StartCluster(t, 2)
	c.WaitPlaceable(60 * time.Second)
	js := connect(t, c.Server(0))
	if got := openAll(t, js, nil); !maps.Equal(got, all(2)) {
		t.Fatalf("created in a cluster of two: %v, want 2 replicas each", got)
	}
	if got := openAll(t, js, nil); !maps.Equal(got, all(2)) {
		t.Fatalf("opened again: %v", got)
	}
}

// A server that is no cluster member keeps one copy, whether it has no
// cluster name or one of its own (a leaf node's).
func TestReplicasAlone(t *testing.T) {
	for name, cfg := range map[string]embednats.Config{
		"standalone": {},
		"leaf node":  {ServerName: "leaf", Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + testutil.FreeAddr(t)}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			js := connect(t, natstest.StartConfig(t, cfg))
			for range 2 {
				if got := openAll(t, js, nil); !maps.Equal(got, all(1)) {
					t.Fatalf("%v, want 1 replica each", got)
				}
			}
		})
	}
}

// A leaf device with a [nats] server_name gets a cluster name from
// nats-server, its server_name, but runs JetStream alone: its buckets
// have the one copy there is, and opening them says nothing of replicas,
// at their creation or after.
func TestLeafBucketsQuietAboutReplicas(t *testing.T) {
	hubLeaf := testutil.FreeAddr(t)
	natstest.StartConfig(t, embednats.Config{Leafnodes: embednats.Leafnodes{Listen: hubLeaf}, JetStreamDomain: "hub"})
	leaf := natstest.StartConfig(t, embednats.Config{ServerName: "shop-17", JetStreamDomain: "shop",
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + hubLeaf}}}, Local: names.LeafLocal}})
	js := connect(t, leaf)
	var out testutil.LogBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for range 3 {
		if got := openAll(t, js, log); !maps.Equal(got, all(1)) {
			t.Fatalf("%v, want 1 replica each", got)
		}
	}
	for _, said := range []string{"fewer replicas", "replicas raised"} {
		if strings.Contains(out.String(), said) {
			t.Errorf("a leaf device's buckets logged %q:\n%s", said, out.String())
		}
	}
}

// A leader just elected refuses every stream, whatever its replicas, until
// it has heard what the members can hold; opening the buckets then waits
// for it rather than failing.
func TestCreateRightAfterAnElection(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	// As long as WaitPlaceable's callers give it: a first election on a
	// loaded machine took more than 10 s.
	testutil.Eventually(t, 60*time.Second, "a JetStream leader", func() bool { return c.Leader() >= 0 })
	openAll(t, connect(t, c.Server(c.Leader())), nil)
}
