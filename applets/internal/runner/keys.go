package runner

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/supervisor"
)

// keyFile is the node's secret key ring, read again whenever its file
// changes: a key added for rotation, or a file put in place after the
// runner started, takes effect without a runner restart.
type keyFile struct {
	path string

	mu    sync.Mutex
	stamp keyStamp
	ring  *secrets.Ring
}

// keyStamp tells one version of the key file from another without
// reading it. Mode and owner are part of it because chmod and chown change
// neither content nor mtime: a key made readable by others must be
// refused at once, as LoadRing refuses it, not at the next restart.
type keyStamp struct {
	inode uint64
	size  int64
	mtime time.Time
	mode  os.FileMode
	uid   uint32
}

func (k *keyFile) load() (*secrets.Ring, error) {
	if k.path == "" {
		return nil, fmt.Errorf("this node has no secret key (set [runner] master_key_file): %w", supervisor.ErrPermanent)
	}
	st, err := os.Stat(k.path)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	stamp := keyStamp{size: st.Size(), mtime: st.ModTime(), mode: st.Mode()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		stamp.inode, stamp.uid = sys.Ino, sys.Uid
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ring != nil && stamp == k.stamp {
		return k.ring, nil
	}
	ring, err := secrets.LoadRing(k.path)
	if err != nil {
		return nil, err
	}
	k.ring, k.stamp = ring, stamp
	return ring, nil
}
