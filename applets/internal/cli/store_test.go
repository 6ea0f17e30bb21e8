package cli_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// storeKept is an embedded server on a small disk, kept writable by
// KeepStoreWritable, with a stream to publish to.
type storeKept struct {
	srv     *embednats.Server
	dir     string // the small disk
	data    string // the data dir on it
	logs    *testutil.LogBuffer
	done    chan struct{} // closed when KeepStoreWritable returns
	publish func(payload []byte) error
}

// keepStore starts a storeKept, stopped at the test's end, and fills its
// disk until a store write fails; free makes room again.
func keepStore(t *testing.T) (s *storeKept, free func()) {
	s = &storeKept{dir: natstest.SmallDisk(t, "24m"), logs: &testutil.LogBuffer{}, done: make(chan struct{})}
	s.data = filepath.Join(s.dir, "data")
	srv, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: s.data, JetStreamMaxStore: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		cli.KeepStoreWritable(ctx, srv, s.data, slog.New(slog.NewTextHandler(s.logs, nil)))
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	s.publish = func(payload []byte) error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "t", payload)
		return err
	}
	free = natstest.FillDisk(t, s.dir)
	big := []byte(strings.Repeat("x", 64<<10))
	testutil.Eventually(t, 10*time.Second, "a store write to fail", func() bool {
		return s.publish(big) != nil && strings.Contains(s.logs.String(), "JetStream could not write to its store")
	})
	return s, free
}

// A node whose disk filled up once writes to JetStream again, by itself,
// once the space is back: nats-server alone refuses every write to a
// store that failed one until it restarts.
func TestStoreWritableAgainOnceDiskHasRoom(t *testing.T) {
	s, free := keepStore(t)
	free()
	testutil.Eventually(t, 30*time.Second, "a write once the disk has room", func() bool {
		return s.publish([]byte("after")) == nil
	})
	if !strings.Contains(s.logs.String(), "embedded NATS server restarted") {
		t.Errorf("the restart is not logged:\n%s", s.logs)
	}
}

// A node started on a full disk writes to JetStream once the space is
// back: nats-server set its storage limit from the free space at start,
// zero, and would refuse every write until restarted.
func TestStoreWritableAfterStartOnFullDisk(t *testing.T) {
	dir := natstest.SmallDisk(t, "16m")
	data := filepath.Join(dir, "data")
	cfg := embednats.Config{Listen: "127.0.0.1:-1", DataDir: data}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(js jetstream.JetStream) error {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		kv, err := js.CreateOrUpdateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: "b"})
		if err != nil {
			return err
		}
		_, err = kv.PutString(wctx, "k", "v")
		return err
	}
	connect := func(srv *embednats.Server) jetstream.JetStream {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	// The store exists from an earlier start, as on a node.
	first, err := embednats.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := put(connect(first)); err != nil {
		t.Fatal(err)
	}
	first.Shutdown()

	free := natstest.FillDisk(t, dir)
	srv, err := embednats.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	logs := &testutil.LogBuffer{}
	done := make(chan struct{})
	go func() {
		cli.KeepStoreWritable(ctx, srv, data, slog.New(slog.NewTextHandler(logs, nil)))
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	js := connect(srv)
	if err := put(js); err == nil {
		t.Fatal("a write on a full disk passed")
	}
	free()
	testutil.Eventually(t, 30*time.Second, "a write once the disk has room", func() bool {
		return put(js) == nil
	})
}

// A restart that fails (here its store is not a directory; on a node, no
// file descriptor left to listen with) is tried again: it ended narun up,
// apps and all, over what may pass in seconds. The server comes back on
// the port it had, which its TCP clients know.
func TestStoreRestartRetriedAfterItFails(t *testing.T) {
	s, free := keepStore(t)
	url := s.srv.ClientURL()
	store, away := filepath.Join(s.data, "jetstream"), filepath.Join(s.data, "jetstream.away")
	if err := os.Rename(store, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	free()
	testutil.Eventually(t, 30*time.Second, "a failed restart to be logged", func() bool {
		select {
		case <-s.done:
			t.Fatalf("gave up after a failed restart:\n%s", s.logs)
		default:
		}
		return strings.Contains(s.logs.String(), "restart the embedded NATS server")
	})
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, store); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "a write once a restart succeeds", func() bool {
		return s.publish([]byte("after")) == nil
	})
	if got := s.srv.ClientURL(); got != url {
		t.Errorf("client URL after the restarts %s, want %s as before", got, url)
	}
}
