package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// orphan stores n chunks of size bytes under a new id in bucket, with no
// metadata naming them: what an upload cut short leaves when its own purge
// does not reach the server (ctl killed, its connection lost, a write
// refused on a full disk). It returns their subject and the last one.
func (h *harness) orphan(bucket string, n, size int) (string, *jetstream.PubAck) {
	h.t.Helper()
	if _, err := store.Objects(context.Background(), h.js, bucket, nil); err != nil {
		h.t.Fatal(err)
	}
	subj := "$O." + bucket + ".C." + nuid.Next()
	var ack *jetstream.PubAck
	for range n {
		var err error
		if ack, err = h.js.Publish(context.Background(), subj, bytes.Repeat([]byte{'x'}, size)); err != nil {
			h.t.Fatal(err)
		}
	}
	return subj, ack
}

// msgsOn counts the messages of bucket's stream on subject.
func (h *harness) msgsOn(bucket, subject string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), "OBJ_"+bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// Chunks no object names are purged once their last one is older than the
// grace; those of an upload that may still be in flight (chunks first,
// metadata last), those of a live object, and those a deletion marker
// still names (pruneObject purges them with the marker) stay.
func TestReclaimChunksSparesLiveAndFresh(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stderr bytes.Buffer
	e := h.env(&stderr)
	e.cfg.Ctl.PruneGrace = config.Duration(time.Hour)
	ctx := context.Background()
	bucket := names.BinariesBucket

	live := h.build("1.0.0", 1)
	h.upload(live)
	marked := h.build("1.0.1", 2)
	h.upload(marked)
	_, info, err := e.objectMeta(ctx, bucket, marked.object)
	if err != nil {
		t.Fatal(err)
	}
	info.Deleted = true
	marker, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(objectMetaSubject(bucket, marked.object))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Data = marker
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	old, _ := h.orphan(bucket, 3, 1000)
	oldLast, err := store.LastFromLeader(ctx, e.nc, "OBJ_"+bucket, old)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := h.orphan(bucket, 1, 1000)
	freshLast, err := store.LastFromLeader(ctx, e.nc, "OBJ_"+bucket, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !freshLast.Time.After(oldLast.Time) {
		t.Fatalf("the server stamped the later orphan %s, not after the earlier %s", freshLast.Time, oldLast.Time)
	}

	orphans, _, err := e.orphanChunks(ctx, bucket, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 2 || orphans[old] != 3 || orphans[fresh] != 1 {
		t.Fatalf("orphans found: %v; want %s (3 chunks) and %s (1)", orphans, old, fresh)
	}
	// On the server's clock, the earlier orphan's last chunk is as old as
	// the grace (deployInFlight, shorter than prune_grace), the later
	// one's younger.
	e.purgeOrphans(ctx, bucket, orphans, oldLast.Time.Add(deployInFlight))
	if n := h.msgsOn(bucket, old); n != 0 {
		t.Errorf("%d chunks of %s, which no object names and no upload added to for the grace, left", n, old)
	}
	if n := h.msgsOn(bucket, fresh); n != 1 {
		t.Errorf("%d chunks of %s, last stored within the grace (an upload in flight?), left; want 1", n, fresh)
	}
	h.fetch(live)
	if n := h.subjects("$O." + bucket + ".C." + info.NUID); n != 1 {
		t.Errorf("the chunks a deletion marker names were purged without it")
	}
	if want := "reclaimed 2.9KiB in " + bucket; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}

// A deploy reclaims, before its upload, the chunks that uploads cut short
// left in narun-binaries and narun-files: they count against the store's
// limits, and left there fail every later upload with "insufficient
// resources".
func TestDeployReclaimsChunksOfUploadsCutShort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	h.ok("", "files", "put", "conf", h.file("conf", "x = 1\n"))
	bin, _ := h.orphan(names.BinariesBucket, 4, 32<<10)
	file, _ := h.orphan(names.FilesBucket, 1, 100)

	r := h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", h.build("1.0.0", 0).path)
	if n := h.msgsOn(names.BinariesBucket, bin); n != 0 {
		t.Errorf("deploy left %d chunks of an upload cut short in %s", n, names.BinariesBucket)
	}
	if n := h.msgsOn(names.FilesBucket, file); n != 0 {
		t.Errorf("deploy left %d chunks of an upload cut short in %s", n, names.FilesBucket)
	}
	if !h.hasObject(names.FilesBucket, "conf") {
		t.Errorf("deploy deleted file conf")
	}
	for _, want := range []string{"reclaimed 128.0KiB in " + names.BinariesBucket, "reclaimed 100B in " + names.FilesBucket} {
		if !strings.Contains(r.err, want) {
			t.Errorf("deploy's stderr does not say %q:\n%s", want, r.err)
		}
	}
}

// An object without chunks (an empty file) leaves the index of the
// stream's subjects with as many chunk subjects as objects though one
// is an orphan: files delete reads every object's metadata, and finds it.
func TestFilesDeleteReclaimsOrphanBesideEmptyFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	h.ok("", "files", "put", "empty", h.file("empty", ""))
	h.ok("", "files", "put", "doomed", h.file("doomed", "bye\n"))
	orphan, _ := h.orphan(names.FilesBucket, 2, 10)
	h.ok("", "files", "delete", "doomed")
	if n := h.msgsOn(names.FilesBucket, orphan); n != 0 {
		t.Errorf("files delete left %d chunks no object names", n)
	}
	if !h.hasObject(names.FilesBucket, "empty") {
		t.Errorf("files delete deleted file empty")
	}
}
