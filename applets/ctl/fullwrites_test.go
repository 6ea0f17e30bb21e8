package ctl

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// A KV store whose stream failed a write for want of disk space answers
// no later write to it (TestDeployOnAFullDiskSaysSo): an app delete or a
// secret set says that the disk is full and what brings the store back,
// not only that its deadline passed.
func TestKVWritesOnAFullDiskSaySo(t *testing.T) {
	t.Parallel()
	full := []string{"no space left on device", "free space", "data_dir", "narun nats restart"}
	t.Run("app delete", func(t *testing.T) {
		t.Parallel()
		h, _ := fullDisk(t, "$KV."+names.RoutesBucket+".filler")
		r := h.fails(1, "", "--timeout", "2s", "app", "delete", "hello")
		for _, want := range append([]string{"remove routes of hello"}, full...) {
			if !strings.Contains(r.err, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.err)
			}
		}
	})
	t.Run("secret set", func(t *testing.T) {
		t.Parallel()
		h, dir := onSmallDisk(t)
		key := h.dir + "/secret.key"
		h.ok("", "--key-file", key, "secret", "keygen")
		h.ok("v\n", "--key-file", key, "secret", "set", "db")
		fillDisk(t, h, dir, "$KV."+names.SecretsBucket+".filler")
		r := h.fails(1, "v2\n", "--timeout", "2s", "--key-file", key, "secret", "set", "db")
		for _, want := range append([]string{`store secret "db"`}, full...) {
			if !strings.Contains(r.err, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.err)
			}
		}
	})
}

// The probe of a store with room, after a write that timed out for
// another reason, removes nothing and leaves the timeout as it was.
func TestKVWriteProbeRemovesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	kv := h.kv(names.RoutesBucket)
	for _, k := range []string{"a", "b"} {
		if _, err := kv.Put(context.Background(), k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	e := h.env(io.Discard)
	err := e.write(context.Background(), names.RoutesBucket, func(context.Context) error { return context.DeadlineExceeded })
	if err != context.DeadlineExceeded {
		t.Errorf("write: %v, want the deadline alone", err)
	}
	s, err := h.js.Stream(context.Background(), "KV_"+names.RoutesBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("%d messages left in the stream, want 2", info.State.Msgs)
	}
}
