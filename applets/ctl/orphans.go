package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/store"
)

// reclaimChunks purges the chunks in bucket that no object's metadata
// names: those of an upload cut short (ctl killed, its connection lost, a
// write refused on a full disk) whose own purge (putObject) never reached
// the server. No listing shows them and no prune of objects finds them,
// yet they count against the store's limits: left there, they fail every
// later upload with "insufficient resources". What it reclaims is said on
// stderr; a failure only leaves them for the next time.
//
// Chunk subjects are found in the index of the stream's subjects, which
// costs the server no read; which ids the objects use takes a read of each
// object's metadata, and of the block of 8 MiB that holds it, as image list
// reads. thorough asks for that read whatever the index says. Otherwise it
// is made only when the index holds more chunk subjects than objects,
// which a store without orphans never does: a deploy or files put, which
// call it before each upload, pays for one listing. An object without
// chunks (an empty file, a deletion marker) can hide an orphan from that
// count; image delete and files delete, thorough, find it.
func (e *env) reclaimChunks(ctx context.Context, bucket string, thorough bool) {
	orphans, now, err := e.orphanChunks(ctx, bucket, thorough)
	var unreadable *unreadableMetaError
	if errors.As(err, &unreadable) {
		// Left at that, the store fills with no word of why.
		e.warnf("the chunks of uploads cut short in %s are kept: %v, and the chunks it names cannot be told from theirs; %s", bucket, err, removeUnreadable(bucket, unreadable))
		return
	}
	if err != nil {
		e.log.Debug("look for chunks no object names", "bucket", bucket, "err", err)
		return
	}
	e.purgeOrphans(ctx, bucket, orphans, now)
}

// orphanChunks maps each chunk subject of bucket whose id no object's
// metadata (a deletion marker's included: pruneObject purges those chunks
// with the marker) names to its number of messages, and returns the
// server's clock as it answered.
func (e *env) orphanChunks(ctx context.Context, bucket string, thorough bool) (map[string]uint64, time.Time, error) {
	s, err := e.objectStream(ctx, bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	// Listed before any metadata is read: an upload that stores its
	// metadata after that read has chunks younger than the grace, which
	// purgeOrphans spares.
	var info *jetstream.StreamInfo
	err = e.within(ctx, func(ctx context.Context) (err error) {
		info, err = s.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".>"))
		return err
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list the subjects of %s: %w", bucket, err)
	}
	now := info.TimeStamp
	if now.IsZero() {
		// A server too old to say, as objectNames.
		now = e.serverNow()
	}
	chunks := map[string]uint64{}
	var metas []string
	for subj, n := range info.State.Subjects {
		if strings.HasPrefix(subj, chunkSubject(bucket, "")) {
			chunks[subj] = n
		} else if strings.HasPrefix(subj, store.ObjectMetaSubject(bucket, "")) {
			metas = append(metas, subj)
		}
	}
	if len(chunks) == 0 || !thorough && len(chunks) <= len(metas) {
		return nil, now, nil
	}
	for _, subj := range metas {
		m, err := e.lastMsg(ctx, bucket, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Purged since listed: an object deleted, its chunks first.
			continue
		}
		if err != nil {
			return nil, time.Time{}, err
		}
		var oi jetstream.ObjectInfo
		if err := json.Unmarshal(m.Data, &oi); err != nil {
			// Chunks it may name cannot be told from orphans.
			return nil, time.Time{}, &unreadableMetaError{bucket: bucket, subject: subj, err: err}
		}
		delete(chunks, chunkSubject(bucket, oi.NUID))
	}
	return chunks, now, nil
}

