package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// An opening JetStream leaves unanswered is sent again; one it answers
// with an error that lasts (no such object) is not.
func TestOpenObject(t *testing.T) {
	t.Parallel()
	silent := testutil.HoldingUnanswered(t, "app", "the build")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obj, err := OpenObject(ctx, silent, "app", time.Minute)
	if err != nil {
		t.Fatalf("open after an unanswered opening: %v", err)
	}
	if b, err := io.ReadAll(obj); string(b) != "the build" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
	if silent.Gets() != 2 {
		t.Fatalf("opened %d times, want 2", silent.Gets())
	}
	if err := obj.Close(); err != nil {
		t.Fatal(err)
	}

	counted := &countedGets{ObjectStore: silent.ObjectStore}
	if _, err := OpenObject(ctx, counted, "none", time.Minute); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("open of a missing object: %v, want object not found", err)
	}
	if counted.gets != 1 {
		t.Fatalf("a missing object opened %d times, want once", counted.gets)
	}
}

type countedGets struct {
	jetstream.ObjectStore
	gets int
}

func (o *countedGets) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	o.gets++
	return o.ObjectStore.Get(ctx, name, opts...)
}

// nats.go checks an object's content against its digest at the end of
// the read, except for an object whose metadata says it is empty: that
// one reads as no bytes, whatever its digest. Metadata changed to say so,
// by a client that can write the bucket or a damaged store, must not
// pass an object off as verified.
func TestOpenObjectChecksTheDigestOfAnEmptyObject(t *testing.T) {
	t.Parallel()
	ctx, js, obs := newObjectStore(t, "bins")
	for _, name := range []string{"empty", "app"} {
		if _, err := obs.PutString(ctx, name, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := obs.PutString(ctx, "app", "the build"); err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	info.Size, info.Chunks = 0, 0
	replaceObjectMeta(t, ctx, js, "bins", info)

	read := func(name string) (string, error) {
		obj, err := OpenObject(ctx, obs, name, time.Minute)
		if err != nil {
			return "", err
		}
		defer obj.Close()
		b, err := io.ReadAll(obj)
		return string(b), err
	}
	if b, err := read("empty"); b != "" || err != nil {
		t.Errorf("empty object: %q, %v", b, err)
	}
	if b, err := read("app"); !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Errorf("object whose metadata says it is empty, with the digest of %q: %q, %v; want an error wrapping %v", "the build", b, err, jetstream.ErrDigestMismatch)
	}
}

// DigestHex gives the hex that specs pin only for a SHA-256 digest:
// deploy pins what it gives for a file, and refuses an object that gives
// "", so anything else would be pinned as a sha256 no content has.
func TestDigestHexOnlyOfSHA256(t *testing.T) {
	t.Parallel()
	ctx, js, obs := newObjectStore(t, "files")
	put, err := obs.PutString(ctx, "conf", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := DigestHex(put), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; got != want {
		t.Fatalf("digest of %q: %s, want %s", "hello", got, want)
	}
	for _, digest := range []string{
		"SHA-512=" + base64.URLEncoding.EncodeToString(make([]byte, 64)),
		"SHA-256=" + base64.URLEncoding.EncodeToString([]byte("short")),
		"XXXXXXXX" + put.Digest[len("SHA-256="):],
	} {
		info := *put
		info.Digest = digest
		replaceObjectMeta(t, ctx, js, "files", &info)
		stored, err := obs.GetInfo(ctx, "conf")
		if err != nil {
			t.Fatal(err)
		}
		if got := DigestHex(stored); got != "" {
			t.Errorf("digest %q: %q, want \"\": not a SHA-256 one", stored.Digest, got)
		}
	}
}

// newObjectStore creates the object store bucket on a server of its own,
// with a context that ends 30 s on or with the test.
func newObjectStore(t *testing.T, bucket string) (context.Context, jetstream.JetStream, jetstream.ObjectStore) {
	t.Helper()
	js := connect(t, natstest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, js, obs
}

// replaceObjectMeta stores info as the only metadata of its object, as a
// client that can write the bucket, or a damaged store, could.
func replaceObjectMeta(t *testing.T, ctx context.Context, js jetstream.JetStream, bucket string, info *jetstream.ObjectInfo) {
	t.Helper()
	meta, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(ObjectMetaSubject(bucket, info.Name))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = meta
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}
