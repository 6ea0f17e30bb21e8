// Package store creates narun's JetStream buckets and streams when they are
// missing, with the settings below, and otherwise opens them as they are: an
// operator's tuning of an existing bucket (history, limits) is never reset by
// a client that starts. Replicas are the exception, and only upwards: in a
// cluster, a bucket with fewer than Replicas gets more once the cluster can
// hold them (see raise).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

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

// Replicas is how many copies of each bucket and stream narun keeps in a
// cluster: three, so that any one device can fail or restart without losing
// specs, binaries or logs, or making them read-only.
const Replicas = 3

// raiseTimeout bounds a check or raise of the replicas: the bucket is
// already open, and a cluster that cannot answer now (no JetStream leader)
// must not hold up the client that opened it.
const raiseTimeout = 3 * time.Second

// KV opens a narun KV bucket, creating it first if it does not exist.
// log (nil discards) hears of replicas added, or fewer than Replicas.
func KV(ctx context.Context, js jetstream.JetStream, bucket string, log *slog.Logger) (jetstream.KeyValue, error) {
	log = orDiscard(log)
	kv, err := resent(ctx, js, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, bucket) })
	if err == nil {
		raise(ctx, js, "KV_"+bucket, nil, log)
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	cfg, err := KVConfig(bucket)
	if err != nil {
		return nil, err
	}
	err = create(ctx, js, bucket, log, func(replicas int) error {
		cfg.Replicas = replicas
		kv, err = js.CreateKeyValue(ctx, cfg)
		return err
	})
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
func Objects(ctx context.Context, js jetstream.JetStream, bucket string, log *slog.Logger) (jetstream.ObjectStore, error) {
	log = orDiscard(log)
	obs, err := resent(ctx, js, func(ctx context.Context) (jetstream.ObjectStore, error) { return js.ObjectStore(ctx, bucket) })
	if err == nil {
		raise(ctx, js, "OBJ_"+bucket, nil, log)
		return obs, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open object store %s: %w", bucket, err)
	}
	cfg, err := ObjectConfig(bucket)
	if err != nil {
		return nil, err
	}
	err = create(ctx, js, bucket, log, func(replicas int) error {
		cfg.Replicas = replicas
		obs, err = js.CreateObjectStore(ctx, cfg)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		obs, err = js.ObjectStore(ctx, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create object store %s: %w", bucket, err)
	}
	return obs, nil
}

// LogsStream opens NARUN_LOGS, creating it first if it does not exist.
func LogsStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (jetstream.Stream, error) {
	return historyStream(ctx, js, LogsStreamConfig(), "log history", log)
}

// EventsStreamConfig keeps the instance events of the last week, at most
// 1000 of one app on one node: an app that crashes in a loop keeps its
// latest, and cannot push out the others'.
func EventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              names.EventsStream,
		Description:       "narun instance events",
		Subjects:          []string{names.EventsSubjects},
		Storage:           jetstream.FileStorage,
		MaxBytes:          16 << 20,
		MaxAge:            7 * 24 * time.Hour,
		MaxMsgSize:        16 << 10,
		MaxMsgsPerSubject: 1000,
		Discard:           jetstream.DiscardOld,
	}
}

// EventsStream opens NARUN_EVENTS, creating it first if it does not exist.
func EventsStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (jetstream.Stream, error) {
	return historyStream(ctx, js, EventsStreamConfig(), "event history", log)
}

// historyStream opens the stream of cfg, creating it first if it does not
// exist, smaller than cfg says when JetStream's storage limit leaves no
// more.
func historyStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, what string, log *slog.Logger) (jetstream.Stream, error) {
	log = orDiscard(log)
	name, full := cfg.Name, cfg.MaxBytes
	s, err := resent(ctx, js, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, name) })
	if err == nil {
		raise(ctx, js, name, s.CachedInfo(), log)
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("open stream %s: %w", name, err)
	}
	// JetStream reserves a stream's MaxBytes against its storage limit,
	// what its store held and three quarters of the disk space free when
	// the server started unless max_store says otherwise (embednats): on a
	// device with less than about 350 MiB free, the logs' 256 MiB is
	// refused, and the runner, which opens these streams with its
	// buckets, would never run a deploy. Less history is better than none.
	for {
		err = create(ctx, js, name, log, func(replicas int) error {
			cfg.Replicas = replicas
			s, err = js.CreateStream(ctx, cfg)
			return err
		})
		if !OutOfStorage(err) || cfg.MaxBytes/2 < minHistoryBytes {
			break
		}
		cfg.MaxBytes /= 2
	}
	if err == nil && cfg.MaxBytes < full {
		log.Warn(what+" created smaller than narun's default: JetStream's storage limit ([nats.jetstream] max_store, or what its store held and three quarters of the disk space free when the server started) leaves no more",
			"stream", name, "max_bytes", cfg.MaxBytes, "default", full)
	}
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return s, nil
}

