package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
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
	return h.subjectMsgs(bucket, subject)[subject]
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
	msg := nats.NewMsg(store.ObjectMetaSubject(bucket, marked.object))
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
	// the grace, the later one's younger.
	e.purgeOrphans(ctx, bucket, orphans, oldLast.Time.Add(e.orphanGrace()))
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

// A deploy looks, before its upload, for the chunks that uploads cut short
// left in narun-binaries and narun-files (they count against the store's
// limits, and left there fail every later upload with "insufficient
// resources"), and spares those stored within the grace whatever
// prune_grace: they may be another ctl's upload in flight. That older ones
// are purged, and said so, is TestReclaimChunksSparesLiveAndFresh's.
func TestDeployLooksForChunksOfUploadsCutShort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	h.ok("", "files", "put", "conf", h.file("conf", "x = 1\n"))
	bin, _ := h.orphan(names.BinariesBucket, 4, 32<<10)
	file, _ := h.orphan(names.FilesBucket, 1, 100)

	r := h.ok("", "--log-level", "debug", "deploy", h.file("hello.toml", helloSpec), "--binary", h.build("1.0.0", 0).path)
	if n := h.msgsOn(names.BinariesBucket, bin); n != 4 {
		t.Errorf("deploy left %d of the 4 chunks no object names stored within the grace in %s", n, names.BinariesBucket)
	}
	if n := h.msgsOn(names.FilesBucket, file); n != 1 {
		t.Errorf("deploy left %d of the 1 chunk no object names stored within the grace in %s", n, names.FilesBucket)
	}
	if !h.hasObject(names.FilesBucket, "conf") {
		t.Errorf("deploy deleted file conf")
	}
	for _, subj := range []string{bin, file} {
		if !keptForNow(r.err, subj) {
			t.Errorf("deploy's stderr does not say it found and kept %s:\n%s", subj, r.err)
		}
	}
}

// keptForNow says whether a ctl's debug log says it found the chunks on
// subject, which no object names, and kept them as too fresh to purge.
func keptForNow(log, subject string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, "kept for now") && strings.Contains(line, "subject="+subject+" ") {
			return true
		}
	}
	return false
}

// An object without chunks (an empty file) leaves the index of the
// stream's subjects with as many chunk subjects as objects though one
// is an orphan: files delete reads every object's metadata, and finds it.
func TestFilesDeleteFindsOrphanBesideEmptyFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	h.ok("", "files", "put", "empty", h.file("empty", ""))
	h.ok("", "files", "put", "doomed", h.file("doomed", "bye\n"))
	orphan, _ := h.orphan(names.FilesBucket, 2, 10)
	r := h.ok("", "--log-level", "debug", "files", "delete", "doomed")
	if !keptForNow(r.err, orphan) {
		t.Errorf("files delete's stderr does not say it found %s, which no object names:\n%s", orphan, r.err)
	}
	if n := h.msgsOn(names.FilesBucket, orphan); n != 2 {
		t.Errorf("files delete left %d of the 2 chunks no object names stored within the grace", n)
	}
	if !h.hasObject(names.FilesBucket, "empty") {
		t.Errorf("files delete deleted file empty")
	}
}

// gated reads first, then, having closed reached, waits for release to be
// closed before it reads rest: an upload held between two chunks.
type gated struct {
	first, rest      []byte
	reached, release chan struct{}
	held             bool
}

func (g *gated) Read(p []byte) (int, error) {
	if len(g.first) > 0 {
		n := copy(p, g.first)
		g.first = g.first[n:]
		return n, nil
	}
	if !g.held {
		g.held = true
		close(g.reached)
		<-g.release
	}
	if len(g.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.rest)
	g.rest = g.rest[n:]
	return n, nil
}

// heldUpload starts a putObject of content (3 chunks) as object name of
// bucket and returns once it has stored 2 and waits to read the third. It
// returns the subject of its chunks, release, which lets it go on, and
// where its result comes.
func (h *harness) heldUpload(bucket, name string, content []byte) (string, func(), <-chan error) {
	h.t.Helper()
	ctx := context.Background()
	if _, err := store.Objects(ctx, h.js, bucket, nil); err != nil {
		h.t.Fatal(err)
	}
	g := &gated{first: content[:2*uploadChunk], rest: content[2*uploadChunk:], reached: make(chan struct{}), release: make(chan struct{})}
	sum := sha256.Sum256(content)
	uploader := h.env(io.Discard)
	done := make(chan error, 1)
	go func() {
		_, err := uploader.putObject(ctx, bucket, jetstream.ObjectMeta{Name: name}, g, hex.EncodeToString(sum[:]), nil)
		done <- err
	}()
	<-g.reached
	var subj string
	testutil.Eventually(h.t, 10*time.Second, "the upload's first 2 chunks stored", func() bool {
		subjs := h.chunkSubjects(bucket)
		if len(subjs) != 1 {
			return false
		}
		subj = subjs[0]
		return h.msgsOn(bucket, subj) == 2
	})
	return subj, func() { close(g.release) }, done
}

// chunkSubjects lists the subjects of bucket's stream that hold chunks.
func (h *harness) chunkSubjects(bucket string) []string {
	h.t.Helper()
	return slices.Collect(maps.Keys(h.subjectMsgs(bucket, chunkSubject(bucket, ">"))))
}

// The chunks of an upload in flight, which no metadata names yet, are
// spared by another ctl's reclaimChunks however short its prune_grace
// (which is about builds a deploy pins, not chunks): purged, they would
// leave the upload to store metadata naming chunks gone, an object that
// reads as corrupt.
func TestReclaimSparesUploadInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	bucket := names.BinariesBucket
	content := bytes.Repeat([]byte("abcdefgh"), 3*uploadChunk/8)
	subj, release, done := h.heldUpload(bucket, "hello/1.0.0/x", content)

	var stderr bytes.Buffer
	other := h.env(&stderr)
	other.cfg.Ctl.PruneGrace = config.Duration(0)
	other.reclaimChunks(ctx, bucket, false)
	if n := h.msgsOn(bucket, subj); n != 2 {
		t.Errorf("%d chunks of the upload in flight left by reclaimChunks; want 2", n)
	}
	if stderr.Len() > 0 {
		t.Errorf("reclaimChunks said %q; want nothing reclaimed", stderr.String())
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("upload: %v", err)
	}
	obs, err := h.js.ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	got, err := obs.GetBytes(ctx, "hello/1.0.0/x")
	if err != nil {
		t.Fatalf("read the object uploaded: %v", err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("object holds %d bytes, want the %d uploaded", len(got), len(content))
	}
}

// An upload whose chunks are removed while it runs (by a ctl whose clock
// or timeout let it judge them orphans, or by hand) fails before it
// stores its metadata: stored, it would name chunks gone, an object that
// reads as corrupt and that no node can fetch.
func TestUploadFailsWhenItsChunksAreRemoved(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	bucket := names.BinariesBucket
	content := bytes.Repeat([]byte("abcdefgh"), 3*uploadChunk/8)
	subj, release, done := h.heldUpload(bucket, "hello/1.0.0/x", content)

	s, err := h.js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		t.Fatal(err)
	}
	release()
	err = <-done
	if want := "removed while it ran"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("upload: %v; want an error saying %q", err, want)
	}
	obs, err := h.js.ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := obs.GetInfo(ctx, "hello/1.0.0/x", jetstream.GetObjectInfoShowDeleted()); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("metadata of the failed upload: %+v, %v; want none", info, err)
	}
	if n := h.msgsOn(bucket, subj); n != 0 {
		t.Errorf("the failed upload left %d chunks", n)
	}
}
