// Package store creates narun's JetStream buckets and streams when they are
// missing, with the settings below, and otherwise opens them as they are: an
// operator's tuning of an existing bucket (replicas, history, limits) is never
// reset by a client that starts.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
)

// NodeTTL is how long a node's heartbeat lives in narun-nodes without
// being refreshed; runners refresh well within it.
const NodeTTL = 30 * time.Second

// KVConfig is the configuration a missing KV bucket is created with.
func KVConfig(bucket string) (jetstream.KeyValueConfig, error) {
	switch bucket {
	case names.AppsBucket:
		// History keeps earlier specs for inspection and rollback.
		return jetstream.KeyValueConfig{Bucket: bucket, Description: "narun app specs (TOML)", History: 10, Storage: jetstream.FileStorage}, nil
	case names.NodesBucket:
		return jetstream.KeyValueConfig{Bucket: bucket, Description: "narun node heartbeats (JSON)", History: 1, TTL: NodeTTL, Storage: jetstream.FileStorage}, nil
	case names.RoutesBucket:
		return jetstream.KeyValueConfig{Bucket: bucket, Description: "narun gateway routes of deployed apps (JSON)", History: 5, Storage: jetstream.FileStorage}, nil
	case names.SecretsBucket:
		return jetstream.KeyValueConfig{Bucket: bucket, Description: "narun encrypted secrets", History: 5, Storage: jetstream.FileStorage}, nil
	}
	return jetstream.KeyValueConfig{}, fmt.Errorf("unknown KV bucket %q", bucket)
}

// ObjectConfig is the configuration a missing object store is created with.
func ObjectConfig(bucket string) (jetstream.ObjectStoreConfig, error) {
	switch bucket {
	case names.BinariesBucket:
		return jetstream.ObjectStoreConfig{Bucket: bucket, Description: "narun app binaries", Storage: jetstream.FileStorage}, nil
	case names.FilesBucket:
		return jetstream.ObjectStoreConfig{Bucket: bucket, Description: "narun files mounted into app instances", Storage: jetstream.FileStorage}, nil
	}
	return jetstream.ObjectStoreConfig{}, fmt.Errorf("unknown object store %q", bucket)
}

// LogsStreamConfig bounds the log history by size and age so a chatty app
// cannot fill a device's disk.
func LogsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        names.LogsStream,
		Description: "narun app output lines",
		Subjects:    []string{names.LogsSubjects},
		Storage:     jetstream.FileStorage,
		MaxBytes:    256 << 20,
		MaxAge:      7 * 24 * time.Hour,
		MaxMsgSize:  64 << 10,
		Discard:     jetstream.DiscardOld,
	}
}

// Replicas is how many copies a new bucket or stream keeps: three when the
// server is a member of a cluster of at least three (so one device can fail
// without losing specs, binaries or logs), else one. A leaf node is not a
// member of its hub's cluster, so its own buckets stay local.
func Replicas(nc *nats.Conn) int {
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	return min(3, max(1, len(nc.Servers())))
}

// KV opens a narun KV bucket, creating it first if it does not exist.
func KV(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	cfg, err := KVConfig(bucket)
	if err != nil {
		return nil, err
	}
	cfg.Replicas = Replicas(js.Conn())
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another client created it in between.
		kv, err = js.KeyValue(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// Objects opens a narun object store, creating it first if it does not exist.
func Objects(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err == nil {
		return obs, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open object store %s: %w", bucket, err)
	}
	cfg, err := ObjectConfig(bucket)
	if err != nil {
		return nil, err
	}
	cfg.Replicas = Replicas(js.Conn())
	obs, err = js.CreateObjectStore(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		obs, err = js.ObjectStore(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create object store %s: %w", bucket, err)
	}
	return obs, nil
}

// LogsStream opens NARUN_LOGS, creating it first if it does not exist.
func LogsStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, names.LogsStream)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("open stream %s: %w", names.LogsStream, err)
	}
	cfg := LogsStreamConfig()
	cfg.Replicas = Replicas(js.Conn())
	s, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, names.LogsStream)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", names.LogsStream, err)
	}
	return s, nil
}

// IsNotFound reports whether err means a bucket, stream, key or object does
// not exist.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrObjectNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}