// firstResend is how long the first lookup of a bucket waits for an answer
// before it is sent again. A server that has just joined its cluster again
// (a member restarted) drops the JetStream requests it gets in its first
// moments without a word: one lookup left to wait out the caller's whole
// timeout kept a runner from reading narun-apps in time, and it started
// the apps of its cached specs, deleted and outdated ones included, while
// the majority had the current ones. The same request sent again is
// answered at once.
const firstResend = time.Second

// resent calls lookup, which must have no effect but its answer, and calls
// it again each time it gets no answer in time, waiting twice as long each
// time, until ctx ends, or js's default timeout for a ctx without a
// deadline: a single lookup ended then, and callers that retry on their
// own, as the gateway's watch of narun-routes does, warn between their
// tries; waiting for ever, in ever longer waits, they said nothing and
// asked again only minutes after JetStream was back.
func resent[T any](ctx context.Context, js jetstream.JetStream, lookup func(context.Context) (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	wait := firstResend
	for {
		actx, cancel := context.WithTimeout(ctx, wait)
		v, err := lookup(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return v, err
		}
		wait *= 2
	}
}

// minHistoryBytes is the smallest log or event history settled for.
const minHistoryBytes = 1 << 20

// OutOfStorage reports whether JetStream refused a stream, or a message,
// for want of storage under its limit (max_store, or the disk's space when
// the server started).
func OutOfStorage(err error) bool {
	c := apiCode(err)
	return c == codeStorageExceeded || c == codeInsufficientResource
}

// DiskFull reports whether JetStream answered with the error its store
// kept from a write the disk had no room for: nats-server takes no more
// writes to that stream until it restarts, and answers none of them.
func DiskFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "no space left on device")
}

// create calls try with Replicas, then fewer while the cluster answers that
// it cannot place that many: how many members a cluster has, and how many
// of them are up, is for its servers to say, not for the servers a client
// happens to know of. raise adds the missing replicas later. A cluster that
// cannot place even one replica for want of peers has a leader just
// elected, which has not yet heard what any member can hold: create tries
// again until ctx ends.
func create(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger, try func(replicas int) error) error {
	try = againIfStoreFailed(ctx, try)
	if js.Conn().ConnectedClusterName() == "" {
		// A server that is no cluster member: nowhere to put a copy.
		return try(1)
	}
	for {
		replicas, alone, err := tryFewer(try)
		// Alone, one copy is all there is: nothing is missing, nor ever added.
		if err == nil && replicas < Replicas && !alone {
			log.Warn("created with fewer replicas than narun keeps: the cluster cannot place more now; they are added when a client opens it once it can",
				"stream", name, "replicas", replicas, "want", Replicas)
		}
		if apiCode(err) != codeNoPeers {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(placeRetry):
		}
	}
}

// placeRetry is how long create waits before asking a cluster that could
// place no replica at all again.
const placeRetry = 250 * time.Millisecond

// againIfStoreFailed makes try ask again, a few times, when the server
// answers that it could not make the stream's store: nats-server has given
// that answer, once, to a cluster just formed and to a stream created again
// right after it was deleted, and the same request then succeeded. A store
// that cannot be made (a full disk, a data dir not writable) still fails,
// a second later, and the error names those causes, as the server's
// answer names none.
func againIfStoreFailed(ctx context.Context, try func(replicas int) error) func(int) error {
	return func(replicas int) error {
		err := try(replicas)
		for i := 0; storeFailed(err) && i < storeFailedRetries; i++ {
			select {
			case <-ctx.Done():
				return cannotMakeStore(err)
			case <-time.After(placeRetry):
			}
			err = try(replicas)
		}
		return cannotMakeStore(err)
	}
}

// cannotMakeStore adds to err, when it is nats-server's refusal to make a
// stream's store, what does that.
func cannotMakeStore(err error) error {
	if !storeFailed(err) {
		return err
	}
	return fmt.Errorf("%w: the NATS server could not make the stream's files, as when its disk is full or its data_dir is not writable; its log says which", err)
}

