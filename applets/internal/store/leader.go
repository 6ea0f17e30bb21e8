package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastFromLeader reads the last message of stream on subject from the
// stream's leader. Stream.GetLastMsgForSubject and KeyValue.Get send a
// direct get when the stream allows them, as narun's buckets do, which any
// replica answers; and a watch's consumer may sit on any replica. In a
// cluster a replica that has just restarted may not hold yet what was
// written while it was down, and answers with an older value, or that
// there is none. The leader has every message it acknowledged.
func LastFromLeader(ctx context.Context, nc *nats.Conn, stream, subject string) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(map[string]string{"last_by_subj": subject})
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("read the last message of %s on %s: %w", stream, subject, err)
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("read the last message of %s on %s: %w", stream, subject, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		// Kept as the API error it is: "JetStream system temporarily
		// unavailable" is worth asking again, and only its code says so.
		return nil, fmt.Errorf("read the last message of %s on %s: %w", stream, subject, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("read the last message of %s on %s: empty answer", stream, subject)
	}
	m := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("read the last message of %s on %s: its headers: %w", stream, subject, err)
		}
	}
	return m, nil
}

// LeaderCheck corrects the first values of a KV watch, and entries read with
// Get, by the bucket's leader. nats-server places a watch's consumer on any
// replica caught up with the meta group, not with the stream, and a Get is
// a direct get any replica answers: a replica that has just restarted gives
// what it held when it went down. Applying that would roll a value back,
// and forward again once the replica caught up. One LeaderCheck serves one
// watch (or one pass of reads).
type LeaderCheck struct {
	nc     *nats.Conn
	bucket string
	log    *slog.Logger
	// failed stops the reads: after one that failed (no quorum, no
	// answer), one per key would only hold the others up as long. A key
	// the leader holds no record of is an answer, not a failure.
	failed bool
	// taken holds, by key, the revision taken from the leader where the
	// entry read was older.
	taken map[string]uint64
}

// NewLeaderCheck checks entries of the KV bucket named bucket through nc,
// and logs to log when the leader's entry is taken.
func NewLeaderCheck(nc *nats.Conn, bucket string, log *slog.Logger) *LeaderCheck {
	return &LeaderCheck{nc: nc, bucket: bucket, log: log}
}

// Entry is a key's value as it is to be applied.
type Entry struct {
	Value    []byte
	Revision uint64
	// Created is when the server stored the entry; zero for a key the
	// leader holds no record of.
	Created time.Time
	// Deleted is a delete or purge: the key holds no value.
	Deleted bool
}

// Latest returns e, or the key's last entry as the leader has it when that
// is newer. Without an answer from the leader (no quorum) it returns e, and
// asks the leader no more; a leader that holds no record of the key has
// answered, and Latest returns e.
func (c *LeaderCheck) Latest(ctx context.Context, e jetstream.KeyValueEntry) Entry {
	read := Entry{Value: e.Value(), Revision: e.Revision(), Created: e.Created(), Deleted: e.Operation() != jetstream.KeyValuePut}
	if c.failed {
		return read
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A leader that holds no record of the key (every message of it
	// purged, or a store that lost them) says nothing of a newer value:
	// its revision 0 leaves the entry as read, and the leader's word on the
	// other keys is still worth asking.
	leader, err := EntryFromLeader(ctx, c.nc, c.bucket, e.Key())
	if err != nil {
		c.failed = true
		c.log.Debug("read an entry from the leader of its bucket", "bucket", c.bucket, "key", e.Key(), "err", err)
		return read
	}
	if leader.Revision <= e.Revision() {
		return read
	}
	c.log.Info("a replica of "+c.bucket+" behind its leader gave an earlier revision; taking the leader's", "key", e.Key(), "revision", e.Revision(), "leader_revision", leader.Revision)
	if c.taken == nil {
		c.taken = map[string]uint64{}
	}
	c.taken[e.Key()] = leader.Revision
	return leader
}

// EntryFromLeader reads key's last entry in the KV bucket from the bucket's
// leader (LastFromLeader): what a writer reads back right after its own
// write, which a replica behind may not hold yet. A key the leader holds
// no record of is Deleted, at revision 0.
func EntryFromLeader(ctx context.Context, nc *nats.Conn, bucket, key string) (Entry, error) {
	// The key ends a subject the leader matches: one with a wildcard
	// would read another key's entry.
	if !validKey(key) {
		return Entry{}, fmt.Errorf("read %q of %s: %w", key, bucket, jetstream.ErrInvalidKey)
	}
	m, err := LastFromLeader(ctx, nc, "KV_"+bucket, "$KV."+bucket+"."+key)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return Entry{Deleted: true}, nil
	case err != nil:
		return Entry{}, err
	case entryOp(m.Header) != jetstream.KeyValuePut:
		return Entry{Revision: m.Sequence, Created: m.Time, Deleted: true}, nil
	}
	return Entry{Value: m.Data, Revision: m.Sequence, Created: m.Time}, nil
}

// GetFromLeader is KeyValue.Get answered by the bucket's leader
// (EntryFromLeader): a key deleted, or never written, is ErrKeyNotFound.
func GetFromLeader(ctx context.Context, nc *nats.Conn, bucket, key string) (jetstream.KeyValueEntry, error) {
	e, err := EntryFromLeader(ctx, nc, bucket, key)
	if err != nil {
		return nil, err
	}
	if e.Deleted {
		return nil, jetstream.ErrKeyNotFound
	}
	return &entry{bucket: bucket, key: key, value: e.Value, revision: e.Revision, created: e.Created}, nil
}

// validKey is nats.go's rule for a KV key: letters, digits and -/_=.
// in dot-separated tokens, none empty.
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") {
		return false
	}
	for _, c := range []byte(key) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-/_=.", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Again lets Latest ask the leader again after a read that failed. A pass
// of reads gives up at its first failure, the others likely to fail as
// long; a watch's entries after its first values come one write at a time
// for as long as the watch lives, and one read that failed (an election, a
// slow answer) must not leave every later one unchecked.
func (c *LeaderCheck) Again() { c.failed = false }

// kvOperation is the header nats.go's KV marks a delete or purge with.
const kvOperation = "KV-Operation"

// Older says whether e is older than the revision Latest took from the
// leader for its key: a replica catching up then sends what was written
// while it was behind, and applying it would pass through those values.
func (c *LeaderCheck) Older(e jetstream.KeyValueEntry) bool {
	return e.Revision() < c.taken[e.Key()]
}

// Taken is the revision Latest took from the leader for key, 0 for none.
func (c *LeaderCheck) Taken(key string) uint64 { return c.taken[key] }
