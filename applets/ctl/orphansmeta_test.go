package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// An object whose metadata does not read (written by another tool, or cut
// short) hides which chunks are its, so no chunk is purged while it is
// there; that was said only in the debug log, and the chunks of uploads
// cut short stayed, filling the store, with no word of why. It warns,
// naming the object.
func TestReclaimChunksNamesUnreadableMetadata(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stderr bytes.Buffer
	e := h.env(&stderr)
	ctx := context.Background()
	bucket := names.BinariesBucket
	orphan, _ := h.orphan(bucket, 2, 1000)
	msg := nats.NewMsg(store.ObjectMetaSubject(bucket, "hello/1.0.0/broken"))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Data = []byte("{not json")
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	e.reclaimChunks(ctx, bucket, true)
	if n := h.msgsOn(bucket, orphan); n != 2 {
		t.Errorf("%d of the 2 chunks left, though the unreadable metadata may name them", n)
	}
	for _, want := range []string{"warning: ", `"hello/1.0.0/broken"`, bucket, "does not read"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
}

// An object whose metadata does not read made image list wait for its
// timeout and list nothing (nats.go's listing drops the message, and with
// the last one its sign that it is done), and image delete could not
// remove it, --force or not. The listing now names it beside the others,
// and a forced delete removes it, its chunks then reclaimed as those of an
// upload cut short.
func TestImageWithUnreadableMetadataIsListedAndDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	bucket := names.BinariesBucket
	good := h.build("1.0.0", 1)
	h.upload(good)
	const broken = "hello/1.0.0/broken"
	msg := nats.NewMsg(store.ObjectMetaSubject(bucket, broken))
	msg.Data = []byte("{not json")
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	r := h.ok("", "--timeout", "30s", "image", "list")
	if !strings.Contains(r.out, good.object) {
		t.Errorf("image list does not list %s:\n%s", good.object, r.out)
	}
	if want := `warning: the metadata of object "` + broken + `" does not read`; !strings.Contains(r.err, want) {
		t.Errorf("image list does not say %q:\n%s", want, r.err)
	}
	if want := `narun ctl image delete --force "` + broken + `" removes it`; !strings.Contains(r.err, want) {
		t.Errorf("image list does not give the way out %q:\n%s", want, r.err)
	}

	r = h.fails(1, "", "image", "delete", broken)
	if !strings.Contains(r.err, "does not read") || !strings.Contains(r.err, "--force") {
		t.Errorf("image delete without --force does not say why it refuses and what would do:\n%s", r.err)
	}
	r = h.ok("", "image", "delete", "--force", broken)
	if !strings.Contains(r.out, "deleted image "+broken) {
		t.Errorf("image delete --force does not say it deleted %s:\n%s", broken, r.out)
	}
	if n := h.msgsOn(bucket, store.ObjectMetaSubject(bucket, broken)); n != 0 {
		t.Errorf("%d metadata messages of %s left", n, broken)
	}
	r = h.ok("", "image", "list")
	if strings.Contains(r.err, "does not read") || !strings.Contains(r.out, good.object) {
		t.Errorf("image list after the delete:\nstdout: %s\nstderr: %s", r.out, r.err)
	}
}

// A listing reads through an ordered consumer, which the server keeps for
// five minutes after its last use unless deleted: a script that lists
// images every few seconds would pile them up on the store's stream.
func TestImageListLeavesNoConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.upload(h.build("1.0.0", 1))
	h.ok("", "image", "list")
	h.ok("", "files", "list")
	ctx := context.Background()
	for _, bucket := range []string{names.BinariesBucket, names.FilesBucket} {
		s, err := h.js.Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Consumers; n != 0 {
			t.Errorf("%d consumers left on the stream of %s after a listing", n, bucket)
		}
	}
}
