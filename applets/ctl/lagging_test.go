package ctl

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
)

// A deploy reads the app's spec back after storing it, to see whether an
// app delete or another deploy came in between. In a cluster, a replica of
// narun-apps behind its leader answers that read (a KV Get is a direct
// get) without the revision just stored: ctl took the app for deleted,
// removed its routes and failed a deploy that had succeeded. On one
// server, a mirror of the bucket that never holds the app answers a share
// of its direct gets the same way (nats-server's mirror_direct).
func TestDeployReadsBackFromTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloVersion("1.0.0", "/hello/"))
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	behindReplica(t, h.js, names.AppsBucket, "hello")

	for i := 1; i <= 5; i++ {
		h.file("hello.toml", helloVersion(fmt.Sprintf("1.0.%d", i), "/hello/"))
		h.ok("", "deploy", p, "--binary", elfBinary(t))
		if _, ok := h.get(names.RoutesBucket, "hello"); !ok {
			t.Fatalf("deploy %d: the routes of hello are gone", i)
		}
	}
}

// behindReplica makes a share of the direct gets of key in bucket answered
// by a mirror of the bucket that does not hold key, and returns once one
// was. The mirror answers only once it has mirrored a message, so it
// mirrors one of a key of its own.
func behindReplica(t *testing.T, js jetstream.JetStream, bucket, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	const decoy = "behind-replica-decoy"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "BEHIND_" + bucket,
		Mirror:       &jetstream.StreamSource{Name: "KV_" + bucket, FilterSubject: "$KV." + bucket + "." + decoy},
		MirrorDirect: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, decoy, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("no direct get of %s answered without it: %v", key, err)
		}
	}
}

// The commands that read one app's spec read it from the leader too: a
// replica behind told app status that an app just deployed was not, and
// failed an app restart's write, conditional on the revision it read.
func TestAppCommandsReadFromTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	behindReplica(t, h.js, names.AppsBucket, "hello")

	for range 5 {
		h.ok("", "app", "status", "hello")
		h.ok("", "app", "restart", "hello")
	}
	h.ok("", "app", "delete", "hello")
}

// A deploy of a deleted app stores its spec over the deletion. nats.go's
// Create, which such a deploy used, reads the key with a direct get to
// find the deletion it may write over: a replica behind, without it,
// failed the deploy as if another command had stored the app meanwhile.
func TestDeployAfterDeleteWritesOverTheLeadersDeletion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	behindReplica(t, h.js, names.AppsBucket, "hello")

	for range 8 {
		h.ok("", "app", "delete", "hello")
		h.ok("", "deploy", p, "--binary", elfBinary(t))
	}
}

// Every read of one key goes to the leader (patientKV.Get): a deploy
// right after a secret set, through a replica of narun-secrets behind,
// failed with "secret db does not exist", and a secret delete right after
// said the same.
func TestSecretJustSetIsFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	// Creates narun-secrets, which behindReplica mirrors.
	h.ok("v\n", "--key-file", key, "secret", "set", "other")
	behindReplica(t, h.js, names.SecretsBucket, "db")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n1\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")

	for range 5 {
		h.ok("v\n", "--key-file", key, "secret", "set", "db")
		h.ok("", "--key-file", key, "deploy", p, "--binary", elfBinary(t))
		h.ok("", "app", "delete", "app")
		h.ok("", "secret", "delete", "db")
	}
}
