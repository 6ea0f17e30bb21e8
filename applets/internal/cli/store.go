package cli

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/narun/narun/embednats"
)

// storeRoom is the free space the data dir needs before an embedded
// server whose store failed a write is restarted: enough for JetStream to
// write again, not so much that a small device never gets there.
const storeRoom = 8 << 20

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
			free, err := freeBytes(dataDir)
			if err != nil {
				log.Warn("read the free space of the data dir", "data_dir", dataDir, "err", err)
				continue
			}
			if free >= storeRoom {
				break
			}
		}
		if err := srv.Restart(); err != nil {
			return fmt.Errorf("restart the embedded NATS server after its store failed a write: %w", err)
		}
		log.Info("embedded NATS server restarted: JetStream writes to its store again", "data_dir", dataDir)
	}
}

// freeBytes is the space an unprivileged process may still write in the
// file system that holds dir.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
