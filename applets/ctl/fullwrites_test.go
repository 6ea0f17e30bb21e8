package ctl

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// A store whose stream failed a write for want of disk space answers no
// later write to it (TestDeployOnAFullDiskSaysSo): each command's write to
// it says that the disk is full and what brings the store back, not only
// that its deadline passed. A case that frees the disk again has the other
// streams take writes, so that the command gets as far as the one that
// failed, as after a disk filled by something else and cleaned up.
func TestKVWritesOnAFullDiskSaySo(t *testing.T) {
	t.Parallel()
	full := []string{"no space left on device", "free space", "data_dir", "narun nats restart"}
	deployed := func(h *harness) { h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(h.t)) }
	// secret delete reads the specs, whose bucket a full disk leaves
	// uncreated.
	secret := func(h *harness) {
		deployed(h)
		h.ok("v\n", "--key-file", h.dir+"/secret.key", "secret", "set", "db")
	}
	tests := []struct {
		name string
		// before stores what the command is to write over.
		before func(h *harness)
		// fill is the subject whose stream's write fails; free gives the
		// disk its space back once it has.
		fill  string
		free  bool
		stdin string
		args  func(h *harness) []string
		want  string
	}{
		{
			name: "app delete", before: deployed, fill: "$KV." + names.RoutesBucket + ".filler",
			args: func(*harness) []string { return []string{"app", "delete", "hello"} },
			want: "remove routes of hello",
		},
		{
			name: "app restart", before: deployed, fill: "$KV." + names.AppsBucket + ".filler", free: true,
			args: func(*harness) []string { return []string{"app", "restart", "hello"} },
			want: "store spec of hello",
		},
		{
			name: "deploy spec", before: deployed, fill: "$KV." + names.AppsBucket + ".filler", free: true,
			args: func(h *harness) []string {
				return []string{"deploy", h.file("hello2.toml", strings.Replace(helloSpec, "1.0.0", "1.0.1", 1)), "--binary", elfBinary(h.t)}
			},
			want: "store spec of hello",
		},
		{
			name: "deploy routes", before: deployed, fill: "$KV." + names.RoutesBucket + ".filler", free: true,
			args: func(h *harness) []string {
				moved := strings.NewReplacer("1.0.0", "1.0.1", "/hello/", "/hello2/").Replace(helloSpec)
				return []string{"deploy", h.file("hello2.toml", moved), "--binary", elfBinary(h.t)}
			},
			want: "store routes of hello",
		},
		{
			name: "deploy removing routes", before: deployed, fill: "$KV." + names.RoutesBucket + ".filler", free: true,
			args: func(h *harness) []string {
				noRoutes := strings.Replace(helloSpec[:strings.Index(helloSpec, "[[routes]]")], "1.0.0", "1.0.1", 1)
				return []string{"deploy", h.file("hello2.toml", noRoutes), "--binary", elfBinary(h.t)}
			},
			want: "remove routes of hello",
		},
		{
			name: "secret set", before: secret, fill: "$KV." + names.SecretsBucket + ".filler",
			stdin: "v2\n", args: func(h *harness) []string { return []string{"--key-file", h.dir + "/secret.key", "secret", "set", "db"} },
			want: `store secret "db"`,
		},
		{
			name: "secret delete", before: secret, fill: "$KV." + names.SecretsBucket + ".filler",
			args: func(*harness) []string { return []string{"secret", "delete", "db"} },
			want: `delete secret "db"`,
		},
		{
			name: "secret rotate",
			before: func(h *harness) {
				secret(h)
				h.ok("", "--key-file", h.dir+"/secret.key", "secret", "keygen", "--add")
			},
			fill: "$KV." + names.SecretsBucket + ".filler",
			args: func(h *harness) []string { return []string{"--key-file", h.dir + "/secret.key", "secret", "rotate"} },
			want: "secret rotate: 0 secret(s) re-encrypted",
		},
		{
			name: "files delete", before: func(h *harness) { h.ok("", "files", "put", "conf", h.file("conf", "x")) },
			fill: chunkSubject(names.FilesBucket, "filler"),
			args: func(*harness) []string { return []string{"files", "delete", "conf"} },
			want: `delete file "conf"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, dir := onSmallDisk(t)
			h.ok("", "--key-file", h.dir+"/secret.key", "secret", "keygen")
			tc.before(h)
			free := fillDisk(t, h, dir, tc.fill)
			if tc.free {
				free()
			}
			r := h.fails(1, tc.stdin, append([]string{"--timeout", "2s"}, tc.args(h)...)...)
			for _, want := range append([]string{tc.want}, full...) {
				if !strings.Contains(r.err, want) {
					t.Errorf("stderr does not say %q:\n%s", want, r.err)
				}
			}
		})
	}
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
