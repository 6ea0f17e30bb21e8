package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// readOnlyMounts makes every mount of the sandbox's mount namespace
// read-only, except where the app may write: its data/, its /tmp (tmp
// preset) and the paths granted "w". Landlock (up to ABI 9) does not
// handle chmod, chown, utimes or extended attributes: without this an app
// running as root could chmod any file root owns on the host (a binary
// setuid, the node's signing key readable by everyone). Devices stay
// usable: a read-only mount does not stop writes to /dev/null.
//
// A writable path becomes a mount of its own (a bind onto itself, made
// through the descriptor openGrants opened, not the path, which the app
// may have changed since), so it can stay writable while the mount it
// lies on does not; mounts below it that were writable stay so, those
// that were read-only stay read-only. Kernels before 5.12 have no
// mount_setattr, and no Landlock either (5.13): there the mounts are left
// as they are.
func readOnlyMounts(cfg *Config, g grants) error {
	before, err := readMountInfo()
	if err != nil {
		return err
	}
	// trees are the binds of the writable paths, made writable again once
	// everything is read-only; readOnly the mounts below them that were
	// read-only, made so again after.
	var trees []int
	defer func() {
		for _, t := range trees {
			unix.Close(t)
		}
	}()
	var readOnly []string
	for _, p := range writablePaths(cfg) {
		f, ok := g[p]
		if !ok {
			// A missing path is Landlock's to report.
			continue
		}
		fd := int(f.Fd())
		var st unix.Statfs_t
		if err := unix.Fstatfs(fd, &st); err != nil || st.Flags&unix.ST_RDONLY != 0 {
			// A read-only one stays so.
			continue
		}
		tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.ENOSYS) {
			// Before Linux 5.2, and so without mount_setattr either.
			return nil
		}
		if err != nil {
			return fmt.Errorf("bind %s onto itself: %w", p, err)
		}
		trees = append(trees, tree)
		if err := unix.MoveMount(tree, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", p, err)
		}
		// Mount points below p are listed by their real path.
		real, err := os.Readlink(fdPath(f))
		if err != nil {
			return fmt.Errorf("bind %s onto itself: %w", p, err)
		}
		for _, m := range before {
			if m.readOnly && m.point != real && strings.HasPrefix(m.point, strings.TrimSuffix(real, "/")+"/") {
				readOnly = append(readOnly, m.point)
			}
		}
	}
	err = unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	switch {
	case errors.Is(err, unix.ENOSYS):
		return nil
	case err != nil:
		return fmt.Errorf("make the mounts read-only: %w", err)
	}
	for _, t := range trees {
		if err := unix.MountSetattr(t, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("keep a writable path writable: %w", err)
		}
	}
	for _, p := range readOnly {
		err := unix.MountSetattr(unix.AT_FDCWD, p, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		// A mount the sandbox covered (the host's /tmp, under the
		// instance's own) cannot be reached at its path (EINVAL: not a
		// mount's root there), nor written through it.
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("keep %s read-only: %w", p, err)
		}
	}
	return nil
}

// writablePaths are the paths the app may write, as Landlock grants them.
func writablePaths(cfg *Config) []string {
	paths := []string{filepath.Join(cfg.Dir, "data")}
	if hasPreset(cfg, PresetTmp) {
		paths = append(paths, "/tmp")
	}
	for _, p := range cfg.Landlock.Paths {
		if strings.Contains(p.Access, "w") {
			paths = append(paths, filepath.Clean(p.Path))
		}
	}
	return paths
}

// MountsUnder lists the mount points of the caller's mount namespace at
// dir or below it, the deepest first, so that unmounting them in that
// order leaves none: a directory about to be removed may hold a mount
// that a removal would descend into. dir is taken with its symbolic
// links resolved, as the mount table names mounts.
func MountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	mounts, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	var under []string
	for _, m := range mounts {
		if m.point == dir || strings.HasPrefix(m.point, strings.TrimSuffix(dir, "/")+"/") {
			under = append(under, m.point)
		}
	}
	// Stacked mounts share a point, and are listed in the order they
	// were made: the last one first.
	slices.Reverse(under)
	slices.SortStableFunc(under, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return under, nil
}

type mountInfo struct {
	point    string
	readOnly bool // the mount or its filesystem
}

// readMountInfo lists the mounts of the calling thread's namespace. That
// of /proc/self is the main thread's, which need not be the caller's: Go
// never ends the main thread, so a goroutine that ran locked to it in a
// mount namespace of its own leaves it there, and the process's other
// threads see mounts it does not list (Linux before 3.17 has no
// thread-self).
func readMountInfo() ([]mountInfo, error) {
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if errors.Is(err, os.ErrNotExist) {
		data, err = os.ReadFile("/proc/self/mountinfo")
	}
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	var mounts []mountInfo
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, pf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(pf) < 3 {
			continue
		}
		mounts = append(mounts, mountInfo{
			point:    unescapeMountPath(f[4]),
			readOnly: hasOption(f[5], "ro") || hasOption(pf[2], "ro"),
		})
	}
	return mounts, nil
}

func hasOption(opts, opt string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// unescapeMountPath undoes the kernel's octal escapes (\040 for a space)
// in mountinfo paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// openThroughClone opens dir/name for writing through a detached copy of
// dir's mount (open_tree), so the file held open does not keep the
// sandbox's own mount from turning read-only (readOnlyMounts). Before
// Linux 5.2 it opens the file directly; such kernels have no
// mount_setattr, so nothing is turned read-only there.
func openThroughClone(dir, name string) (*os.File, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("clone the mount of %s: %w", dir, err)
	}
	defer unix.Close(tree)
	fd, err := unix.Openat(tree, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir, name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, name)), nil
}
