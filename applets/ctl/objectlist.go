package ctl

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// objectInfos reads the metadata of every object of bucket but the
// deleted, by the last message on each object's subject, as
// ObjectStore.List does. Metadata that does not decode is returned apart,
// an unreadableMetaError each: ObjectStore.List drops such a message, and
// with the last one the sign that it has read them all, so it waited for
// its deadline and listed nothing.
func (e *env) objectInfos(ctx context.Context, bucket string) ([]*jetstream.ObjectInfo, []*unreadableMetaError, error) {
	s, err := e.objectStream(ctx, bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	type listing struct {
		infos      []*jetstream.ObjectInfo
		unreadable []*unreadableMetaError
	}
	octx, cancel := e.op(ctx)
	defer cancel()
	l, err := untilListed(octx, func(ctx context.Context) (listing, error) {
		var l listing
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{store.ObjectMetaSubject(bucket, "") + ">"},
			DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
			// Deleted once read; this bounds it when the delete cannot
			// reach the server.
			InactiveThreshold: consumerIdle,
		})
		if err != nil {
			return l, err
		}
		// The server would keep it for its inactive threshold: a script
		// listing every few seconds would pile them up.
		defer e.dropConsumer(s, cons)
		left := cons.CachedInfo().NumPending
		for left > 0 {
			batch, err := cons.Fetch(int(min(left, 256)), jetstream.FetchContext(ctx))
			if err != nil {
				return l, err
			}
			for msg := range batch.Messages() {
				meta, err := msg.Metadata()
				if err != nil {
					return l, err
				}
				left = meta.NumPending
				var info jetstream.ObjectInfo
				if err := json.Unmarshal(msg.Data(), &info); err != nil {
					l.unreadable = append(l.unreadable, &unreadableMetaError{bucket: bucket, subject: msg.Subject(), err: err})
					continue
				}
				if !info.Deleted {
					info.ModTime = meta.Timestamp
					l.infos = append(l.infos, &info)
				}
			}
			if err := batch.Error(); err != nil {
				return l, err
			}
		}
		return l, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	return l.infos, l.unreadable, nil
}

// unreadableMetaError is an object's metadata that does not decode: written
// by another tool, or cut short.
type unreadableMetaError struct {
	bucket, subject string
	err             error
}

func (e *unreadableMetaError) Error() string {
	return fmt.Sprintf("the metadata of object %q does not read: %v", e.name(), e.err)
}

func (e *unreadableMetaError) Unwrap() error { return e.err }

// name is the object's name as its subject encodes it, or the subject
// where that does not decode either.
func (e *unreadableMetaError) name() string {
	encoded := strings.TrimPrefix(e.subject, store.ObjectMetaSubject(e.bucket, ""))
	if name, err := base64.URLEncoding.DecodeString(encoded); err == nil {
		return string(name)
	}
	return e.subject
}

// removeUnreadable is the way out of err, about metadata in bucket that
// does not read.
func removeUnreadable(bucket string, err *unreadableMetaError) string {
	command := "files delete"
	if bucket == names.BinariesBucket {
		command = "image delete"
	}
	return fmt.Sprintf("narun ctl %s --force %q removes it", command, err.name())
}
