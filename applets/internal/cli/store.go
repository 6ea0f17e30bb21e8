package cli

import (
	"context"
	"errors"
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
// until narun itself was restarted. A restart that fails is tried again
// every storeCheck: what fails it (no file descriptor left to listen
// with, the store's directory moved away) may pass, and giving up would
// end narun up, its apps with it. It returns when ctx ends.
func KeepStoreWritable(ctx context.Context, srv *embednats.Server, dataDir string, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-srv.WriteFailed():
			log.Error("JetStream could not write to its store, and takes no more writes there until the embedded NATS server restarts: it restarts once the data dir has room again",
				"data_dir", dataDir, "err", msg, "room_needed", storeRoom)
		}
		for {
			t := time.NewTimer(storeCheck)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if embednats.FreeSpace(dataDir) < storeRoom {
				continue
			}
			err := srv.Restart()
			if err == nil {
				break
			}
			if errors.Is(err, embednats.ErrStopped) {
				// The applet stops: a restart it cut short is no failure.
				return
			}
			log.Error("restart the embedded NATS server after its store failed a write; trying again", "err", err, "in", storeCheck.String())
		}
		log.Info("embedded NATS server restarted: JetStream writes to its store again", "data_dir", dataDir)
	}
}
