package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resolverFiles are the dns preset's files that hosts replace by rename
// (NetworkManager, dhclient, systemd-resolved and resolvconf all do, at
// each network change). A Landlock rule holds the inode it was made for:
// a grant of the host's file would leave the app unable to read the new
// one, with Go and glibc falling back to a resolver on [::1]:53. So the
// app reads a copy, bound over the path in the sandbox, that the
// resolver keeper refreshes in place, keeping its inode and so the rule.
var resolverFiles = []string{"/etc/resolv.conf", "/etc/hosts"}

// maxResolverFile bounds a copied file; a larger one (a hosts file used
// as a block list can run to megabytes) is granted as the host's own.
const maxResolverFile = 16 << 20

// resolverKeeperName is the keeper's process name, as ps shows it.
const resolverKeeperName = "narun-resolv"

// envKeeper carries the keeper's keeperSpec as JSON; its presence makes
// the launcher binary run as the keeper.
const envKeeper = "NARUN_RESOLVER_KEEPER"

// keptFile is a host resolver file and the sandbox's copy of it.
type keptFile struct {
	path   string
	dir    string   // where path led at start, links followed: the only place followed
	target string   // the host's file followed, path's links followed; "" before it exists
	host   *os.File // that file; nil before it exists
	copy   *os.File // the copy bound over it, written in place
	seen   stamp    // host's file when last copied
	failed string   // the keeper's last error about it, said once
}

// stamp tells whether a file changed since it was last read.
type stamp struct {
	id           [2]uint64
	size         int64
	mtime, ctime unix.Timespec
}

func stampOf(st *unix.Stat_t) stamp {
	return stamp{id: fileID(st), size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// keeperSpec is what the launcher hands the keeper.
type keeperSpec struct {
	Files []keptFileSpec `json:"files"`
	// Poll: look every keeperPoll rather than take an inotify instance.
	Poll bool `json:"poll,omitempty"`
}

type keptFileSpec struct {
	Path   string `json:"path"`
	Dir    string `json:"dir"`
	Target string `json:"target,omitempty"`
	Host   int    `json:"host"` // -1: none yet
	Copy   int    `json:"copy"`
}

// keepResolverFiles binds a copy of each resolver file over it, from a
// tmpfs of the sandbox's own stacked on the instance's run/ (already
// hidden and empty), writable by the launcher and its keeper only. It
// runs once the host's mounts are read-only, so that this tmpfs stays
// writable. Only under Landlock, where the host's file would be lost,
// and not for a path the config grants itself. A file not there yet (at
// boot, a link to the file systemd-resolved or NetworkManager has still
// to write, or a DHCP client's first lease) gets its copy too, empty and
// unbound, for the keeper to bind once the file appears: Landlock's rule
// for it has to be made now.
func (l *launcher) keepResolverFiles() error {
	cfg := l.cfg
	if !hasPreset(cfg, PresetDNS) || landlockABI() == 0 {
		return nil
	}
	copies := filepath.Join(cfg.Dir, "run")
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("tmpfs", copies, "tmpfs", flags, fmt.Sprintf("size=%d,mode=0700", len(resolverFiles)*maxResolverFile)); err != nil {
		return fmt.Errorf("mount a tmpfs for resolver files on %s: %w", copies, err)
	}
	for _, path := range resolverFiles {
		granted := slices.ContainsFunc(cfg.Landlock.Paths, func(p Path) bool { return filepath.Clean(p.Path) == path })
		if granted {
			continue
		}
		k := &keptFile{path: path, dir: filepath.Dir(follow(path))}
		host, target, err := openResolverFile(path, k.dir)
		mode := os.FileMode(0o644)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case errors.Is(err, errNotAFile), errors.Is(err, errRefused):
			// Granted as the host's own, as before the keeper.
			continue
		case err != nil:
			return err
		default:
			var st unix.Stat_t
			if err := unix.Fstat(int(host.Fd()), &st); err != nil || st.Size > maxResolverFile {
				host.Close()
				continue
			}
			k.host, k.target, mode = host, target, os.FileMode(st.Mode&0o777)
		}
		k.copy, err = os.OpenFile(filepath.Join(copies, filepath.Base(path)), os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			if host != nil {
				host.Close()
			}
			return fmt.Errorf("copy %s: %w", path, err)
		}
		l.kept = append(l.kept, k)
		if k.host == nil {
			continue
		}
		if err := k.refresh(); err != nil {
			return err
		}
		// A file being replaced right now is the keeper's to cover.
		if err := k.show(); err != nil && !errors.Is(err, errMidRename) {
			return err
		}
	}
	return nil
}

// closeKept closes the launcher's descriptors of the resolver files, once
// the keeper has its own and Landlock its rules.
func (l *launcher) closeKept() {
	for _, k := range l.kept {
		if k.host != nil {
			k.host.Close()
		}
		k.copy.Close()
	}
}

// refresh copies the host's file into the copy if it changed since the
// last copy. The copy is rewritten in place: a new file would be a new
// inode, which the app's Landlock rule does not cover. The kernel copies,
// so neither the launcher nor the keeper holds the content.
func (k *keptFile) refresh() error {
	if k.host == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(k.host.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", k.path, err)
	}
	now := stampOf(&st)
	if now == k.seen {
		return nil
	}
	if st.Size > maxResolverFile {
		return fmt.Errorf("%s: %w", k.path, errTooLarge)
	}
	if _, err := k.host.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read %s: %w", k.path, err)
	}
	if _, err := k.copy.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("update the sandbox's copy of %s: %w", k.path, err)
	}
	n, err := io.Copy(k.copy, &io.LimitedReader{R: k.host, N: maxResolverFile})
	if err != nil {
		return fmt.Errorf("update the sandbox's copy of %s: %w", k.path, err)
	}
	if err := k.copy.Truncate(n); err != nil {
		return fmt.Errorf("update the sandbox's copy of %s: %w", k.path, err)
	}
	k.seen = now
	return nil
}

