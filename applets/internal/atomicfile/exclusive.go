package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Create writes path with data, synced, only if path does not exist yet:
// of several processes creating the same file at once exactly one
// succeeds, and a reader never sees it half-written. The error of a path
// that exists wraps fs.ErrExist.
//
// The data is written to a file without a name, which the kernel frees if
// the process dies before the link: a named temporary file would outlive a
// crash beside path, and Create writes keys. File systems without unnamed
// files (O_TMPFILE) get a named one.
func Create(path string, data []byte, mode os.FileMode) error {
	f, err := writeUnnamed(filepath.Dir(path), data, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if f != nil {
		defer f.Close()
		err := linkUnnamed(f, path)
		if err == nil {
			return SyncDir(filepath.Dir(path))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create %s: %w", path, err)
		}
		// No /proc to name the descriptor by: write a named file instead.
	}
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

// writeUnnamed writes data, synced and with mode, to a new file in dir that
// has no name yet. It returns nil and no error when dir's file system
// cannot make one.
func writeUnnamed(dir string, data []byte, mode os.FileMode) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EINVAL):
		return nil, nil
	case err != nil:
		return nil, &fs.PathError{Op: "create a file in", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// linkUnnamed gives the unnamed file f the name path, failing with an
// error wrapping fs.ErrExist when path exists; linkat names a descriptor
// without privileges only through its /proc link.
func linkUnnamed(f *os.File, path string) error {
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		return &fs.PathError{Op: "link", Path: path, Err: err}
	}
	return nil
}

// Update replaces path with what change makes of its content, as Write
// does, keeping its owner and group. It holds a lock on path's directory
// meanwhile, so that concurrent updates of files there apply one after
// the other instead of one undoing another.
func Update(path string, mode os.FileMode, change func(old []byte) ([]byte, error)) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("open the directory of %s: %w", path, err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock the directory of %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(int(f.Fd()), &st)
	var old []byte
	if err == nil {
		old, err = io.ReadAll(f)
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	data, err := change(old)
	if err != nil {
		return err
	}
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Root rewriting the file of the user a service runs as would
	// otherwise give it to root, whom alone its owner-only mode then lets
	// read it.
	var made unix.Stat_t
	if err := unix.Lstat(tmp, &made); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if made.Uid != st.Uid || made.Gid != st.Gid {
		if err := os.Lchown(tmp, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("keep the owner %d:%d of %s: %w", st.Uid, st.Gid, path, err)
		}
	}
	return replace(tmp, path)
}
