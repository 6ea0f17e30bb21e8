package ctl

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestUntilAnswered(t *testing.T) {
	calls := 0
	v, err := untilAnswered(context.Background(), func() (int, error) {
		calls++
		if calls < 3 {
			return 0, nats.ErrNoResponders
		}
		return 42, nil
	})
	if v != 42 || err != nil || calls != 3 {
		t.Errorf("got %d, %v after %d calls; want 42 after 3", v, err, calls)
	}

	other := errors.New("key not found")
	calls = 0
	if _, err := untilAnswered(context.Background(), func() (int, error) { calls++; return 0, other }); err != other || calls != 1 {
		t.Errorf("a lasting error must come back at once: %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := untilAnswered(ctx, func() (int, error) { return 0, nats.ErrNoResponders }); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("at the deadline: %v, want no responders", err)
	}
}
