package up

import (
	"context"
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

	"github.com/narun/narun/applets/internal/names"
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
}

// readNodeKey reads the node key of dataDir, or makes a new one that save
// writes.
func readNodeKey(dataDir string) (*nodeKey, error) {
	path := filepath.Join(dataDir, signing.NodeKeyFile)
	key, err := signing.LoadKey(path)
	if err == nil {
		return &nodeKey{key: key, path: path}, nil
	}
	if _, serr := os.Lstat(path); !errors.Is(serr, fs.ErrNotExist) {
		return nil, fmt.Errorf("node %w (or set trusted_keys, or --signing=false)", err)
	}
	if key, err = signing.Generate(); err != nil {
		return nil, err
	}
	return &nodeKey{key: key, path: path, text: key.File()}, nil
}

// save writes a new node key, after signing the specs and route entries
// already stored when the data dir is from before signing: they ran
// unsigned on a node that checked nothing, and an upgrade must not stop
// them. The key is written last so that a start that fails to sign them
// makes a new key and tries again.
func (k *nodeKey) save(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
	if k.text == nil {
		return nil
	}
	n, others, err := k.adopt(ctx, nc)
	if err != nil {
		return fmt.Errorf("sign the stored specs with the new node key %s: %w", k.path, err)
	}
	if len(others) > 0 {
		var by []string
		for pub, n := range others {
			by = append(by, fmt.Sprintf("%s (%d values)", pub, n))
		}
		slices.Sort(by)
		log.Warn("the node key was made anew over specs or route entries signed by another key: they stay refused until redeployed with the new key, or set trusted_keys to the old public key; the unsigned ones stay refused too",
			"signed_by", strings.Join(by, ", "), "key", k.key.Public())
	}
	if n > 0 {
		log.Info("signed the specs and route entries stored before this node had a signing key, as they ran before", "values", n)
	}
	if err := os.MkdirAll(filepath.Dir(k.path), 0o750); err != nil {
		return fmt.Errorf("node signing key: %w", err)
	}
	if err := signing.WriteKeyFile(k.path, k.text); err != nil {
		return fmt.Errorf("node signing key: %w", err)
	}
	k.text = nil
	return nil
}

// stored is a value of narun-apps or narun-routes as adopt read it.
type stored struct {
	kv     jetstream.KeyValue
	bucket string
	key    string
	value  []byte
	rev    uint64
}

// adopt signs the unsigned values of narun-apps and narun-routes, only
// when none is signed: a signed one means the node key was made before
// and lost (or trusted_keys were dropped), and the unsigned values are
// then ones nodes refused, an app's plant perhaps, not ones that ran.
// It returns how many it signed, or, instead, how many values each other
// key signed. The updates are conditional: a value changed meanwhile
// fails the start rather than being signed unseen.
func (k *nodeKey) adopt(ctx context.Context, nc *nats.Conn) (int, map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, nil, err
	}
	var unsigned []stored
	others := map[string]int{}
	for _, bucket := range []string{names.AppsBucket, names.RoutesBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", bucket, err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", bucket, err)
		}
		for name := range keys.Keys() {
			e, err := kv.Get(ctx, name)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return 0, nil, fmt.Errorf("%s %s: %w", bucket, name, err)
			}
			// An invalid signature counts too: it shows signing was in use.
			if pub, _ := signing.SignedBy(e.Value()); pub != "" {
				others[pub]++
				continue
			}
			unsigned = append(unsigned, stored{kv: kv, bucket: bucket, key: name, value: e.Value(), rev: e.Revision()})
		}
		// The key channel closes alike when the listing ends and when ctx
		// does: a cut-short listing must not pass for the whole bucket.
		if err := ctx.Err(); err != nil {
			return 0, nil, fmt.Errorf("%s: list keys: %w", bucket, err)
		}
	}
	if len(others) > 0 {
		return 0, others, nil
	}
	for i, v := range unsigned {
		if _, err := v.kv.Update(ctx, v.key, k.key.Sign(v.value), v.rev); err != nil {
			return i, nil, fmt.Errorf("%s %s: %w", v.bucket, v.key, err)
		}
	}
	return len(unsigned), nil, nil
}
