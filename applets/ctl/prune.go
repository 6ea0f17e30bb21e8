package ctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

// pruneSuperseded deletes the builds of the app, of any version, that no
// stored spec pins and no kept revision of a deployed app does: an object
// is never overwritten, so without this every deploy would keep its
// predecessor in the store for good, and narun-binaries would grow with
// each version deployed until the disk is full. A build a kept revision
// pins stays, so that app rollback can restore that revision; the next
// deploy deletes it once the revision has left the history. A build that
// a stored spec or kept revision this ctl cannot parse names stays as well
// (unparsedMentions). A deploy over a stored spec this key did not sign,
// or one nodes cannot parse (prev.app is nil), prunes nothing: the objects
// such a spec names are not this deploy's to judge. A first deploy, or
// one after app delete, does prune: an app deleted and deployed again
// would otherwise keep the builds of each of its lives. It runs once the
// new spec is stored; a failure leaves an unused object behind, which is
// only worth a warning.
//
// A build younger than [ctl] prune_grace stays too: another deploy of the
// app may have uploaded it and not yet stored the spec that pins it, and
// no read of the specs can tell that build from one left by a deploy that
// failed. Its age is counted on the server's clock, which stamped both the
// object and the listing, so that a ctl host whose clock is wrong does not
// delete a build moments old.
func (e *env) pruneSuperseded(ctx context.Context, prev current, next *spec.App) {
	if prev.rev != 0 && prev.app == nil {
		return
	}
	builds, now, err := e.buildsOf(ctx, next.Name)
	if err != nil {
		e.log.Debug("list binaries before pruning", "err", err)
		return
	}
	var stale []string
	for _, name := range builds {
		if !slices.Contains(binaryRefs(next), name) {
			stale = append(stale, name)
		}
	}
	if len(stale) == 0 {
		return
	}
	used, _, err := e.users(ctx, nil, binaryRefs)
	if err != nil {
		e.log.Debug("read specs before pruning binaries", "err", err)
		return
	}
	kept, err := e.keptPins(ctx, binaryRefs)
	if err != nil {
		e.log.Debug("read the apps' history before pruning binaries", "err", err)
		return
	}
	var unpinned []string
	for _, name := range stale {
		if len(used[name]) == 0 && len(kept[name]) == 0 {
			unpinned = append(unpinned, name)
		}
	}
	if len(unpinned) == 0 {
		return
	}
	unread, err := e.unparsedMentions(ctx, unpinned)
	if err != nil {
		e.log.Debug("read the specs this ctl cannot parse before pruning binaries", "err", err)
		return
	}
	for _, name := range unpinned {
		if specs := unread[name]; len(specs) > 0 {
			e.log.Debug("binary named by a spec this ctl cannot parse kept", "object", name, "specs", specs)
			continue
		}
		if err := e.pruneObject(ctx, names.BinariesBucket, name, now); err != nil {
			e.warnf("superseded binary %s not deleted: %v (narun ctl image delete removes it)", name, err)
		}
	}
}

// unparsedMentions maps each of objs to the stored specs of deployed apps,
// current or kept for app rollback, that this ctl cannot parse and whose
// text holds its name. keptPins skips such a spec, as users does when
// given no names. A newer ctl may have stored it, and nodes or a newer
// rollback may run it: which objects it pins is unknown, so every one it
// names counts as pinned.
func (e *env) unparsedMentions(ctx context.Context, objs []string) (map[string][]string, error) {
	m := map[string][]string{}
	mentions := func(spec string, raw []byte) {
		for _, o := range mentioned(raw, objs) {
			m[o] = append(m[o], spec)
		}
	}
	err := e.eachHistory(ctx, func(d deployed, revs []revision) {
		if d.app == nil {
			mentions(d.name, d.raw)
		}
		for _, r := range revs {
			if !r.Current && r.isSpec() && r.app == nil {
				mentions(fmt.Sprintf("%s revision %d", d.name, r.Revision), r.raw)
			}
		}
	})
	return m, err
}

