package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// A purge of chunks no object names, on a store that failed a write for
// want of disk space, fails with the error the server kept: it said so
// only in the debug log, where a deploy or image delete left the operator
// no word of why the store stays full. It warns once, whatever the number
// of uploads cut short, with the way out the failed writes give.
func TestReclaimChunksOnAFullDiskSaysSo(t *testing.T) {
	t.Parallel()
	h, dir := onSmallDisk(t)
	var stderr bytes.Buffer
	e := h.env(&stderr)
	ctx := context.Background()
	bucket := names.BinariesBucket
	a, _ := h.orphan(bucket, 2, 1000)
	b, _ := h.orphan(bucket, 2, 1000)
	fillDisk(t, h, dir, chunkSubject(bucket, "filler"))

	orphans, now, err := e.orphanChunks(ctx, bucket, true)
	if err != nil {
		t.Fatal(err)
	}
	if orphans[a] != 2 || orphans[b] != 2 {
		t.Fatalf("orphans found: %v; want %s and %s, 2 chunks each", orphans, a, b)
	}
	e.purgeOrphans(ctx, bucket, orphans, now.Add(e.orphanGrace()))
	if n := strings.Count(stderr.String(), "disk is full"); n != 1 {
		t.Errorf("the full disk said %d times, want once:\n%s", n, stderr.String())
	}
	for _, want := range []string{"warning: ", "no space left on device", "data_dir", "narun nats restart"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
}
