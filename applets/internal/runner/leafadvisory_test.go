package runner

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// A leaf device creating its own narun-apps, at its first start or after
// a kv rm, must not tell the hub's runner (nor the other leaves') that
// their bucket was created anew: each would drop its watch and list every
// app again, and log a re-creation that did not happen.
func TestLeafBucketCreationStaysOnTheLeaf(t *testing.T) {
	t.Parallel()
	hubLeaf := natstest.FreeAddr(t)
	hub := natstest.StartConfig(t, embednats.Config{Leafnodes: embednats.Leafnodes{Listen: hubLeaf}})
	leaf := natstest.StartConfig(t, embednats.Config{ServerName: "shop-17", JetStreamDomain: "shop-17",
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + hubLeaf}}}, Local: names.LeafLocal}})
	hubConn, leafConn := natstest.Connect(t, hub), natstest.Connect(t, leaf)
	leaked := make(chan *nats.Msg, 16)
	for _, subj := range recreatedSubjects {
		sub, err := hubConn.ChanSubscribe(subj, leaked)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	marker, err := hubConn.SubscribeSync("marker")
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Unsubscribe()
	if err := hubConn.Flush(); err != nil {
		t.Fatal(err)
	}
	// The hub's interest crosses the link some time after the leaf
	// connects: the marker tells when it has.
	deadline := time.Now().Add(10 * time.Second)
	for {
		leafConn.Publish("marker", nil)
		if _, err := marker.NextMsg(100 * time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the marker never crossed the leaf connection")
		}
	}
	onLeaf, err := leafConn.SubscribeSync(recreatedSubjects[0])
	if err != nil {
		t.Fatal(err)
	}
	defer onLeaf.Unsubscribe()
	js, err := jetstream.New(leafConn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.AppsBucket}); err != nil {
		t.Fatalf("create %s on the leaf: %v", names.AppsBucket, err)
	}
	// The leaf's server hands the advisory to its subscribers and to the
	// link in one go: once it is here, a marker sent after it would come
	// after it on the hub too.
	if _, err := onLeaf.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no advisory of the creation on the leaf: %v", err)
	}
	leafConn.Publish("marker", nil)
	if _, err := marker.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the marker after the create did not cross: %v", err)
	}
	if len(leaked) > 0 {
		t.Fatalf("the leaf's advisory reached the hub: %s", (<-leaked).Subject)
	}
}
