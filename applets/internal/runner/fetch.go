package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/store"
)

// A download is bounded by what it is, not by one JetStream operation:
// nats.go gives a Get whose context has no deadline five seconds in all,
// which a 10 MiB binary over a slow link or on a loaded device does not
// make, and then every retry fails the same way. The deadline assumes a
// link of at least fetchMinRate; a download stalled before it ends after
// fetchStall without data.
const (
	fetchBase    = time.Minute
	fetchMinRate = 64 << 10 // bytes per second
	fetchStall   = 30 * time.Second
)

// errStalled reports a download that got no data for a while; a retry
// starts it afresh.
var errStalled = errors.New("download stalled")

// fetchTimeout is how long a download of size bytes may take in all.
func fetchTimeout(size uint64) time.Duration {
	return fetchBase + time.Duration(size/fetchMinRate)*time.Second
}

// openObject opens name for reading, with a deadline sized to the object.
// The reader ends with an error as soon as ctx ends or no data has come
// for stall: nats.go's own read waits for its deadline, checking ctx only
// between chunks, so a stop would otherwise wait for it.
func openObject(ctx context.Context, obs jetstream.ObjectStore, name string, stall time.Duration) (io.ReadCloser, error) {
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	obj, err := store.OpenObject(ctx, obs, name, fetchTimeout(info.Size))
	if err != nil {
		return nil, err
	}
	return guard(ctx, obj, stall), nil
}

// guard reads src through a pipe that ends with an error as soon as ctx
// ends or src has given no data for stall, and closes src once src's own
// read returns.
func guard(ctx context.Context, src io.ReadCloser, stall time.Duration) io.ReadCloser {
	pr, pw := io.Pipe()
	idle := time.AfterFunc(stall, func() {
		pw.CloseWithError(fmt.Errorf("no data for %s: %w", stall, errStalled))
	})
	stopWatch := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	go func() {
		defer src.Close()
		defer stopWatch()
		defer idle.Stop()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				// Only src's silence is a stall, not a slow reader.
				idle.Stop()
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return
				}
				idle.Reset(stall)
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}
