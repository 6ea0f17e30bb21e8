package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
//
// Each NATS operation gets timeout (0: as long as ctx lasts). One that
// goes unanswered, or ctx ending, stops the rotation there: the others
// would each wait out their timeout as well. The error then names the
// secrets not tried, and one whose write went unanswered as perhaps
// stored.
func Rotate(ctx context.Context, kv jetstream.KeyValue, r *Ring, timeout time.Duration) (rotated, current []string, err error) {
	op := func() (context.Context, context.CancelFunc) {
		if timeout > 0 {
			return context.WithTimeout(ctx, timeout)
		}
		return context.WithCancel(ctx)
	}
	keys, err := listKeys(op, kv)
	if err != nil {
		return nil, nil, fmt.Errorf("list secrets, none re-encrypted: %w", err)
	}
	var errs []error
	for i, name := range keys {
		resealed, err := rotate(op, kv, r, name)
		switch {
		case err != nil:
			errs = append(errs, err)
		case resealed:
			rotated = append(rotated, name)
		default:
			current = append(current, name)
		}
		if stalled(err) {
			why := "NATS stopped answering"
			if ctx.Err() != nil {
				why = "interrupted"
			}
			if rest := keys[i+1:]; len(rest) > 0 {
				errs = append(errs, fmt.Errorf("not tried, %s: %s", why, strings.Join(rest, ", ")))
			}
			break
		}
	}
	return rotated, current, errors.Join(errs...)
}

// listKeys lists the bucket's keys within one operation.
func listKeys(op func() (context.Context, context.CancelFunc), kv jetstream.KeyValue) ([]string, error) {
	ctx, cancel := op()
	defer cancel()
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister ends its channel as quietly when ctx ends as when every
	// key is listed.
	return keys, ctx.Err()
}

// stalled reports whether err means NATS did not answer in time, or the
// caller gave up.
func stalled(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout)
}

// rotate re-seals the secret called name with the primary key, unless it
// already is; its read and its write are an operation each.
func rotate(op func() (context.Context, context.CancelFunc), kv jetstream.KeyValue, r *Ring, name string) (bool, error) {
	ctx, cancel := op()
	e, err := kv.Get(ctx, name)
	cancel()
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
	ctx, cancel = op()
	_, err = kv.Update(ctx, name, b, e.Revision())
	cancel()
	if stalled(err) {
		return false, fmt.Errorf("store rotated secret %q: no answer, so it may or may not be re-encrypted (rotate again to know): %w", name, err)
	}
	if err != nil {
		return false, fmt.Errorf("store rotated secret %q: %w", name, err)
	}
	return true, nil
}
