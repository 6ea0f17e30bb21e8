package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/narun/narun/applets/internal/store"
)

const (
	// uploadChunk is a quarter of the chunk nats.go's Object Store
	// uses, so that one chunk queued on a link of 64 kbit/s is sent in
	// 4 s: the pings of the connection wait behind it (below).
	uploadChunk = 32 << 10
	// uploadQueue is how much of the link's time the chunks in flight may
	// take. The connection's pings queue behind them, and one unanswered
	// for 6 s closes the connection (cli.NATSOptions): an upload that
	// queued 1 MiB on a link of 1 Mbit/s (8 s) cut itself off.
	uploadQueue = 2 * time.Second
	// uploadWindowMax bounds the bytes in flight however fast the link:
	// 1 MiB still fills 10 Mbit/s 800 ms away (window over round trip).
	uploadWindowMax = 1 << 20
)

// putObject stores what r holds as object meta.Name of bucket, as nats.go's
// ObjectStore.Put does (chunks on a subject of a new id, then the
// metadata, rolled up), with two differences that matter over a slow or
// lossy link. It gives up only once no chunk has been acknowledged for
// e.timeout, instead of at a deadline set in advance: a 10 MiB binary
// takes 84 s at 1 Mbit/s, and any deadline small enough to notice a dead
// link soon fails such an upload. And a failed upload purges the chunks
// it sent, whose id no object names: Put leaves them when its context
// ends, and each retry of a deploy added a binary's worth. Those whose
// purge does not reach the server wait for reclaimChunks, which spares
// them for minutes, as it would an upload in flight. The content must
// have SHA-256 sum (hex), as the caller hashed it before: a file that changed since fails the
// upload before its metadata is stored, as any other failure, so that no
// object ever holds other bytes than its name and metadata say, and the
// object it would have replaced stays whole. acked, when set, is told the
// size of each chunk the server has stored.
func (e *env) putObject(ctx context.Context, bucket string, meta jetstream.ObjectMeta, r io.Reader, sum string, acked func(int)) (*jetstream.ObjectInfo, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	s, err := e.js.Stream(octx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("open stream of %s: %w", bucket, err)
	}
	// The object it replaces, whose chunks are removed once the new
	// metadata is stored. Read from the leader: a replica behind names
	// older chunks, gone already, and the replaced ones stayed.
	old, err := untilAnswered(octx, func(ctx context.Context) (*jetstream.ObjectInfo, error) {
		return store.ObjectInfoFromLeader(ctx, e.nc, bucket, meta.Name, true)
	})
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("read %s: %w", meta.Name, err)
	}
	id := nuid.Next()
	chunks := chunkSubject(bucket, id)
	info, err := e.sendObject(ctx, bucket, id, meta, r, sum, acked)
	if err == nil {
		if old != nil && old.NUID != "" {
			if err := e.purgeChunks(ctx, bucket, old); err != nil {
				e.warnf("%s stored; the content it replaced is left in %s: %v", meta.Name, bucket, err)
			}
		}
		return info, nil
	}
	// Sent even once the upload was interrupted, and though the link
	// that failed it may not carry the answer: the server purges
	// whatever reaches it.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.timeout)
	defer cancel()
	perr := s.Purge(pctx, jetstream.WithPurgeSubject(chunks))
	switch {
	case store.DiskFull(perr):
		// nats-server left the writes unanswered and kept their error,
		// which it answers the purge with.
		return nil, fmt.Errorf("%w: %w", err, diskFullError(bucket, perr))
	case perr != nil:
		return nil, fmt.Errorf("%w (and removing the chunks sent: %v)", err, perr)
	}
	return nil, err
}

