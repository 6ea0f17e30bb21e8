package ctl

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

// A spec whose [binaries.<arch>] names a build of another arch would have
// every node of that arch crash-loop on "exec format error": deploy, its
// dry run and rollback refuse it, from the object's metadata or, for an
// object stored without it, from the linux-<arch>- part of its name.
func TestPinnedBinaryOfAnotherArch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	stored := h.storedApp("hello")
	here, other := runtime.GOARCH, "arm64"
	if here == "arm64" {
		other = "amd64"
	}
	pin := stored.Binaries[here]
	raw, _ := h.get(names.AppsBucket, "hello")
	swapped := strings.Replace(string(raw), "[binaries."+here+"]", "[binaries."+other+"]", 1)
	p := h.file("swapped.toml", swapped)
	for _, args := range [][]string{{"deploy", p, "--dry-run"}, {"deploy", p}} {
		r := h.fails(1, "", args...)
		for _, want := range []string{"swapped.toml:", `"binaries.` + other + `"`, pin.Object, "a linux/" + here + " binary", "not " + other} {
			if !strings.Contains(r.err, want) {
				t.Errorf("%v: %q does not say %q", args, r.err, want)
			}
		}
	}

	// An object without arch metadata (one stored by hand) is judged by
	// its name.
	obs, err := h.js.ObjectStore(context.Background(), names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	bare := "hello/1.0.0/linux-" + here + "-bare"
	info, err := obs.PutBytes(context.Background(), bare, []byte("not really a binary"))
	if err != nil {
		t.Fatal(err)
	}
	e := h.env(&strings.Builder{})
	err = e.checkPinned(context.Background(), "bare.toml", []byte("[binaries."+other+"]\n"), map[string]spec.Binary{other: {Object: bare, SHA256: store.DigestHex(info)}})
	if err == nil || !strings.Contains(err.Error(), `bare.toml:1: key "binaries.`+other+`"`) || !strings.Contains(err.Error(), "a linux/"+here+" binary") {
		t.Errorf("pin of an object without metadata: %v", err)
	}
}