// mentioned is which of names the text of a spec holds whole: all that a
// spec this ctl cannot parse may pin, as far as it can tell. A name counts
// wherever the bytes either side of it could not be part of a name, so
// that a secret or file named as briefly as "db" or "conf" is not taken
// for one that "mydb", "db-password" or "config" names. Matching only a
// quoted "name" would be tighter still, but would miss the same name as a
// literal string ('name'), a bare or dotted key ([secrets.name]), or
// whatever form a newer spec gives it; a name counted in error costs a
// --force, one missed deletes what an app may run with.
func mentioned(raw []byte, names []string) []string {
	var found []string
	for _, n := range names {
		if holdsWhole(raw, n) {
			found = append(found, n)
		}
	}
	return found
}

// holdsWhole reports whether name occurs in raw with neither neighbour a
// letter, digit, '_' or '-'. '.' and '/' are not counted as such: they
// separate the parts of a dotted key or of a path, and a name
// (spec.ValidObjectName) never begins or ends with '.'.
func holdsWhole(raw []byte, name string) bool {
	// "" would match at every byte and is no name (secret delete "").
	if name == "" {
		return false
	}
	for i := 0; ; {
		j := bytes.Index(raw[i:], []byte(name))
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (start == 0 || !nameByte(raw[start-1])) && (end == len(raw) || !nameByte(raw[end])) {
			return true
		}
		i = start + 1
	}
}

func nameByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-'
}

// pruneObject deletes name from bucket unless it was stored, or stamped by
// a deploy, less than prune_grace before now (the server's clock). A
// deletion marker (one an image delete failed to purge) is purged whatever
// its age, with any content a deletion cut short left behind.
func (e *env) pruneObject(ctx context.Context, bucket, name string, now time.Time) error {
	m, info, err := e.objectMeta(ctx, bucket, name)
	if errors.Is(err, errNoObject) {
		return nil
	}
	if err != nil {
		return err
	}
	if info.Deleted {
		if err := e.purgeChunks(ctx, bucket, info); err != nil {
			return err
		}
		return e.purgeObjectMeta(ctx, bucket, name, m.Sequence)
	}
	if age := now.Sub(m.Time); age < e.cfg.Ctl.PruneGrace.D() {
		e.log.Debug("binary no spec pins kept for now", "object", name, "age", age, "prune_grace", e.cfg.Ctl.PruneGrace.D())
		return nil
	}
	deleted, err := e.deleteObjectAt(ctx, bucket, m, info)
	if err == nil && !deleted {
		e.log.Debug("binary stamped by another deploy while pruning, kept", "object", name)
	}
	return err
}

// errNoObject says that an object is not in its bucket, or only as the
// marker of its deletion.
var errNoObject = errors.New("no such object")

// objectMeta reads the last metadata message of name in bucket, and what
// it says. Its sequence is what a conditional write of the object's
// metadata expects, and its time is when the server stored it.
func (e *env) objectMeta(ctx context.Context, bucket, name string) (*jetstream.RawStreamMsg, *jetstream.ObjectInfo, error) {
	if _, err := e.objectStream(ctx, bucket); err != nil {
		return nil, nil, err
	}
	// Sent again like every other JetStream request of ctl (patientJS):
	// it goes to every member, and one that takes the group for leaderless
	// for a moment (a busy device, an election) says so at once, before the
	// leader answers; a deploy or prune must not fail on that.
	var m *jetstream.RawStreamMsg
	err := e.within(ctx, func(ctx context.Context) (err error) {
		m, err = untilAnswered(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return store.LastFromLeader(ctx, e.nc, "OBJ_"+bucket, store.ObjectMetaSubject(bucket, name))
		})
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, errNoObject
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the metadata of %s: %w", name, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return m, nil, &unreadableMetaError{bucket: bucket, subject: m.Subject, err: err}
	}
	return m, &info, nil
}

// deleteObjectAt deletes the object whose last metadata message is m,
// unless that is no longer its last: the deletion marker is written only
// if no deploy stamped or uploaded the object since m. It reports whether
// it deleted the object.
func (e *env) deleteObjectAt(ctx context.Context, bucket string, m *jetstream.RawStreamMsg, info *jetstream.ObjectInfo) (bool, error) {
	marker := *info
	marker.Deleted = true
	marker.Size, marker.Chunks, marker.Digest = 0, 0, ""
	data, err := json.Marshal(marker)
	if err != nil {
		return false, fmt.Errorf("encode the deletion marker of %s: %w", info.Name, err)
	}
	msg := nats.NewMsg(m.Subject)
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Data = data
	var ack *jetstream.PubAck
	err = e.within(ctx, func(ctx context.Context) (err error) {
		ack, err = e.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(m.Sequence))
		return err
	})
	if lostRace(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mark %s deleted: %w", info.Name, e.sayDiskFullAt(ctx, "OBJ_"+bucket, bucket, m.Subject, m.Sequence, err))
	}
	if err := e.purgeChunks(ctx, bucket, info); err != nil {
		return true, err
	}
	return true, e.purgeObjectMeta(ctx, bucket, info.Name, ack.Sequence)
}

