package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// A hidden file is covered by a mount, and a host process that replaces
// it by rename (an editor's save, sed -i, narun's own atomic writes)
// detaches that mount in every sandbox: the app would read the new file
// through any grant of a directory above it. Landlock rules are per inode
// and only allow, so such a grant is not given as one rule on the
// directory but as rules on each entry beside the way to the hidden file,
// and none on the file itself: whatever later takes the file's name is
// beneath no rule.

// hiddenPath is a file of Config.Hidden as it was before its cover hid it:
// the directories on its way and its mode, which the cover's own would
// replace.
type hiddenPath struct {
	// dirs are the directories from / to the one holding it.
	dirs []fileKey
	// parent holds it under name.
	parent fileKey
	name   string
	uid    uint32
	gid    uint32
	mode   uint32
}

// fileKey is fileID's result, a map key.
type fileKey = [2]uint64

// entryKey is a name in a directory.
type entryKey struct {
	dir  fileKey
	name string
}

// lookHidden records the hidden file at path, real (its symbolic links
// resolved) and st as it stands before it is covered.
func lookHidden(real string, st *unix.Stat_t) (hiddenPath, error) {
	h := hiddenPath{name: filepath.Base(real), uid: st.Uid, gid: st.Gid, mode: st.Mode}
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_DIRECTORY | unix.O_CLOEXEC
	fd, err := unix.Open("/", flags, 0)
	if err != nil {
		return h, fmt.Errorf("open /: %w", err)
	}
	defer func() { unix.Close(fd) }()
	components := strings.Split(strings.Trim(filepath.Dir(real), "/"), "/")
	if filepath.Dir(real) == "/" {
		components = nil
	}
	for i := 0; ; i++ {
		var dst unix.Stat_t
		if err := unix.Fstat(fd, &dst); err != nil {
			return h, fmt.Errorf("stat a directory above %s: %w", real, err)
		}
		h.dirs = append(h.dirs, fileID(&dst))
		if i == len(components) {
			break
		}
		// Without following: real has no link left, and one turning up
		// now was put there meanwhile.
		next, err := unix.Openat(fd, components[i], flags, 0)
		if err != nil {
			return h, fmt.Errorf("open %s: %w", filepath.Join(append([]string{"/"}, components[:i+1]...)...), err)
		}
		unix.Close(fd)
		fd = next
	}
	h.parent = h.dirs[len(h.dirs)-1]
	return h, nil
}

// readableBy says whether the app of cfg may read h by its mode, had it a
// grant of it: root always, since most of the host's files are root's, and
// the file that takes this one's name may be, whoever owns this one; another uid
// by the bits of its class (it has no supplementary group). A directory
// it may search is as good as one it may list.
func (h *hiddenPath) readableBy(cfg *Config) bool {
	if cfg.UID == 0 {
		return true
	}
	bits := h.mode & 0o7
	switch {
	case h.uid == cfg.UID:
		bits = h.mode >> 6 & 0o7
	case h.gid == cfg.GID:
		bits = h.mode >> 3 & 0o7
	}
	return bits&0o4 != 0 || h.mode&unix.S_IFMT == unix.S_IFDIR && bits&0o1 != 0
}

// splitter rules grants above hidden files entry by entry.
type splitter struct {
	onWay    map[fileKey]bool  // directories above a hidden file the app may read
	excluded map[entryKey]bool // those files, by name in their directory
	handled  landlock.AccessFSSet
	held     []*os.File // what the rules name, open until Restrict
}

func newSplitter(cfg *Config, hidden []hiddenPath, handled landlock.AccessFSSet) *splitter {
	sp := &splitter{onWay: map[fileKey]bool{}, excluded: map[entryKey]bool{}, handled: handled}
	for _, h := range hidden {
		if !h.readableBy(cfg) {
			continue
		}
		for _, d := range h.dirs {
			sp.onWay[d] = true
		}
		sp.excluded[entryKey{h.parent, h.name}] = true
	}
	return sp
}

func (sp *splitter) release() {
	for _, f := range sp.held {
		f.Close()
	}
	sp.held = nil
}

// splitGrant returns the rules for the grant p of a directory, dir if not
// nil (else p's path), when a hidden file lies below it, and false when
// none does and one rule on the directory will do.
func (sp *splitter) splitGrant(dir *os.File, p Path, operator bool) ([]landlock.Rule, bool, error) {
	if dir == nil {
		fd, err := unix.Open(p.Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, false, &os.PathError{Op: "open", Path: p.Path, Err: err}
		}
		dir = os.NewFile(uintptr(fd), p.Path)
		sp.held = append(sp.held, dir)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return nil, false, &os.PathError{Op: "stat", Path: p.Path, Err: err}
	}
	if !sp.onWay[fileID(&st)] {
		return nil, false, nil
	}
	var rules []landlock.Rule
	err := sp.split(dir, fileID(&st), p, operator, map[fileKey]bool{}, &rules)
	return rules, true, err
}

// split rules the directory dir, whose id is id, and what it holds. The
// directory itself gets listing only: its other rights would reach
// beneath it, to the hidden file, or let the app move the file where they
// reach it. Entries are opened from dir's descriptor and not followed: a
// rule opened through a symbolic link would grant its target, which its
// own rules decide on.
func (sp *splitter) split(dir *os.File, id fileKey, p Path, operator bool, seen map[fileKey]bool, rules *[]landlock.Rule) error {
	seen[id] = true
	if r := grantRights(p.Access, true, operator) & landlock.AccessFSSet(ll.AccessFSReadDir) & sp.handled; r != 0 {
		*rules = append(*rules, landlock.PathAccess(r, fdPath(dir)))
	}
	names, err := listDir(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if sp.excluded[entryKey{id, name}] {
			continue
		}
		fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue // gone since it was listed
		}
		if err != nil {
			return fmt.Errorf("open %s in %s: %w", name, dir.Name(), err)
		}
		f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			f.Close()
			return fmt.Errorf("stat %s: %w", f.Name(), err)
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			f.Close()
			continue
		case isDir && sp.onWay[fileID(&st)]:
			if seen[fileID(&st)] {
				// A mount of a directory in itself: it is ruled already.
				f.Close()
				continue
			}
			sp.held = append(sp.held, f)
			if err := sp.split(f, fileID(&st), p, operator, seen, rules); err != nil {
				return err
			}
			continue
		}
		r := grantRights(p.Access, isDir, operator) & sp.handled
		if r == 0 {
			f.Close()
			continue
		}
		sp.held = append(sp.held, f)
		*rules = append(*rules, landlock.PathAccess(r, fdPath(f)))
	}
	return nil
}

// listDir lists the directory dir holds, an O_PATH descriptor, which
// cannot be read itself.
func listDir(dir *os.File) ([]string, error) {
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s to list it: %w", dir.Name(), err)
	}
	d := os.NewFile(uintptr(fd), dir.Name())
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir.Name(), err)
	}
	return names, nil
}