// storeFailedRetries bounds againIfStoreFailed.
const storeFailedRetries = 4

// storeFailed reports whether JetStream refused to create a stream because
// it could not make its store (nats-server's errStreamStoreFailed).
func storeFailed(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == codeStreamCreate && strings.Contains(apiErr.Description, "error creating store")
}

// tryFewer calls try with Replicas, then fewer while the cluster cannot
// place that many, and says how many it asked for last, and whether the
// server answered that it runs JetStream alone: a leaf node, which
// nats-server gives a cluster name, its server_name, when it has none.
func tryFewer(try func(replicas int) error) (replicas int, alone bool, err error) {
	for r := Replicas; ; r-- {
		err = try(r)
		switch {
		case r > 1 && apiCode(err) == codeReplicasNotSupported:
			return 1, true, try(1)
		case r > 1 && cannotPlace(err):
			continue
		}
		return r, false, err
	}
}

// raise gives stream, which exists, Replicas copies when it has fewer and
// the cluster can now place them (or as many as it can), so that a bucket
// created while members were down or not yet joined does not keep depending
// on every one of the members it got. It never lowers them. Not being able
// to raise them now is only logged: the next open tries again. info, when
// the caller has it, saves a request.
func raise(ctx context.Context, js jetstream.JetStream, stream string, info *jetstream.StreamInfo, log *slog.Logger) {
	if js.Conn().ConnectedClusterName() == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, raiseTimeout)
	defer cancel()
	if info == nil {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			log.Debug("replicas not checked", "stream", stream, "err", err)
			return
		}
		info = s.CachedInfo()
	}
	have := info.Config.Replicas
	if have >= Replicas {
		return
	}
	cfg := info.Config
	var err error
	for r := Replicas; r > have; r-- {
		cfg.Replicas = r
		_, err = js.UpdateStream(ctx, cfg)
		if err == nil {
			log.Info("replicas raised", "stream", stream, "from", have, "to", r)
			return
		}
		if apiCode(err) == codeReplicasNotSupported {
			// JetStream runs on this server alone: one copy is all there is.
			return
		}
		if !cannotPlace(err) {
			break
		}
	}
	// Debug: every open tries again, and a cluster short of a member
	// would repeat this on every narun ctl command.
	log.Debug("fewer replicas than narun keeps, not raised now; a later open tries again",
		"stream", stream, "replicas", have, "want", Replicas, "err", err)
}

// JetStream API error codes (nats-server's JSClusterNoPeersErrF,
// JSStreamCreateErrF, JSInsufficientResourcesErr,
// JSStorageResourcesExceededErr, JSStreamReplicasNotSupportedErr).
const (
	codeNoPeers              = 10005
	codeStreamCreate         = 10049
	codeInsufficientResource = 10023
	codeStorageExceeded      = 10047
	codeReplicasNotSupported = 10074
)

// cannotPlace reports whether the cluster refused a stream because it
// cannot place that many replicas now.
func cannotPlace(err error) bool {
	c := apiCode(err)
	return c == codeNoPeers || c == codeInsufficientResource
}

func apiCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// IsNotFound reports whether err means a bucket, stream, key or object does
// not exist.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrObjectNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// DigestHex turns an object's "SHA-256=<base64url>" digest into the hex
// that specs pin; "" if it is not one. Any client that can write a bucket
// writes the digest: another kind, or one of another length, would be
// pinned as a sha256 that no content has.
func DigestHex(info *jetstream.ObjectInfo) string {
	enc, ok := strings.CutPrefix(info.Digest, "SHA-256=")
	if !ok {
		return ""
	}
	raw, err := base64.URLEncoding.DecodeString(enc)
	if err != nil || len(raw) != sha256.Size {
		return ""
	}
	return hex.EncodeToString(raw)
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// Tidy returns err with the doubled "nats: " that nats.go's JetStream
// publish (a KV put, create, update or delete) puts in front of an error
// the server answered with, written once: it wraps with "nats: %w" an
// APIError whose text already starts with "nats: ". errors.Is and
// errors.As see the same chain; nil stays nil.
func Tidy(err error) error {
	if err == nil || !strings.Contains(err.Error(), doubled) {
		return err
	}
	return tidyError{err}
}

const doubled = "nats: nats: "

type tidyError struct{ err error }

func (e tidyError) Error() string { return strings.ReplaceAll(e.err.Error(), doubled, "nats: ") }
func (e tidyError) Unwrap() error { return e.err }