// purgeChunks removes the content of the object info describes, once it
// is marked deleted: an upload of the same name since uses chunks of
// another id.
func (e *env) purgeChunks(ctx context.Context, bucket string, info *jetstream.ObjectInfo) error {
	if info.NUID == "" {
		return nil
	}
	s, err := e.objectStream(ctx, bucket)
	if err != nil {
		return err
	}
	if err := e.within(ctx, func(ctx context.Context) error {
		return s.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(bucket, info.NUID)))
	}); err != nil {
		return fmt.Errorf("purge the content of %s: %w", info.Name, err)
	}
	return nil
}

// stampHeader marks object metadata a deploy's stamp wrote; a later put
// of the object writes it without.
const stampHeader = "Narun-Stamped"

// stampObject writes the metadata of name in bucket again as it is, which
// makes the server stamp it with its current time: pruning then takes the
// object for one just uploaded. A deploy stamps the builds and files its
// spec pins just before storing it (stampPins), so that a concurrent
// deploy's prune spares one it reuses (uploaded long ago, by a deploy that
// failed or for a spec no longer kept) as it spares one it uploaded, and
// image delete and files delete refuse it. The write expects the
// metadata read. It returns errNoObject when a prune deleted the object
// first, and an error when its content is not sha256 (hex), which a
// deploy is not to pin.
func (e *env) stampObject(ctx context.Context, bucket, name, sha256 string) error {
	m, err := e.pinnable(ctx, bucket, name, sha256)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(m.Subject)
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Header.Set(stampHeader, "1")
	msg.Data = m.Data
	octx, cancel := e.op(ctx)
	_, err = e.js.PublishMsg(octx, msg, jetstream.WithExpectLastSequencePerSubject(m.Sequence))
	cancel()
	if err == nil {
		return nil
	}
	if !lostRace(err) {
		return fmt.Errorf("stamp %s: %w", name, e.sayDiskFullAt(ctx, "OBJ_"+bucket, bucket, m.Subject, m.Sequence, err))
	}
	// The metadata changed since it was read: a prune deleted the object,
	// or another deploy pinning it stamped it, which is as recent as this
	// stamp would be. A deploy that wrote again until it won could lose
	// to each of the deploys that run beside it, and fail: concurrent
	// deploys of apps that share a build are common.
	_, err = e.pinnable(ctx, bucket, name, sha256)
	return err
}

// diskFull asks stream, that of bucket, whether a write went
// unacknowledged because the disk is full: nats-server answers no write
// its store failed, nor any later one to that stream until it restarts,
// but answers a purge with the error it kept. The purge is of the
// messages of subject before seq, which the caller picks so that there
// are none: for an object's metadata, which keeps only its last message,
// the sequence of the one read.
func (e *env) diskFull(ctx context.Context, stream, bucket, subject string, seq uint64) error {
	octx, cancel := e.op(ctx)
	defer cancel()
	s, err := e.js.Stream(octx, stream)
	if err != nil {
		return nil
	}
	err = s.Purge(octx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(seq))
	if !store.DiskFull(err) {
		return nil
	}
	return diskFullError(bucket, err)
}

// diskFullError says that the store of bucket failed a write for want of
// disk space (err, as store.DiskFull reports it), and the way out.
func diskFullError(bucket string, err error) error {
	return fmt.Errorf("the NATS server's disk is full, and its JetStream store takes no writes to %s until the server restarts (%w): free space on the disk of that server's data_dir, which ctl cannot do, as deleting is writing too; narun up and narun nats restart the server once the disk has room again, then run this again",
		bucket, err)
}

