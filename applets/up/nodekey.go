package up

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/sdnotify"
	"github.com/narun/narun/applets/internal/signing"
)

// nodeKey is the key narun up trusts when no trusted_keys are configured:
// without one, any app on the device, a sandboxed one through its NATS
// bridge too, could store a spec that runs as root (docs/SECURITY.md,
// "Who can deploy"). Its file is readable by its owner only, so that only
// the user running narun up, and narun ctl as that user, deploy.
type nodeKey struct {
	key  *signing.Key
	path string
	// text is the file's content while the file is still to be written:
	// a new key.
	text []byte
	// adopting says an earlier start made the key and did not finish
	// signing the values stored before it.
	adopting bool
	// pending are the values that start listed to sign, as adoptKey
	// names them, with the sha256 of each: a resumed start signs only
	// those, as they were, and never what was stored since.
	pending map[string]string
	// listedBefore, when set, stands in for pending: the adopting file
	// is one of a release that listed nothing in it (legacyAdopting),
	// and the values to sign are those stored before it was written.
	listedBefore time.Time
}

// adoptingSuffix names the file that exists, beside the node key, from
// before the key is written until every value stored before signing is
// signed: a start cut short in between resumes from it. Only narun up
// writes it, in its data dir, so no app can ask for values to be signed.
// It lists the values to sign, one "bucket key sha256" a line: while the
// key exists nodes refuse unsigned values, so one stored after the first
// start is an app's plant, not one that ran before signing, and a start
// that signed whatever it found unsigned would vouch for it.
const adoptingSuffix = ".adopting"

// legacyAdopting is the whole adopting file of releases before it listed
// the values to sign: such a start wrote it before the key, once it had
// found those values, so they are the unsigned ones stored before it.
const legacyAdopting = "narun up is signing the specs stored before this node had a key\n"

// adoptKey names a value in the adopting file's list.
func adoptKey(bucket, key string) string { return bucket + " " + key }

func digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:])
}

// readAdopting reads the list of the adopting file. A line it cannot
// read names no value, so that value stays unsigned: refused, not run
// unseen.
// An adopting file of an earlier release, which lists nothing, returns
// the time it was written instead.
func readAdopting(path string) (map[string]string, time.Time, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read the list of values to sign: %w", err)
	}
	if string(text) == legacyAdopting {
		st, err := os.Stat(path)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("read the list of values to sign: %w", err)
		}
		return nil, st.ModTime(), nil
	}
	pending := map[string]string{}
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		if len(f) != 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		pending[adoptKey(f[0], f[1])] = f[2]
	}
	return pending, time.Time{}, nil
}

// readNodeKey reads the node key of dataDir, or makes a new one that save
// writes.
func readNodeKey(dataDir string) (*nodeKey, error) {
	path := filepath.Join(dataDir, signing.NodeKeyFile)
	key, err := signing.LoadKey(path)
	if err == nil {
		nk := &nodeKey{key: key, path: path}
		if _, serr := os.Lstat(path + adoptingSuffix); serr == nil {
			if nk.pending, nk.listedBefore, err = readAdopting(path + adoptingSuffix); err != nil {
				return nil, fmt.Errorf("node signing key: %w", err)
			}
			nk.adopting = true
		}
		return nk, nil
	}
	if _, serr := os.Lstat(path); !errors.Is(serr, fs.ErrNotExist) {
		return nil, fmt.Errorf("node %w (or set trusted_keys, or --signing=false)", err)
	}
	if key, err = signing.Generate(); err != nil {
		return nil, err
	}
	return &nodeKey{key: key, path: path, text: key.File()}, nil
}