// orphanGrace is how long chunks no object names are spared after their
// last one was stored: an upload in flight stores a chunk every few
// seconds while it moves, gives up once none is acknowledged for its
// timeout (putObject), and stores its metadata right after the last, so
// chunks untouched for twice that timeout, and never less than
// deployInFlight, belong to no upload that can still finish. prune_grace
// has no say: it is about builds a deploy pins, and one of "0s" would
// purge the chunks of another ctl's upload under way. This ctl's timeout
// stands for the uploader's, which it cannot know; an upload whose chunks
// are purged all the same (its timeout set far longer) fails before its
// metadata is stored (sendObject), not with an object that reads as
// corrupt.
func (e *env) orphanGrace() time.Duration {
	return max(deployInFlight, 2*e.timeout)
}

// purgeOrphans purges the chunk subjects of orphans (their message counts)
// whose last message is older than orphanGrace on the server's clock now,
// and says what it reclaimed. Only the messages judged are purged: a chunk
// stored after them stays, for the next time.
func (e *env) purgeOrphans(ctx context.Context, bucket string, orphans map[string]uint64, now time.Time) {
	if len(orphans) == 0 {
		return
	}
	s, err := e.objectStream(ctx, bucket)
	if err != nil {
		e.log.Debug("open stream", "bucket", bucket, "err", err)
		return
	}
	var uploads int
	var size uint64
	for subj, n := range orphans {
		last, err := e.lastMsg(ctx, bucket, subj)
		if err != nil {
			e.log.Debug("read the last chunk no object names", "subject", subj, "err", err)
			continue
		}
		if age := now.Sub(last.Time); age < e.orphanGrace() {
			e.log.Debug("chunks no object names kept for now: an upload may be storing them", "subject", subj, "age", age)
			continue
		}
		// Chunks are all of one size but the last: the first tells it.
		octx, cancel := e.op(ctx)
		first, err := s.GetMsg(octx, 1, jetstream.WithGetMsgSubject(subj))
		cancel()
		if err != nil {
			e.log.Debug("read the first chunk no object names", "subject", subj, "err", err)
			continue
		}
		octx, cancel = e.op(ctx)
		err = s.Purge(octx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(last.Sequence+1))
		cancel()
		if store.DiskFull(err) {
			// The store's error, kept since a write failed: it takes no
			// purge either until its server restarts, so the others would
			// fail the same way. The operator is the one to free space,
			// and no later write says so if this one does not.
			e.warnf("purge the chunks of uploads cut short in %s: %v", bucket, diskFullError(bucket, err))
			break
		}
		if err != nil {
			// Another ctl's reclaim or delete of the same chunks, or a
			// lost connection that the command's own request reports:
			// the chunks are only left for the next time.
			e.log.Debug("purge chunks no object names", "subject", subj, "err", err)
			continue
		}
		uploads++
		size += (n-1)*uint64(len(first.Data)) + uint64(len(last.Data))
	}
	if uploads == 0 {
		return
	}
	what := "the chunks of an upload cut short"
	if uploads > 1 {
		what = fmt.Sprintf("the chunks of %d uploads cut short", uploads)
	}
	e.infof("reclaimed %s in %s: %s, which no object names", humanSize(size), bucket, what)
}

// lastMsg reads the last message on subject of bucket's stream from its
// leader, which has every message it acknowledged: a replica that lags
// could miss the metadata that names chunks.
func (e *env) lastMsg(ctx context.Context, bucket, subject string) (*jetstream.RawStreamMsg, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	return untilAnswered(octx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return store.LastFromLeader(ctx, e.nc, "OBJ_"+bucket, subject)
	})
}

// objectStream opens the stream of bucket, an object store, with a
// deadline of its own (within), so that what is done with it next has the
// whole --timeout too.
func (e *env) objectStream(ctx context.Context, bucket string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := e.within(ctx, func(ctx context.Context) (err error) {
		s, err = e.js.Stream(ctx, "OBJ_"+bucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open stream of %s: %w", bucket, err)
	}
	return s, nil
}

// chunkSubject is the subject of the chunks of an object of id, as nats.go
// names it; with id "", the prefix of them all.
func chunkSubject(bucket, id string) string {
	return "$O." + bucket + ".C." + id
}