// errTooLarge is a host file grown past maxResolverFile.
var errTooLarge = fmt.Errorf("grown past %d bytes: the sandbox's copy keeps its earlier content", maxResolverFile)

// errMidRename is show's failure when the host's file it read is being
// replaced: the kernel refuses a mount on a file renamed over.
var errMidRename = errors.New("file being replaced")

// show binds the copy, read-only, over the host's file it was read from,
// where the app looks for it. Over that file, not whatever path names
// now: a rename under way could otherwise leave the copy over a newer
// file than the one copied, and nothing would tell.
func (k *keptFile) show() error {
	tree, err := unix.OpenTree(int(k.copy.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("bind the sandbox's copy of %s: %w", k.path, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("make the sandbox's copy of %s read-only: %w", k.path, err)
	}
	err = unix.MoveMount(tree, "", int(k.host.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) {
		err = errMidRename
	}
	if err != nil {
		return fmt.Errorf("bind the sandbox's copy over %s: %w", k.path, err)
	}
	return nil
}

// hide removes the binds of the copy over target, left there when the
// link the host's file is reached by turned away from it: a turn back
// would otherwise find the copy there and take it for the file.
func (k *keptFile) hide(target string) {
	var cp unix.Stat_t
	if target == "" || unix.Fstat(int(k.copy.Fd()), &cp) != nil {
		return
	}
	for range 8 {
		var at unix.Stat_t
		if unix.Stat(target, &at) != nil || fileID(&at) != fileID(&cp) {
			return
		}
		if unix.Unmount(target, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// check follows the host's file. A host that replaced it by rename has
// also, by the kernel's rule for files renamed over, undone the copy's
// bind in every namespace, and path now shows the host's new file; a
// link may lead elsewhere now, or a file missing so far have appeared.
// Then that file becomes the one followed, and the copy is bound again.
func (k *keptFile) check() error {
	target := follow(k.path)
	var at, cp unix.Stat_t
	if err := unix.Stat(target, &at); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// Between a host's unlink and create, or not there yet; the
			// create is seen next.
			return nil
		}
		return fmt.Errorf("stat %s: %w", k.path, err)
	}
	if err := unix.Fstat(int(k.copy.Fd()), &cp); err != nil {
		return fmt.Errorf("stat the sandbox's copy of %s: %w", k.path, err)
	}
	if fileID(&at) == fileID(&cp) && target == k.target {
		return k.refresh()
	}
	if target != k.target {
		k.hide(k.target)
		k.hide(target)
	}
	host, target, err := openResolverFile(k.path, k.dir)
	if err != nil {
		return err
	}
	if k.host != nil {
		k.host.Close()
	}
	k.host, k.target, k.seen = host, target, stamp{}
	// A file too large keeps the copy's earlier content over it: the host's
	// own is not the app's to read.
	refreshed := k.refresh()
	if refreshed != nil && !errors.Is(refreshed, errTooLarge) {
		return refreshed
	}
	if err := k.show(); err != nil {
		return err
	}
	return refreshed
}

// errNotAFile is a resolver file that is not a regular file, and
// errRefused one the keeper does not copy, for fear of giving the app
// what it may not read.
var (
	errNotAFile = errors.New("not a regular file")
	errRefused  = errors.New("not followed")
)

// resolverDirs are where resolvers keep the file /etc/resolv.conf links
// to: a host that turns to one of them (systemd-resolved installed,
// NetworkManager's mode changed) is followed there.
var resolverDirs = []string{"/run/systemd/resolve", "/run/resolvconf", "/run/NetworkManager"}

// openResolverFile opens the file path leads to, links followed, and
// returns it and its path. The keeper reads as root and past Landlock,
// and what it reads the app reads, so it opens only what a resolver
// writes: a regular file readable by all, with one link, at path itself,
// in dir (where path led at start) or in one of resolverDirs. Not a link
// turned to another file (by an app that may write a directory on the
// way), nor a hard link an app made to a file it may not read, /etc/shadow
// say. Its last step is not followed again, so a link put there after the
// check is refused; nor is a FIFO waited on.
func openResolverFile(path, dir string) (*os.File, string, error) {
	target := follow(path)
	if d := filepath.Dir(target); d != dir && target != filepath.Clean(path) && !slices.Contains(resolverDirs, d) {
		return nil, "", fmt.Errorf("%s leads to %s now, outside %s where it led at start: %w", path, target, dir, errRefused)
	}
	f, err := os.OpenFile(target, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(int(f.Fd()), &st)
	switch {
	case err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("%s (%s): %w", path, target, errNotAFile)
	case st.Nlink != 1:
		err = fmt.Errorf("%s (%s) has %d links, one of which may be to a file the app may not read: %w", path, target, st.Nlink, errRefused)
	case st.Mode&0o004 == 0:
		err = fmt.Errorf("%s (%s) is not readable by all: %w", path, target, errRefused)
	}
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return f, target, nil
}

// follow is path with its links followed as far as they lead: the file it
// names, or would name once created (a link to a file still to be
// written).
func follow(path string) string {
	p := filepath.Clean(path)
	for range 40 {
		if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
			p = filepath.Join(dir, filepath.Base(p))
		}
		link, err := os.Readlink(p)
		if err != nil {
			return p
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(p), link)
		}
		p = filepath.Clean(link)
	}
	return p
}

// startResolverKeeper starts the keeper: a process of the sandbox, outside
// the app's Landlock domain and with capabilities, since binding the copy
// again is a mount. It runs from the sandbox's root, where the app's paths
// are, and from the thread that will fork the app before that thread
// drops its privileges; the kernel ends it with the launcher. The app
// cannot trace it (it has no capability, and Landlock forbids tracing
// outside its domain), nor kill(2) it or set its limits: those need one of
// the keeper's uids, all LauncherUID from before its exec, which would
// otherwise make its saved uid its effective one, root's. Set so, it is
// safe before the app exists, and the launcher waits for nothing.
func (l *launcher) startResolverKeeper() error {
	if len(l.kept) == 0 {
		return nil
	}
	ks := keeperSpec{Poll: l.resolverPoll}
	var files []*os.File
	for _, k := range l.kept {
		spec := keptFileSpec{Path: k.path, Dir: k.dir, Target: k.target, Host: -1}
		if k.host != nil {
			spec.Host = 3 + len(files)
			files = append(files, k.host)
		}
		spec.Copy = 3 + len(files)
		files = append(files, k.copy)
		ks.Files = append(ks.Files, spec)
	}
	spec, err := json.Marshal(ks)
	if err != nil {
		return fmt.Errorf("start the resolver keeper: %w", err)
	}
	cmd := exec.Command("/proc/self/exe")
	// The last argument is for ps, which shows the command line.
	cmd.Args = []string{"narun", "launcher", "resolver-keeper"}
	cmd.Env = []string{envKeeper + "=" + string(spec)}
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Getuid() == LauncherUID {
		// Every uid the launcher's own from the fork on, so no exec makes
		// its saved uid root's again; and what the keeper does as root it
		// does with these capabilities alone, kept across the exec as
		// ambient ones: binding the copies again, and reading and
		// watching the host's files whatever their mode.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: LauncherUID, Gid: uint32(os.Getgid()), NoSetGroups: true}
		cmd.SysProcAttr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_DAC_READ_SEARCH}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the resolver keeper: %w", err)
	}
	return nil
}

// resolverKeeperMain is the keeper: it follows the host's resolver files
// with inotify on the directories that hold them (a directory's watch
// also reports writes to its files), and looks again every
// keeperRecheck in case an event was missed (a link changed elsewhere).
// It never returns; its errors go to the app's log.
func resolverKeeperMain(spec string) {
	setProcessName(resolverKeeperName)
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", resolverKeeperName, err)
		os.Exit(1)
	}
	var ks keeperSpec
	if err := json.Unmarshal([]byte(spec), &ks); err != nil {
		fail(fmt.Errorf("decode %s: %w", envKeeper, err))
	}
	var kept []*keptFile
	for _, s := range ks.Files {
		k := &keptFile{path: s.Path, dir: s.Dir, target: s.Target, copy: os.NewFile(uintptr(s.Copy), s.Path+" copy")}
		unix.CloseOnExec(s.Copy)
		if s.Host >= 0 {
			k.host = os.NewFile(uintptr(s.Host), s.Path)
			unix.CloseOnExec(s.Host)
		}
		kept = append(kept, k)
	}
	// A keeper takes one of the inotify instances of LauncherUID, which
	// the keepers of every runner share (fs.inotify.max_user_instances,
	// 128 by default): past watchingKeepers, or without one left, it looks
	// every keeperPoll instead. A descriptor of -1 is one poll ignores,
	// and the inotify calls on it fail harmlessly.
	recheck, in := keeperPoll, -1
	if !ks.Poll {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: no inotify instance (%v): looking every %d ms instead\n", resolverKeeperName, err, keeperPoll)
		} else {
			recheck, in = keeperRecheck, fd
		}
	}
	const events = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE
	buf := make([]byte, 64<<10)
	for {
		wait := recheck
		for _, k := range kept {
			// Watched before the look, so that no change falls between.
			for _, p := range []string{k.path, follow(k.path)} {
				watchNearest(in, filepath.Dir(p), events)
			}
			err := k.check()
			if errors.Is(err, errMidRename) {
				wait = keeperRetry
				continue
			}
			// Said once, not at each change in the directory.
			if msg := fmt.Sprint(err); err != nil && msg != k.failed {
				fmt.Fprintf(os.Stderr, "%s: %v\n", resolverKeeperName, err)
			}
			k.failed = ""
			if err != nil {
				k.failed = err.Error()
			}
		}
		fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, wait); err != nil && !errors.Is(err, unix.EINTR) {
			fail(fmt.Errorf("wait for inotify: %w", err))
		}
		for {
			if n, err := unix.Read(in, buf); n <= 0 || err != nil {
				break
			}
		}
	}
}

