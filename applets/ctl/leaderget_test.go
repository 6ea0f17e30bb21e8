package ctl

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/embednats/natstest"
)

// The metadata a deploy stamps and a prune deletes by is read from the
// stream's leader, never by a direct get, which any replica answers: in a
// three-member cluster, a deploy through a member that follows
// narun-binaries read the build it had just uploaded from that member's
// copy, which did not hold it yet, took it for deleted by a prune, and
// failed with "nats: object not found" on about one deploy in three. A
// subscriber to the direct get subjects sees every such request; one
// published by ctl after the reads arrives after them.
func TestObjectMetaIsReadFromTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	b := h.build("1.0.0", 1)
	h.upload(b)

	spy := natstest.Connect(t, h.srv)
	sub, err := spy.SubscribeSync("$JS.API.DIRECT.GET.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	m, info, err := e.objectMeta(ctx, names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != b.object || m.Sequence == 0 || m.Time.IsZero() {
		t.Fatalf("metadata of %s: %+v at sequence %d, %s", b.object, info, m.Sequence, m.Time)
	}
	if err := e.stampObject(ctx, names.BinariesBucket, b.object, b.sha256); err != nil {
		t.Fatalf("stamp: %v", err)
	}
	if _, _, err := e.objectMeta(ctx, names.BinariesBucket, "hello/0/none"); !errors.Is(err, errNoObject) {
		t.Fatalf("metadata of an object never stored: %v, want errNoObject", err)
	}

	const marker = "$JS.API.DIRECT.GET.narun_test_marker"
	if err := e.nc.Publish(marker, nil); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the marker: %v", err)
		}
		if msg.Subject == marker {
			return
		}
		t.Errorf("ctl read by a direct get, which a replica behind the leader answers: %s", msg.Subject)
	}
}
