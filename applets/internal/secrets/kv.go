package secrets

import (
	"context"
	"errors"
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

// Rotate re-seals every secret not sealed with the primary key, keeping
// each value, and returns the names it rewrote and those already sealed
// with the primary key. A concurrent update of a
// secret wins over its rotation (the write is conditional on the revision).
// A secret it cannot re-seal (one that does not open, say) is named in the
// error and the others are still rotated: any app can write the bucket on
// a default device (docs/SECURITY.md), and one value it planted must not
// keep the rest sealed under a key the operator is retiring, perhaps
// because it leaked.
func Rotate(ctx context.Context, kv jetstream.KeyValue, r *Ring) (rotated, current []string, err error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list secrets: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var errs []error
	for _, name := range keys {
		resealed, err := rotate(ctx, kv, r, name)
		switch {
		case err != nil:
			errs = append(errs, err)
		case resealed:
			rotated = append(rotated, name)
		default:
			current = append(current, name)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("list secrets: %w", err))
	}
	return rotated, current, errors.Join(errs...)
}

// rotate re-seals the secret called name with the primary key, unless it
// already is.
func rotate(ctx context.Context, kv jetstream.KeyValue, r *Ring, name string) (bool, error) {
	e, err := kv.Get(ctx, name)
	if err != nil {
		return false, fmt.Errorf("fetch secret %q: %w", name, err)
	}
	s, err := Unmarshal(e.Value())
	if err != nil {
		return false, fmt.Errorf("secret %q: %w", name, err)
	}
	if s.KeyID == r.PrimaryID() {
		return false, nil
	}
	v, err := r.Open(name, s)
	if err != nil {
		return false, err
	}
	ns, err := r.Seal(name, v)
	if err != nil {
		return false, err
	}
	b, err := ns.Marshal()
	if err != nil {
		return false, fmt.Errorf("encode secret %q: %w", name, err)
	}
	if _, err := kv.Update(ctx, name, b, e.Revision()); err != nil {
		return false, fmt.Errorf("store rotated secret %q: %w", name, err)
	}
	return true, nil
}