// watchNearest watches dir or, while it does not exist (at boot,
// /run/systemd/resolve before systemd-resolved starts), the nearest of its
// parents that does, whose change brings the keeper back to watch dir
// itself. The same directory watched twice keeps one watch.
func watchNearest(in int, dir string, events uint32) {
	for {
		_, err := unix.InotifyAddWatch(in, dir, events)
		parent := filepath.Dir(dir)
		if !errors.Is(err, unix.ENOENT) || parent == dir {
			return
		}
		dir = parent
	}
}

// keeperRecheck is how often, in milliseconds, the keeper looks without
// an event, keeperPoll how often without inotify, and keeperRetry how
// soon after finding a rename under way.
const (
	keeperRecheck = 30_000
	keeperPoll    = 2_000
	keeperRetry   = 10
)

// watchingKeepers bounds the keepers of one runner that use inotify,
// leaving most of LauncherUID's instances to the keepers of the node's
// other runners; the others poll. watching counts them.
const watchingKeepers = 16

var watching atomic.Int32

// takeWatch reports whether a sandbox starting now may have its keeper
// use inotify, and if so counts it until releaseWatch.
func takeWatch() bool {
	if watching.Add(1) <= watchingKeepers {
		return true
	}
	watching.Add(-1)
	return false
}

func releaseWatch() { watching.Add(-1) }

// setProcessName names the process for ps and top without /proc, which
// is read-only in the sandbox by the time the keeper starts. PR_SET_NAME
// names the calling thread, so only the main one, whose name is the
// process's, may call it.
func setProcessName(name string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if unix.Gettid() != unix.Getpid() {
		return
	}
	b := append([]byte(name), 0)
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
}
