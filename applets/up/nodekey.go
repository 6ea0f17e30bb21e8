package up

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
// already stored: they ran before, unsigned, on a node that checked
// nothing, and an upgrade must not stop them. That happens once, when the
// key is made; the key is written last so that a start that fails to sign
// them makes a new key and tries again, and a value stored unsigned later
// (by an app, say) is never signed.
func (k *nodeKey) save(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
	if k.text == nil {
		return nil
	}
	n, err := k.adopt(ctx, nc)
	if err != nil {
		return fmt.Errorf("sign the stored specs with the new node key %s: %w", k.path, err)
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

// adopt signs the unsigned values of narun-apps and narun-routes with
// conditional updates: a value changed meanwhile fails the start rather
// than being signed unseen.
func (k *nodeKey) adopt(ctx context.Context, nc *nats.Conn) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	signed := 0
	for _, bucket := range []string{names.AppsBucket, names.RoutesBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return signed, fmt.Errorf("%s: %w", bucket, err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return signed, fmt.Errorf("%s: %w", bucket, err)
		}
		for name := range keys.Keys() {
			e, err := kv.Get(ctx, name)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return signed, fmt.Errorf("%s %s: %w", bucket, name, err)
			}
			if pub, _ := signing.SignedBy(e.Value()); pub != "" {
				continue
			}
			if _, err := kv.Update(ctx, name, k.key.Sign(e.Value()), e.Revision()); err != nil {
				return signed, fmt.Errorf("%s %s: %w", bucket, name, err)
			}
			signed++
		}
	}
	return signed, nil
}
