package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/narun/narun/embednats"
)

// storeRoom is the free space the data dir needs before an embedded
// server whose store failed a write is restarted: enough for JetStream to
// write again, not so much that a small device never gets there.
const storeRoom = embednats.MinStoreRoom

// storeCheck is how often the data dir's free space is looked at while
// it lacks room, and the least time between two restarts, so that a disk
// that fails every write does not have the server restarted in a loop.
const storeCheck = 5 * time.Second

// KeepStoreWritable restarts srv each time its JetStream store fails a
// write, once dataDir has room again. nats-server writes nothing more to
// a stream whose store failed a write (a full disk) until it restarts,
// even when the space is back: without this, a node whose disk once
// filled kept its apps running but took no deploy, heartbeat or log line
// until narun itself was restarted. It returns when ctx ends, or with the
// error of a restart that failed.
func KeepStoreWritable(ctx context.Context, srv *embednats.Server, dataDir string, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-srv.WriteFailed():
			log.Error("JetStream could not write to its store, and takes no more writes there until the embedded NATS server restarts: it restarts once the data dir has room again",
				"data_dir", dataDir, "err", msg, "room_needed", storeRoom)
		}
		for {
			t := time.NewTimer(storeCheck)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			if embednats.FreeSpace(dataDir) >= storeRoom {
				break
			}
		}
		if err := srv.Restart(); errors.Is(err, embednats.ErrStopped) {
			// The applet stops: a restart it cut short is no failure.
			return nil
		} else if err != nil {
			return fmt.Errorf("restart the embedded NATS server after its store failed a write: %w", err)
		}
		log.Info("embedded NATS server restarted: JetStream writes to its store again", "data_dir", dataDir)
	}
}
