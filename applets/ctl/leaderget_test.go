package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
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

// The leader read goes to every member of the stream's group, and one that
// takes the group for leaderless answers "JetStream system temporarily
// unavailable" at once, before the leader does. ctl asks again instead of
// failing the deploy or prune on it. The members are played by responders
// on a server without JetStream: a real cluster says this only for a
// moment, at a time no test can choose.
func TestObjectMetaAsksAgainWhileTheGroupHasNoLeader(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	srv := startWithoutJetStream(t, addr)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	const stream = "OBJ_" + names.BinariesBucket
	const object = "hello/1.0.0/linux-amd64-0123456789ab"
	if _, err := nc.Subscribe("$JS.API.STREAM.INFO."+stream, func(m *nats.Msg) {
		m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"` + stream + `"},"state":{}}`))
	}); err != nil {
		t.Fatal(err)
	}
	meta, err := json.Marshal(jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: object}, Bucket: names.BinariesBucket})
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	if _, err := nc.Subscribe("$JS.API.STREAM.MSG.GET."+stream, func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			m.Respond([]byte(`{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`))
			return
		}
		answer, _ := json.Marshal(map[string]any{"message": map[string]any{
			"subject": store.ObjectMetaSubject(names.BinariesBucket, object), "seq": 7, "data": meta, "time": time.Now(),
		}})
		m.Respond(answer)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{stdio: cliIO(), log: slog.New(slog.DiscardHandler), timeout: 5 * time.Second, nc: nc, js: patientJS{js}}

	m, info, err := e.objectMeta(context.Background(), names.BinariesBucket, object)
	if err != nil {
		t.Fatalf("metadata of %s after one member said its group had no leader: %v", object, err)
	}
	if m.Sequence != 7 || info.Name != object {
		t.Errorf("metadata at sequence %d for %q, want 7 for %q", m.Sequence, info.Name, object)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("asked %d times, want 2", n)
	}
}
