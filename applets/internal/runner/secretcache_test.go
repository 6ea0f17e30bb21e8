package runner

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// stalledRead is narun-secrets for a fetch whose first read is answered
// and then held until release closes: the store is changed meanwhile, as
// by a delete that lands while the answer is on its way.
type stalledRead struct {
	jetstream.KeyValue
	once    *sync.Once
	read    chan struct{}
	release chan struct{}
}

func (s stalledRead) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := s.KeyValue.Get(ctx, key)
	s.once.Do(func() {
		close(s.read)
		<-s.release
	})
	return e, err
}

// A secret deleted while a fetch of it is on its way, and whose cached
// copy the resync removed meanwhile, is not written back by that fetch:
// the copy would serve the revoked secret at the next restart while NATS
// is away.
func TestSecretDeletedDuringFetchStaysUncached(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	ctx := context.Background()
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	read, release := make(chan struct{}), make(chan struct{})
	stalled := &resources{secrets: stalledRead{online.secrets, &sync.Once{}, read, release}}
	fetched := make(chan error, 1)
	go func() {
		_, err := r.secret(ctx, stalled, "token")
		fetched <- err
	}()
	<-read
	if err := c.secrets.Purge(ctx, "token"); err != nil {
		t.Fatal(err)
	}
	r.dropDeletedSecrets(ctx, online)
	close(release)
	if err := <-fetched; err == nil || !strings.Contains(err.Error(), "is not set") {
		t.Errorf("fetch that read the secret before its delete: %v, want not set", err)
	}
	if v, err := r.secret(ctx, nil, "token"); !errors.Is(err, errOffline) {
		t.Fatalf("offline after the delete: %q, %v; want no cached copy", v, err)
	}
}