func (e *env) sendObject(ctx context.Context, bucket, id string, meta jetstream.ObjectMeta, r io.Reader, sum string, acked func(int)) (*jetstream.ObjectInfo, error) {
	type sent struct {
		ack  jetstream.PubAckFuture
		size int
	}
	var inflight []sent
	var pending, done int
	start := time.Now()
	// window is what may be in flight: what the link carried in
	// uploadQueue, at the rate acknowledged so far, so that it grows
	// from one chunk as fast as acknowledgements come.
	window := func() int {
		w := int(float64(done) * uploadQueue.Seconds() / time.Since(start).Seconds())
		return min(max(w, uploadChunk), uploadWindowMax)
	}
	// oldest waits for the oldest chunk in flight: the timer starts
	// anew with each acknowledgement, so only a link that carries
	// nothing for e.timeout fails the upload.
	oldest := func() error {
		t := time.NewTimer(e.timeout)
		defer t.Stop()
		select {
		case <-inflight[0].ack.Ok():
		case err := <-inflight[0].ack.Err():
			if store.OutOfStorage(err) {
				return fmt.Errorf("store a chunk: %w: JetStream has no room for it: delete the images and files no spec uses (narun ctl image delete, files delete), free space on the disk of the server's data_dir, or raise its [nats.jetstream] max_store", err)
			}
			return fmt.Errorf("store a chunk: %w", err)
		case <-t.C:
			return fmt.Errorf("no chunk acknowledged for %s: %w", e.timeout, nats.ErrTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
		if acked != nil {
			acked(inflight[0].size)
		}
		pending -= inflight[0].size
		done += inflight[0].size
		inflight = inflight[1:]
		return nil
	}
	h := sha256.New()
	var size uint64
	var n uint32
	for {
		// Each chunk its own buffer: nats.go keeps a message to send it
		// again when JetStream had no responder.
		buf := make([]byte, uploadChunk)
		k, rerr := io.ReadFull(r, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read: %w", rerr)
		}
		if k > 0 {
			for len(inflight) > 0 && pending+k > window() {
				if err := oldest(); err != nil {
					return nil, err
				}
			}
			h.Write(buf[:k])
			m := nats.NewMsg(chunkSubject(bucket, id))
			m.Data = buf[:k]
			ack, err := e.js.PublishMsgAsync(m)
			if err != nil {
				return nil, fmt.Errorf("send a chunk: %w", err)
			}
			inflight = append(inflight, sent{ack, k})
			pending += k
			size += uint64(k)
			n++
		}
		if rerr != nil {
			break
		}
	}
	for len(inflight) > 0 {
		if err := oldest(); err != nil {
			return nil, err
		}
	}
	// The metadata is what makes the chunks an object: once stored, an
	// upload of other bytes than those hashed would stand under a name
	// that pins a digest it does not have.
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return nil, fmt.Errorf("check the content sent: sha256 %s, not %s as hashed before (changed since?)", got, sum)
	}
	// Nor may it name chunks gone: another ctl reclaims those no object
	// names (reclaimChunks), which ours are until the metadata is stored,
	// and one that misjudged this upload's age would leave an object that
	// reads as corrupt, replacing a whole one.
	if err := e.checkChunks(ctx, bucket, id, n); err != nil {
		return nil, err
	}
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: uploadChunk}
	info := &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: bucket, NUID: id, Size: size, Chunks: n, Digest: jetstream.GetObjectDigestValue(h)}
	b, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	mm := nats.NewMsg(store.ObjectMetaSubject(bucket, meta.Name))
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	mm.Data = b
	octx, cancel := e.op(ctx)
	defer cancel()
	if _, err := e.js.PublishMsg(octx, mm); err != nil {
		return nil, fmt.Errorf("store metadata: %w", err)
	}
	info.ModTime = time.Now().UTC()
	return info, nil
}

// checkChunks fails unless bucket's stream holds exactly n chunks of the
// object of id, as the upload that sent them acknowledged.
func (e *env) checkChunks(ctx context.Context, bucket, id string, n uint32) error {
	octx, cancel := e.op(ctx)
	defer cancel()
	s, err := e.js.Stream(octx, "OBJ_"+bucket)
	if err != nil {
		return fmt.Errorf("open stream of %s: %w", bucket, err)
	}
	subj := chunkSubject(bucket, id)
	info, err := s.Info(octx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return fmt.Errorf("count the chunks sent: %w", err)
	}
	if got := info.State.Subjects[subj]; got != uint64(n) {
		return fmt.Errorf("count the chunks sent: %d of %d stored: chunks of this upload were removed while it ran (another ctl reclaiming space?): run it again", got, n)
	}
	return nil
}
