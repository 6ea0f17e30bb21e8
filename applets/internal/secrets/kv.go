package secrets

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Put seals value under name and stores it in the secrets bucket.
func Put(ctx context.Context, kv jetstream.KeyValue, r *Ring, name string, value []byte) error {
	s, err := r.Seal(name, value)
	if err != nil {
		return err
	}
	b, err := s.Marshal()
	if err != nil {
		return fmt.Errorf("encode secret %q: %w", name, err)
	}
	if _, err := kv.Put(ctx, name, b); err != nil {
		return fmt.Errorf("store secret %q: %w", name, err)
	}
	return nil
}

// Get fetches and opens the secret called name.
func Get(ctx context.Context, kv jetstream.KeyValue, r *Ring, name string) ([]byte, error) {
	e, err := kv.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("fetch secret %q: %w", name, err)
	}
	s, err := Unmarshal(e.Value())
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return r.Open(name, s)
}

// Rotate re-seals every secret not sealed with the primary key, keeping
// each value, and returns the names it rewrote. A concurrent update of a
// secret wins over its rotation (the write is conditional on the revision).
func Rotate(ctx context.Context, kv jetstream.KeyValue, r *Ring) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var done []string
	for _, name := range keys {
		e, err := kv.Get(ctx, name)
		if err != nil {
			return done, fmt.Errorf("fetch secret %q: %w", name, err)
		}
		s, err := Unmarshal(e.Value())
		if err != nil {
			return done, fmt.Errorf("secret %q: %w", name, err)
		}
		if s.KeyID == r.PrimaryID() {
			continue
		}
		v, err := r.Open(name, s)
		if err != nil {
			return done, err
		}
		ns, err := r.Seal(name, v)
		if err != nil {
			return done, err
		}
		b, err := ns.Marshal()
		if err != nil {
			return done, fmt.Errorf("encode secret %q: %w", name, err)
		}
		if _, err := kv.Update(ctx, name, b, e.Revision()); err != nil {
			return done, fmt.Errorf("store rotated secret %q: %w", name, err)
		}
		done = append(done, name)
	}
	return done, nil
}
