package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// TestDeletesLeaveNoMarkers checks that files delete and image delete take
// the object's deletion marker away with it: each name deleted kept a
// message in its bucket for good, so a store whose files and builds come
// and go under new names grew with every one.
func TestDeletesLeaveNoMarkers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Deleted at once, which prune_grace would refuse (TestImageDeleteDuringDeploy).
	h.pruneGrace("0s")
	content := h.file("conf.toml", "answer = 42\n")
	for i := range 3 {
		name := fmt.Sprintf("conf-%d", i)
		h.ok("", "files", "put", name, content)
		h.ok("", "files", "delete", name)
	}
	if n := h.streamMsgs("OBJ_" + names.FilesBucket); n != 0 {
		t.Errorf("%s holds %d messages after every file was deleted, want 0", names.FilesBucket, n)
	}

	// An upload of a name deleted before stays whole.
	h.ok("", "files", "put", "conf-0", content)
	h.ok("", "files", "put", "conf-0", content)
	if n := h.objectCount(names.FilesBucket); n != 1 {
		t.Errorf("%d files after conf-0 was uploaded again, want 1", n)
	}

	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	h.ok("", "app", "delete", "hello")
	r := h.ok("", "image", "list", "--json")
	var objs []object
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		h.ok("", "image", "delete", o.Name)
	}
	if n := h.streamMsgs("OBJ_" + names.BinariesBucket); n != 0 {
		t.Errorf("%s holds %d messages after every image was deleted, want 0", names.BinariesBucket, n)
	}
}

// streamMsgs is how many messages the stream holds.
func (h *harness) streamMsgs(stream string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}
