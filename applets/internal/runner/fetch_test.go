package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A download that takes longer than one JetStream operation may (a large
// binary over a slow link) completes: nats.go alone bounds a Get without
// a deadline to its default timeout in all, and every retry failed alike.
func TestDownloadOutlastsOperationTimeout(t *testing.T) {
	t.Parallel()
	const opTimeout = 500 * time.Millisecond
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 3<<20)
	rand.Read(want)
	if _, err := store.PutBytes(ctx, "big", want); err != nil {
		t.Fatal(err)
	}
	// The reading side's operations time out fast, so that the test
	// outlasts them quickly.
	quick, err := jetstream.New(nc, jetstream.WithDefaultTimeout(opTimeout))
	if err != nil {
		t.Fatal(err)
	}
	obs, err := quick.ObjectStore(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	r, err := openObject(ctx, obs, "big", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, 1)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	// The slow link: the rest is read once the operation timeout is over.
	<-time.After(3 * opTimeout)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("download cut short after %s: %v", 3*opTimeout, err)
	}
	if !bytes.Equal(append(got, rest...), want) {
		t.Fatalf("downloaded %d bytes differ from the %d stored", 1+len(rest), len(want))
	}
}

// A source that stops giving data ends the read with errStalled, and one
// whose context ends, with the context's error, without waiting for the
// source's own deadline.
func TestDownloadEnds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stall time.Duration
		want  error
	}{
		{"stalled", 50 * time.Millisecond, errStalled},
		{"stopped", time.Hour, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, feed := io.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			closed := make(chan struct{})
			r := guard(ctx, closeSignal{src, closed}, tc.stall)
			go feed.Write([]byte("first"))
			first := make([]byte, len("first"))
			if _, err := io.ReadFull(r, first); err != nil {
				t.Fatal(err)
			}
			if tc.want == context.Canceled {
				cancel()
			}
			if b, err := io.ReadAll(r); len(b) != 0 || !errors.Is(err, tc.want) {
				t.Fatalf("read %q, %v after the first bytes; want nothing, %v", b, err, tc.want)
			}
			// The source, still blocked in its read, is closed once it
			// returns, and only then.
			select {
			case <-closed:
				t.Fatal("source closed while its read is blocked")
			default:
			}
			feed.CloseWithError(io.ErrUnexpectedEOF)
			<-closed
		})
	}
}

// closeSignal closes closed when it is closed.
type closeSignal struct {
	io.Reader
	closed chan struct{}
}

func (c closeSignal) Close() error {
	close(c.closed)
	return nil
}

// A download whose opening JetStream leaves unanswered (a member that has
// just lost its group's leader drops the request) is opened again, not
// left to wait out the download's deadline, a minute and more: right after
// a member of a cluster dies is when a deploy's binary is fetched.
func TestDownloadOpensAgain(t *testing.T) {
	t.Parallel()
	silent := testutil.HoldingUnanswered(t, "app", "the build")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := openObject(ctx, silent, "app", time.Minute)
	if err != nil {
		t.Fatalf("open after an unanswered opening: %v", err)
	}
	defer r.Close()
	if b, err := io.ReadAll(r); string(b) != "the build" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
	if silent.Gets() != 2 {
		t.Fatalf("opened %d times, want 2", silent.Gets())
	}
}
