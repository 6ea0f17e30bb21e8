package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// openResend is how long the opening of an object may go unanswered before
// it is sent again. JetStream answers it at once when it can; a member that
// has just lost its group's leader, or was handed the request by one that
// died, drops it without a word, and the same request sent again is
// answered by the members that are left.
const openResend = 2 * time.Second

// OpenObject opens name in obs for a read that may take read in all, and
// sends the opening again each time it goes unanswered for openResend (or
// is refused in a way that passes, Unanswered).
// nats.go's Get reads the object's info and creates the consumer of its
// chunks under the context of the whole read: one of those requests left
// unanswered waited out the read's deadline, sized for a slow link (ctl
// reading back a 10 MiB binary just after a cluster member died hung for
// 22 minutes). Closing the result ends the read's context.
func OpenObject(ctx context.Context, obs jetstream.ObjectStore, name string, read time.Duration) (jetstream.ObjectResult, error) {
	ctx, end := context.WithTimeout(ctx, read)
	backoff := 50 * time.Millisecond
	for {
		attempt, cancel := context.WithCancel(ctx)
		unanswered := time.AfterFunc(openResend, cancel)
		obj, err := obs.Get(attempt, name)
		answered := unanswered.Stop()
		if answered && err == nil {
			if err := checkEmpty(obj); err != nil {
				_ = obj.Close()
				cancel()
				end()
				return nil, fmt.Errorf("open %s: %w", name, err)
			}
			return &openObject{ObjectResult: obj, end: func() { cancel(); end() }}, nil
		}
		if obj != nil {
			_ = obj.Close()
		}
		cancel()
		if !answered {
			err = fmt.Errorf("open %s: no answer from JetStream in %s: %w", name, openResend, context.DeadlineExceeded)
		}
		if ctx.Err() != nil || answered && !Unanswered(err) {
			end()
			return nil, err
		}
		if !answered {
			continue
		}
		select {
		case <-ctx.Done():
			end()
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// emptyDigest is the SHA-256 of no bytes.
var emptyDigest = sha256.Sum256(nil)

// checkEmpty refuses an object whose metadata says it is empty, unless its
// digest is that of no bytes: nats.go reads such an object as no bytes
// without checking its digest, as it checks every other one at the end of
// the read, and metadata rewritten to say so would pass any object off as
// verified.
func checkEmpty(obj jetstream.ObjectResult) error {
	info, err := obj.Info()
	if err != nil || info.Size != 0 {
		return err
	}
	if d, err := jetstream.DecodeObjectDigest(info.Digest); err != nil || !bytes.Equal(d, emptyDigest[:]) {
		return fmt.Errorf("its metadata says it is empty, but its digest %q is not that of no bytes: %w", info.Digest, jetstream.ErrDigestMismatch)
	}
	return nil
}

// openObject ends its read's context when closed.
type openObject struct {
	jetstream.ObjectResult
	end func()
}

func (o *openObject) Close() error {
	defer o.end()
	return o.ObjectResult.Close()
}

// ObjectInfoFromLeader is ObjectStore.GetInfo answered by the leader of the
// object store bucket (LastFromLeader). GetInfo reads the object's
// metadata with a direct get, which a replica behind its leader, in a
// cluster, answers without the object just put. A deleted object is
// ErrObjectNotFound, as GetInfo has it, unless showDeleted (nats.go's
// GetObjectInfoShowDeleted).
func ObjectInfoFromLeader(ctx context.Context, nc *nats.Conn, bucket, name string, showDeleted bool) (*jetstream.ObjectInfo, error) {
	if name == "" {
		return nil, jetstream.ErrNameRequired
	}
	m, err := LastFromLeader(ctx, nc, "OBJ_"+bucket, ObjectMetaSubject(bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrObjectNotFound
	}
	if err != nil {
		return nil, err
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("read the metadata of %s in %s: %w: %w", name, bucket, jetstream.ErrBadObjectMeta, err)
	}
	if info.Deleted && !showDeleted {
		return nil, jetstream.ErrObjectNotFound
	}
	info.ModTime = m.Time
	return &info, nil
}

// ObjectMetaSubject is the subject of the metadata of name in the object
// store bucket, as nats.go writes it; with name "", the prefix of them
// all.
func ObjectMetaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}