// save writes a new node key, and signs the specs and route entries
// already stored when the data dir is from before signing: they ran
// unsigned on a node that checked nothing, and an upgrade must not stop
// them. A start that fails while signing them leaves the adopting file,
// and the next start signs the rest with the same key.
func (k *nodeKey) save(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
	if k.text == nil && !k.adopting {
		return nil
	}
	unsigned, others, err := k.scanWhenAnswered(ctx, nc, log)
	if err != nil {
		return fmt.Errorf("read the stored specs to sign them with the node key %s: %w", k.path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if k.text != nil {
		if len(others) > 0 {
			var by []string
			for pub, n := range others {
				by = append(by, fmt.Sprintf("%s (%d values)", pub, n))
			}
			slices.Sort(by)
			log.Warn("the node key was made anew over specs or route entries signed by another key: they stay refused until redeployed with the new key, or set trusted_keys to the old public key; the unsigned ones stay refused too",
				"signed_by", strings.Join(by, ", "), "key", k.key.Public())
			unsigned = nil
		}
		if err := os.MkdirAll(filepath.Dir(k.path), 0o750); err != nil {
			return fmt.Errorf("node signing key: %w", err)
		}
		if len(unsigned) > 0 {
			note := []byte("# narun up is signing these values, stored before this node had a key; a start cut short signs the rest\n")
			for _, v := range unsigned {
				note = fmt.Appendf(note, "%s %s\n", adoptKey(v.bucket, v.key), digest(v.value))
			}
			if err := writeSynced(k.path+adoptingSuffix, note); err != nil {
				return fmt.Errorf("node signing key: %w", err)
			}
		}
		if err := signing.WriteKeyFile(k.path, k.text); err != nil {
			return fmt.Errorf("node signing key: %w", err)
		}
		k.text = nil
	} else {
		unsigned = k.listed(unsigned, log)
	}
	seq := signing.NextSequence(0, time.Now())
	for i, v := range unsigned {
		if _, err := v.kv.Update(ctx, v.key, k.key.Sign(v.adopted(seq)), v.rev); err != nil {
			return fmt.Errorf("sign the stored specs with the node key %s: %s %s: %w (%d of %d signed; the next start signs the rest)",
				k.path, v.bucket, v.key, err, i, len(unsigned))
		}
	}
	if len(unsigned) > 0 {
		log.Info("signed the specs and route entries stored before this node had a signing key, as they ran before", "values", len(unsigned))
	}
	if err := os.Remove(k.path + adoptingSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node signing key: %w", err)
	}
	k.adopting = false
	return nil
}

// listed keeps of the unsigned values those the adopting file lists with
// the same content, and warns of the others, which stay refused.
func (k *nodeKey) listed(unsigned []stored, log *slog.Logger) []stored {
	var keep []stored
	var left []string
	for _, v := range unsigned {
		if !k.listedBefore.IsZero() && !v.created.After(k.listedBefore) {
			keep = append(keep, v)
			continue
		}
		if want, ok := k.pending[adoptKey(v.bucket, v.key)]; ok && want == digest(v.value) {
			keep = append(keep, v)
			continue
		}
		left = append(left, v.bucket+"/"+v.key)
	}
	if len(left) > 0 {
		log.Warn("unsigned values stored after the node key was made are not signed with it: nodes refuse them; deploy them again with narun ctl if they are yours",
			"values", strings.Join(left, ", "))
	}
	return keep
}

// scanAttempt bounds one try of scan: JetStream leaves requests
// unanswered until its cluster has elected a leader. It is long enough
// for a slow device to read many specs in one try.
const scanAttempt = 15 * time.Second

// probeAttempt bounds the check, before each try of scan, that JetStream
// answers at all. A request sent while a new cluster elects its first
// leader may never be answered; made by the scan, it held up the start
// for the rest of scanAttempt after the leader was there.
const probeAttempt = 2 * time.Second

// scanWhenAnswered runs scan until JetStream answers, or ctx ends. The
// members of a new cluster elect their first leader only once they see
// each other, so the first member to start waits for the others here; a
// single bounded try made every member of a cluster started at once give
// up before the last one came up. A shared [nats] server_name, which
// keeps a leader from ever being elected, is named meanwhile by the watch
// narun up keeps on its routes.
func (k *nodeKey) scanWhenAnswered(ctx context.Context, nc *nats.Conn, log *slog.Logger) ([]stored, map[string]int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	var warned, extended time.Time
	for attempt := 1; ; attempt++ {
		unsigned, others, err := k.tryScan(ctx, js, nc)
		if err == nil {
			if attempt > 1 {
				log.Info("JetStream answers: reading the stored specs")
			}
			return unsigned, others, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		// A new cluster's first member waits here for the others, which
		// may be started minutes later: a service manager's start timeout
		// would kill it meanwhile, and start it again, to wait again. It
		// is asked for more time as long as narun waits, as k3s's unit
		// waits for its etcd's quorum.
		if time.Since(extended) >= extendEvery {
			_ = sdnotify.Send(sdnotify.Extend(3 * extendEvery))
			extended = time.Now()
		}
		// Said again about once a minute: the server's own lines (a route
		// refused for a wrong login, say) may have buried the first.
		if time.Since(warned) >= time.Minute {
			log.Warn("waiting for JetStream to answer before reading the stored specs: a new cluster elects its leader once the members in [nats.cluster] routes reach each other, with the same [nats.cluster] user and password, and each with its own [nats] server_name",
				"err", err, "attempt", attempt)
			warned = time.Now()
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}

// extendEvery is how often a start waiting for JetStream asks the service
// manager for more time.
const extendEvery = 10 * time.Second

// tryScan is one try of scan, once JetStream has answered a probe.
func (k *nodeKey) tryScan(ctx context.Context, js jetstream.JetStream, nc *nats.Conn) ([]stored, map[string]int, error) {
	probeCtx, cancel := context.WithTimeout(ctx, probeAttempt)
	_, err := js.AccountInfo(probeCtx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream account info: %w", err)
	}
	scanCtx, cancel := context.WithTimeout(ctx, scanAttempt)
	defer cancel()
	return k.scan(scanCtx, nc)
}

// writeSynced writes a file and its directory entry to disk before it
// returns: the file must be there before the one written after it.
func writeSynced(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// stored is a value of narun-apps or narun-routes as scan read it.
type stored struct {
	kv     jetstream.KeyValue
	bucket string
	key    string
	value  []byte
	rev    uint64
	// created is when the server stored the value.
	created time.Time
}

// adopted is the value to sign for v, with sequence seq, as ctl signs
// them: a route entry names its app, so that gateways take it under its
// own key only. An entry that does not read as one is signed as it is:
// gateways refuse it as before.
func (v stored) adopted(seq uint64) []byte {
	if v.bucket != names.RoutesBucket {
		return signing.WithSequence(v.value, seq)
	}
	e, err := gateway.DecodeEntry(v.key, v.value)
	if err != nil {
		return v.value
	}
	b, err := gateway.EncodeEntry(v.key, e.Routes, seq)
	if err != nil {
		return v.value
	}
	return b
}

// scan reads the unsigned values of narun-apps and narun-routes, and
// counts the values each key other than the node key signed. A value
// signed by another key means the node key was made before and lost (or
// trusted_keys were dropped), and the unsigned values are then ones nodes
// refused, an app's plant perhaps, not ones that ran. The revisions read
// make the signing updates conditional: a value changed meanwhile fails
// the start rather than being signed unseen.
func (k *nodeKey) scan(ctx context.Context, nc *nats.Conn) ([]stored, map[string]int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	var unsigned []stored
	others := map[string]int{}
	for _, bucket := range []string{names.AppsBucket, names.RoutesBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", bucket, err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", bucket, err)
		}
		for name := range keys.Keys() {
			e, err := kv.Get(ctx, name)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s: %w", bucket, name, err)
			}
			// An invalid signature counts too: it shows signing was in use.
			if pub, _ := signing.SignedBy(e.Value()); pub != "" {
				if pub != k.key.Public() {
					others[pub]++
				}
				continue
			}
			unsigned = append(unsigned, stored{kv: kv, bucket: bucket, key: name, value: e.Value(), rev: e.Revision(), created: e.Created()})
		}
		// The key channel closes alike when the listing ends and when ctx
		// does: a cut-short listing must not pass for the whole bucket.
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("%s: list keys: %w", bucket, err)
		}
	}
	return unsigned, others, nil
}
