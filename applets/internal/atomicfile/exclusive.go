package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Create writes path with data, synced, only if path does not exist yet:
// of several processes creating the same file at once exactly one
// succeeds, and a reader never sees it half-written. The error of a path
// that exists wraps fs.ErrExist.
func Create(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// A link, unlike a rename, fails on a file that appeared meanwhile.
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// Update replaces path with what change makes of its content, as Write
// does. It holds a lock on path's directory meanwhile, so that concurrent
// updates of files there apply one after the other instead of one undoing
// another.
func Update(path string, mode os.FileMode, change func(old []byte) ([]byte, error)) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("open the directory of %s: %w", path, err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock the directory of %s: %w", path, err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	data, err := change(old)
	if err != nil {
		return err
	}
	return Write(path, data, mode)
}
