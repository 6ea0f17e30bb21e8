package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// A store that failed a write for want of disk space answers no later
// write to its stream: nats-server keeps the error and sends no
// acknowledgement. A deploy of a build already stored, whose first write
// is the stamp of that build, says the node's disk is full and what
// brings the store back, not only that its deadline passed.
func TestDeployOnAFullDiskSaysSo(t *testing.T) {
	t.Parallel()
	h, bin := fullDisk(t, chunkSubject(names.BinariesBucket, "filler"))
	r := h.fails(1, "", "deploy", h.file("hello2.toml", strings.Replace(helloSpec, "1.0.0", "1.0.1", 1)), "--binary", bin)
	for _, want := range []string{"stamp ", "no space left on device", "free space", "data_dir"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.err)
		}
	}
}

// An upload of a build not yet stored, whose chunks the full disk leaves
// unacknowledged, says so too, and is not tried again: the store takes
// no write until its server restarts.
func TestUploadOnAFullDiskSaysSo(t *testing.T) {
	t.Parallel()
	h, bin := fullDisk(t, chunkSubject(names.BinariesBucket, "filler"))
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(other, append(b, "other build"...), 0o755); err != nil {
		t.Fatal(err)
	}
	r := h.fails(1, "", "--timeout", "2s", "deploy", h.file("hello2.toml", strings.Replace(helloSpec, "1.0.0", "1.0.1", 1)), "--binary", other)
	for _, want := range []string{"upload ", "no space left on device", "free space", "data_dir", "narun nats restart"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.err)
		}
	}
	if strings.Contains(r.err, "retrying") {
		t.Errorf("the upload was tried again on a store that takes no writes:\n%s", r.err)
	}
}

// fullDisk deploys hello on a NATS server whose disk then fills
// (fillDisk); bin is the binary deployed.
func fullDisk(t *testing.T, subject string) (*harness, string) {
	t.Helper()
	h, dir := onSmallDisk(t)
	bin := elfBinary(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", bin)
	fillDisk(t, h, dir, subject)
	return h, bin
}

// onSmallDisk starts a NATS server whose data dir is on a small disk of
// its own, dir, and a harness on it.
func onSmallDisk(t *testing.T) (h *harness, dir string) {
	t.Helper()
	dir = natstest.SmallDisk(t, "16m")
	// The disk, not the account's limit, must refuse the write.
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), JetStreamMaxStore: 1 << 30})
	return newHarnessOn(t, srv), dir
}

// fillDisk fills dir, the disk of h's server, and returns once a write to
// subject has failed for want of space, which leaves the stream of
// subject taking no write; free gives the disk its space back.
func fillDisk(t *testing.T, h *harness, dir, subject string) (free func()) {
	t.Helper()
	free = natstest.FillDisk(t, dir)
	js, err := jetstream.New(natstest.Connect(t, h.srv))
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 64<<10))
	deadline := time.Now().Add(10 * time.Second)
	for failed := false; !failed; {
		if time.Now().After(deadline) {
			t.Fatal("no store write failed on the full disk within 10s")
		}
		if _, err := js.PublishAsync(subject, chunk); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h.srv.WriteFailed():
			failed = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	return free
}
