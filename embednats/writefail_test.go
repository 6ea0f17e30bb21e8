package embednats_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A store write that fails for want of space is reported, and nats-server
// keeps refusing writes to that stream after the space is back; Restart
// reopens the store, and the in-process connection opened before carries
// on with the new server, messages stored before included.
func TestRestartAfterWriteFailure(t *testing.T) {
	t.Parallel()
	dir := natstest.SmallDisk(t, "8m")
	data := filepath.Join(dir, "data")
	// The disk, not the account's limit, must refuse the write.
	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: data, JetStreamMaxStore: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t", []byte("before")); err != nil {
		t.Fatal(err)
	}

	free := natstest.FillDisk(t, dir)
	payload := []byte(strings.Repeat("x", 64<<10))
	var failed string
	waitFor(t, 10*time.Second, "a failed store write to be reported", func() bool {
		_, _ = js.Publish(ctx, "t", payload)
		select {
		case failed = <-s.WriteFailed():
			return true
		default:
			return false
		}
	})
	if !strings.Contains(failed, "no space left on device") {
		t.Errorf("reported %q, want the write error", failed)
	}

	free()
	if _, err := js.Publish(ctx, "t", []byte("room again")); err == nil {
		t.Fatal("nats-server took a write after a failed one without a restart: Restart would not be needed")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a write after the restart, on the same connection", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "t", []byte("after"))
		return err == nil
	})
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil || string(m.Data) != "before" {
		t.Errorf("first message after the restart: %v %v, want the one stored before", m, err)
	}
}

// A store that holds more than three quarters of what it holds and the
// space left free, nats-server's own storage limit, takes writes after a
// restart all the same: once something else took the disk's room (an app,
// the system's logs), nats-server refused every write, heartbeats and
// deploys included, at every start.
func TestStoreBiggerThanFreeSpaceWritable(t *testing.T) {
	t.Parallel()
	dir := natstest.SmallDisk(t, "64m")
	cfg := embednats.Config{Listen: "127.0.0.1:-1", DataDir: filepath.Join(dir, "data")}
	publish := func(s *embednats.Server, n int) error {
		nc, err := s.Connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
			t.Fatal(err)
		}
		payload := []byte(strings.Repeat("x", 64<<10))
		for i := range n {
			if _, err := js.Publish(ctx, "t", payload); err != nil {
				return fmt.Errorf("message %d of %d: %w", i+1, n, err)
			}
		}
		return nil
	}
	s, err := embednats.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(s, 576); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	// 36 MiB stored and 8 MiB left free: three quarters of 44 MiB are
	// less than the store.
	filler := make([]byte, embednats.FreeSpace(cfg.DataDir)-8<<20)
	if err := os.WriteFile(filepath.Join(dir, "filler"), filler, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = embednats.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if err := publish(s, 1); err != nil {
		t.Errorf("write after a restart with %d MiB free: %v", embednats.FreeSpace(cfg.DataDir)>>20, err)
	}
}