// pinnable reads the metadata of name in bucket, and returns errNoObject
// when it was deleted and an error when its content is not sha256.
func (e *env) pinnable(ctx context.Context, bucket, name, sha256 string) (*jetstream.RawStreamMsg, error) {
	m, info, err := e.objectMeta(ctx, bucket, name)
	if err != nil {
		return nil, err
	}
	if info.Deleted {
		return nil, errNoObject
	}
	if got := store.DigestHex(info); got != sha256 {
		return nil, fmt.Errorf("%s now holds sha256 %s, not %s", name, got, sha256)
	}
	return m, nil
}

// buildsOf lists the objects of app's builds in narun-binaries, deleted
// ones included, by objectNames, and returns the server's clock as it
// answered. Deploy's prune and app delete find an app's builds with it, so
// that neither reads the rest of the store.
func (e *env) buildsOf(ctx context.Context, app string) ([]string, time.Time, error) {
	if _, err := e.objects(ctx, names.BinariesBucket); err != nil {
		return nil, time.Time{}, err
	}
	all, now, err := e.objectNames(ctx, names.BinariesBucket)
	if err != nil {
		return nil, time.Time{}, err
	}
	var builds []string
	for _, name := range all {
		if strings.HasPrefix(name, app+"/") {
			builds = append(builds, name)
		}
	}
	return builds, now, nil
}

// objectNames lists the objects of bucket, deleted ones included, from the
// subjects of its stream, which the server keeps an index of, and returns
// the server's clock as it answered. ObjectStore.List reads instead each
// object's metadata, and with it the whole message block (8 MiB) that
// holds it: in practice every block of the store, which the server then
// keeps in memory for seconds. A list of a 1 GiB narun-binaries took narun
// up from 80 MiB to 740 MiB; a listing by subjects reads nothing.
func (e *env) objectNames(ctx context.Context, bucket string) ([]string, time.Time, error) {
	s, err := e.objectStream(ctx, bucket)
	if err != nil {
		return nil, time.Time{}, err
	}
	var info *jetstream.StreamInfo
	err = e.within(ctx, func(ctx context.Context) (err error) {
		info, err = s.Info(ctx, jetstream.WithSubjectFilter(store.ObjectMetaSubject(bucket, "")+">"))
		return err
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("list the objects of %s: %w", bucket, err)
	}
	var out []string
	for subj := range info.State.Subjects {
		enc, _ := strings.CutPrefix(subj, store.ObjectMetaSubject(bucket, ""))
		name, err := base64.URLEncoding.DecodeString(enc)
		if err != nil {
			continue
		}
		out = append(out, string(name))
	}
	slices.Sort(out)
	now := info.TimeStamp
	if now.IsZero() {
		// A server too old to say: this machine's clock, set right by the
		// heartbeats' if they were read.
		now = e.serverNow()
	}
	return out, now, nil
}

// purgeObjectMeta removes the marker a deleted object leaves in its bucket,
// the message at seq, and any before it: names are never reused (they hold
// the build's digest), so the markers of every build ever pruned would
// pile up, and objectNames would list them. The metadata of an upload of
// the same name since (a later message) stays.
func (e *env) purgeObjectMeta(ctx context.Context, bucket, name string, seq uint64) error {
	s, err := e.objectStream(ctx, bucket)
	if err != nil {
		return err
	}
	if err := e.within(ctx, func(ctx context.Context) error {
		return s.Purge(ctx, jetstream.WithPurgeSubject(store.ObjectMetaSubject(bucket, name)), jetstream.WithPurgeSequence(seq+1))
	}); err != nil {
		return fmt.Errorf("purge the deletion marker of %s: %w", name, err)
	}
	return nil
}

// objectsNow is the clock of the server that answers for bucket's stream,
// on which an object's age is counted: a ctl host whose clock is wrong
// must not take an object stamped moments ago for an old one.
func (e *env) objectsNow(ctx context.Context, bucket string) (time.Time, error) {
	ctx, cancel := e.op(ctx)
	defer cancel()
	s, err := e.js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return time.Time{}, fmt.Errorf("open stream of %s: %w", bucket, err)
	}
	if now := s.CachedInfo().TimeStamp; !now.IsZero() {
		return now, nil
	}
	// A server too old to say, as objectNames.
	return e.serverNow(), nil
}
