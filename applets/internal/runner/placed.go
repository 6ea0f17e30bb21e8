package runner

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/supervisor"
)

// placeBeneath writes what src holds to rel below the instance dir dir,
// with mode, through a synced temporary file renamed into place, and
// creates the directories on the way. It follows no symbolic link below
// dir: the app may have replaced any directory it can write with a link,
// and the runner, often root, would write where the link points. Each
// component is opened relative to the one before with O_NOFOLLOW, which
// every kernel the runner supports has (openat2's RESOLVE_BENEATH needs
// 5.6). The spec parser refuses absolute paths and "..", this guards
// against a spec that bypassed it.
func placeBeneath(dir, rel string, src io.Reader, mode os.FileMode) error {
	fd, name, err := parentBeneath(dir, rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tmp := ".tmp-" + randomHex(8)
	tfd, err := unix.Openat(fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("path %q: create temporary file: %w", rel, err)
	}
	placed := false
	defer func() {
		if !placed {
			unix.Unlinkat(fd, tmp, 0)
		}
	}()
	f := os.NewFile(uintptr(tfd), tmp)
	_, err = io.Copy(f, src)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("path %q: write: %w", rel, err)
	}
	// rename replaces a link at the last component itself, never what it
	// points to.
	if err := unix.Renameat(fd, tmp, fd, name); err != nil {
		return fmt.Errorf("path %q: rename into place: %w", rel, err)
	}
	placed = true
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("path %q: sync directory: %w", rel, err)
	}
	return nil
}

// removeBeneath removes the file at rel below the instance dir dir,
// following no link below dir, as placeBeneath places it. A path that
// does not lead to a file (a directory missing) is fs.ErrNotExist.
func removeBeneath(dir, rel string) error {
	fd, name, err := parentBeneath(dir, rel, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Unlinkat(fd, name, 0); err != nil {
		return fmt.Errorf("path %q: remove: %w", rel, err)
	}
	return unix.Fsync(fd)
}

// parentBeneath opens the directory that holds rel below dir, opening
// each component relative to the one before with O_NOFOLLOW, and returns
// it with rel's last component. create makes the directories missing on
// the way; without it, a missing one is fs.ErrNotExist.
func parentBeneath(dir, rel string, create bool) (int, string, error) {
	var parts []string
	for _, p := range strings.Split(rel, "/") {
		if p != "" && p != "." {
			parts = append(parts, p)
		}
	}
	if filepath.IsAbs(rel) || slices.Contains(parts, "..") || len(parts) == 0 {
		return -1, "", fmt.Errorf("path %q leaves the instance directory: %w", rel, supervisor.ErrPermanent)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open instance directory %s: %w", dir, err)
	}
	for i, name := range parts[:len(parts)-1] {
		next, err := openDirNoFollow(fd, name, create)
		if err != nil {
			err = componentErr(fd, strings.Join(parts[:i+1], "/"), name, err)
			unix.Close(fd)
			return -1, "", fmt.Errorf("path %q: %w", rel, err)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, parts[len(parts)-1], nil
}

// openDirNoFollow opens the directory name in the directory fd, creating
// it when missing if create is set, and fails on a link there.
func openDirNoFollow(fd int, name string, create bool) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	next, err := unix.Openat(fd, name, flags, 0)
	if create && errors.Is(err, unix.ENOENT) {
		if err := unix.Mkdirat(fd, name, 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
		next, err = unix.Openat(fd, name, flags, 0)
	}
	return next, err
}

// componentErr explains why the directory at sofar (name in fd) could not
// be entered. A link or a file there is the app's doing, or the spec's,
// and stays until the instance is replaced: retrying cannot help.
func componentErr(fd int, sofar, name string, err error) error {
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("open directory %q: %w", sofar, err)
	}
	var st unix.Stat_t
	if serr := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("%q is a symbolic link, which the runner does not follow below the instance directory: %w", sofar, supervisor.ErrPermanent)
	}
	return fmt.Errorf("%q is not a directory: %w", sofar, supervisor.ErrPermanent)
}
