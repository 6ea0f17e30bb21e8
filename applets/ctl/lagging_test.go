package ctl

import (
	"context"
	"encoding/base64"
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

// behindReplica makes a share of the direct gets of key in the KV bucket
// answered by a replica that does not hold it (behindStream).
func behindReplica(t *testing.T, js jetstream.JetStream, bucket, key string) {
	t.Helper()
	behindStream(t, js, "KV_"+bucket, "$KV."+bucket+".", key)
}

// behindStream makes a share of the direct gets of prefix+name in stream
// answered by a mirror of it that does not hold that subject, and returns
// once one was. The mirror answers only once it has mirrored a message, so
// it mirrors one of a name of its own.
func behindStream(t *testing.T, js jetstream.JetStream, stream, prefix, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	decoy := prefix + "behind-replica-decoy"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "BEHIND_" + stream,
		Mirror:       &jetstream.StreamSource{Name: stream, FilterSubject: decoy},
		MirrorDirect: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, decoy, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := s.GetLastMsgForSubject(ctx, prefix+name)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("no direct get of %s answered without it: %v", prefix+name, err)
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

// A deploy right after a files put finds the file: the object's metadata
// is read from the leader of narun-files. A replica behind answered
// without it, and the deploy failed with "file conf does not exist".
func TestFileJustPutIsFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// files delete refuses a file a deploy pinned a moment ago otherwise.
	h.pruneGrace("0s")
	h.ok("", "files", "put", "other", h.file("other.toml", "x = 1\n"))
	conf := h.file("conf.toml", "x = 1\n")
	metaPrefix := "$O." + names.FilesBucket + ".M."
	behindStream(t, h.js, "OBJ_"+names.FilesBucket, metaPrefix, base64.URLEncoding.EncodeToString([]byte("conf")))
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"conf\"\npath = \"etc/conf.toml\"\n")

	for range 8 {
		h.ok("", "files", "put", "conf", conf)
		h.ok("", "deploy", p, "--binary", elfBinary(t))
		h.ok("", "app", "delete", "app")
		h.ok("", "files", "delete", "conf")
	}
}

// A put that replaces an object purges the chunks of the one it replaces,
// which it names by reading the object's metadata from the leader: a
// replica behind answered without the object, and each put left the
// replaced content in the stream until a later reclaim.
func TestPutPurgesTheChunksItReplaces(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "conf", h.file("conf.toml", "x = 0\n"))
	behindStream(t, h.js, "OBJ_"+names.FilesBucket, "$O."+names.FilesBucket+".M.", base64.URLEncoding.EncodeToString([]byte("conf")))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, "OBJ_"+names.FilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 8; i++ {
		h.ok("", "files", "put", "conf", h.file("conf.toml", fmt.Sprintf("x = %d\n", i)))
		info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O."+names.FilesBucket+".C.>"))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(info.State.Subjects); n != 1 {
			t.Fatalf("put %d: chunks of %d objects in the stream, want those of conf alone: %v", i, n, info.State.Subjects)
		}
	}
}
