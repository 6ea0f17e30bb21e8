package sandbox

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	"golang.org/x/sys/unix"
)

// forwarded are the signals the launcher passes on to the app.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// LauncherName is the launcher's process name (/proc/PID/comm), what ps
// -e and top show for it; the app it starts is named after its binary.
const LauncherName = "narun-launcher"

// LauncherMain is the hidden launcher applet. It runs as PID 1 of the
// namespaces Command created: it reads the config from the inherited
// pipe, sets the sandbox up, starts the app, forwards signals to it,
// reaps every orphan, and exits with the app's status. On a setup
// failure it reports the reason over the status pipe and exits with
// ExitSetupFailed. It never returns.
func LauncherMain() {
	if spec, ok := os.LookupEnv(envKeeper); ok {
		resolverKeeperMain(spec)
	}
	// The privilege drop below is per thread, and the app inherits it from
	// the thread that forks it: both happen on this locked thread.
	runtime.LockOSThread()
	// Started as /proc/self/exe, the launcher would show in ps and top as
	// "exe". Best effort: a name is no reason to fail an app.
	_ = os.WriteFile("/proc/self/comm", []byte(LauncherName), 0)
	// Before any fork, so that the app and all it starts inherit it. By
	// /proc/self: the launcher's pid is its new namespace's, while /proc
	// is still the host's, where that number is another process.
	_ = raiseOOMScore("/proc/self/oom_score_adj")
	// Descriptors the runner inherited without close-on-exec (from its
	// own parent, say) must not reach the app.
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) != nil {
		markAllCloseOnExec()
	}
	status, err := inheritedFile(envStatusFD)
	if err != nil {
		fmt.Fprintf(os.Stderr, "narun launcher: %v (started outside the runner?)\n", err)
		os.Exit(ExitSetupFailed)
	}
	fail := func(stage string, err error) {
		writeStatus(status, statusMsg{Stage: stage, Error: err.Error()})
		os.Exit(ExitSetupFailed)
	}
	// Registered before anything runs, so a stop asked for during setup
	// is delivered to the app once it exists, and no SIGCHLD is lost.
	// Apart, because os/signal drops what does not fit in a channel: an
	// app whose many children exit at once would fill a shared one with
	// SIGCHLDs and lose the runner's SIGTERM. One pending SIGCHLD is
	// enough, since each makes supervise reap every child that exited.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)

	msg, err := readConfig()
	if err != nil {
		fail("config", err)
	}
	cfg := &msg.Config
	l := &launcher{cfg: cfg, plan: msg.Cgroup, resolverPoll: msg.ResolverPoll}
	stage, err := l.setup()
	if err != nil {
		fail(stage, err)
	}
	pid, err := l.startApp()
	if err != nil {
		fail("exec", explainExec(cfg, err))
	}
	writeStatus(status, statusMsg{Started: true, LandlockABI: l.abi})
	code, sig := supervise(pid, sigs, children)
	writeStatus(status, statusMsg{Exited: true, Code: code, Signal: sig})
	if sig != 0 {
		os.Exit(128 + sig)
	}
	os.Exit(code)
}

// markAllCloseOnExec is CloseRange's fallback for kernels before 5.11.
func markAllCloseOnExec() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

func inheritedFile(env string) (*os.File, error) {
	fd, err := strconv.Atoi(os.Getenv(env))
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("no descriptor in %s", env)
	}
	// The app must not inherit the launcher's pipes.
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), env), nil
}

func readConfig() (*launchMsg, error) {
	f, err := inheritedFile(envConfigFD)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read config pipe: %w", err)
	}
	var msg launchMsg
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if err := msg.Config.Validate(); err != nil {
		return nil, err
	}
	return &msg, nil
}

// launcher holds what setup prepares for startApp.
type launcher struct {
	cfg      *Config
	plan     *cgroupPlan
	abi      int
	cgroupFD int          // v2: the app is cloned straight into this cgroup
	shm      bool         // /dev/shm is the sandbox's own tmpfs, for Landlock to allow
	appV1    []*os.File   // v1: the app's cgroups' tasks files, for the forking thread to step in
	homeV1   []*os.File   // v1: the launcher's own tasks files, to step back out
	kept     []*keptFile  // resolver files the app reads as copies
	hidden   []hiddenPath // Config.Hidden as it was before hidePaths covered it
	// resolverPoll makes the keeper poll: the runner's share of
	// LauncherUID's inotify instances is taken.
	resolverPoll bool
}

// setup runs every step that needs root, in the order that keeps each
// possible: mounts, non-executable memfds and listeners first, then
// cgroups, then the host's mounts made read-only and a private /dev/shm
// and the resolver files' copies mounted, then the launcher's own uid
// taken and the resolver keeper started, then dropping capabilities, then
// Landlock, and the seccomp filter last.
func (l *launcher) setup() (string, error) {
	cfg := l.cfg
	hidden, err := setupMounts(cfg)
	if err != nil {
		return "mount", err
	}
	l.hidden = hidden
	if err := hideOtherCgroups(cfg, l.plan); err != nil {
		return "mount", err
	}
	if err := refuseKernelGrants(cfg); err != nil {
		return "mount", err
	}
	// Through the sandbox's /proc, before it is made read-only.
	if err := noExecMemfds(); err != nil {
		return "privileges", err
	}
	if err := unix.Sethostname([]byte(cfg.hostname())); err != nil {
		return "hostname", fmt.Errorf("set hostname: %w", err)
	}
	if err := ownSessionKeyring(); err != nil {
		return "keyring", err
	}
	if cfg.newNet() {
		if err := loopbackUp(); err != nil {
			return "network", err
		}
		if err := openPrivilegedPorts(); err != nil {
			return "network", err
		}
		if err := startBridges(cfg); err != nil {
			return "bridge", err
		}
	}
	if err := l.enterCgroup(); err != nil {
		return "cgroup", err
	}
	if err := hideRunDir(cfg); err != nil {
		return "mount", err
	}
	g, err := openGrants(cfg)
	if err != nil {
		return "landlock", err
	}
	// The app must not inherit them (they are close-on-exec), nor the
	// launcher keep them.
	defer g.close()
	if err := readOnlyMounts(cfg, g); err != nil {
		return "mount", err
	}
	if err := l.privateShm(); err != nil {
		return "mount", err
	}
	defer l.closeKept()
	if err := l.keepResolverFiles(); err != nil {
		return "mount", err
	}
	if err := enterOwnRoot(cfg, g); err != nil {
		return "mount", err
	}
	if err := launcherOwnUID(); err != nil {
		return "privileges", err
	}
	if err := l.startResolverKeeper(); err != nil {
		return "mount", err
	}
	if err := dropPrivileges(); err != nil {
		return "privileges", err
	}
	if err := l.applyLandlock(g); err != nil {
		return "landlock", err
	}
	// The network namespace confines only the socket families the kernel
	// keeps per namespace; the others would reach past it.
	if err := installFilter(cfg.newNet()); err != nil {
		return "seccomp", err
	}
	return "", nil
}

// setupMounts gives the sandbox its own /proc, showing only its PID
// namespace, and with the tmp preset the instance's tmp/ as /tmp.
// Nothing propagates back to the host. It returns the hidden files as
// they were before their covers, for Landlock.
func setupMounts(cfg *Config) ([]hiddenPath, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	const safe = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("proc", "/proc", "proc", safe, ""); err != nil {
		return nil, fmt.Errorf("mount /proc: %w", err)
	}
	if err := maskPaths(cfg); err != nil {
		return nil, err
	}
	if err := coverOwnerOnlyProc(cfg); err != nil {
		return nil, err
	}
	hidden, err := hidePaths(cfg.Hidden)
	if err != nil {
		return nil, err
	}
	if hasPreset(cfg, PresetTmp) {
		tmp := filepath.Join(cfg.Dir, "tmp")
		if err := unix.Mount(tmp, "/tmp", "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("mount %s on /tmp: %w", tmp, err)
		}
		if err := unix.Mount("", "/tmp", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return nil, fmt.Errorf("remount /tmp nosuid: %w", err)
		}
	}
	return hidden, nil
}

// maskedPaths are the files and directories of /proc and /sys every app
// finds empty, whatever its uid: runc's default masked paths, which show
// the host's kernel and hardware (kcore, timer_list, sched_debug,
// latency_stats; firmware tables and the physical memory map in
// /sys/firmware) and are not namespaced, Docker's additions to them
// (/proc/interrupts, whose counts of every CPU's interrupts time what
// other processes do; powercap's energy counters, the PLATYPUS power side
// channel), and /proc/keys and /proc/key-users. Keyrings are not namespaced either: /proc/keys lists
// every key the app's uid may view, for uid 0 the host's root keyrings,
// and /proc/key-users the number of keys and bytes every uid of the host
// holds. A kernel without one has nothing to mask there.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/key-users",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap", "/sys/devices/virtual/tpm",
}

// maskPaths covers each of maskedPaths, as runc does: a file with an empty
// one, a directory with an empty read-only tmpfs. A [[sandbox.paths]]
// grant of one, or of a path in it, keeps the host's: the operator asks
// for it.
func maskPaths(cfg *Config) error {
	var granted []string
	for _, p := range cfg.Landlock.Paths {
		granted = append(granted, filepath.Clean(p.Path))
	}
	for _, path := range maskedPaths {
		if slices.ContainsFunc(granted, func(g string) bool { return g == path || strings.HasPrefix(g, path+"/") }) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			continue
		}
		if err := cover(path, &st); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("mask %s: %w", path, err)
		}
	}
	return nil
}

// cover mounts an empty read-only tmpfs on path, a directory as st says,
// or /dev/null on it, a file.
func cover(path string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
		return unix.Mount("tmpfs", path, "tmpfs", flags, "size=4k,mode=0555")
	}
	return unix.Mount("/dev/null", path, "", unix.MS_BIND, "")
}

// hidePaths covers each of paths, Config.Hidden, as maskPaths covers its
// own, but whatever the grants: a file with an empty one, a directory with
// an empty read-only tmpfs. One that does not exist is left alone. A host
// process replacing one by rename detaches its cover, so it returns each
// as it was, for Landlock to keep out of reach (splitter); a kernel
// without Landlock has the covers alone.
func hidePaths(paths []string) ([]hiddenPath, error) {
	var hidden []hiddenPath
	for _, path := range paths {
		real, err := filepath.EvalSymlinks(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("hide %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(real, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("hide %s: %w", path, err)
		}
		h, err := lookHidden(real, &st)
		if err != nil {
			return nil, fmt.Errorf("hide %s: %w", path, err)
		}
		if err := cover(real, &st); err != nil {
			return nil, fmt.Errorf("hide %s: %w", path, err)
		}
		hidden = append(hidden, h)
	}
	return hidden, nil
}

// hideOtherCgroups covers each cgroup v2 hierarchy with an empty tmpfs,
// the app's own cgroup bound back at its path, where it reads its limits.
// clone3 with CLONE_INTO_CGROUP starts a child in the cgroup a descriptor
// names, an O_PATH one too, which Landlock does not check, and the kernel
// asks only for write permission on cgroup.procs of the cgroup above both,
// by the inode's mode and past the read-only mount: root owns it, so an
// app running as root started children in the hierarchy's root, out of
// its memory, pids and CPU limits. A v1 hierarchy takes no such
// descriptor. Unlike maskPaths, the cover holds whatever the
// [[sandbox.paths]] grants: they are opened after it, so a grant of a
// hierarchy, or of a directory above it, shows the cover, and one the
// cover cannot hold is refused (refuseCgroupGrants).
func hideOtherCgroups(cfg *Config, plan *cgroupPlan) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	own := ""
	if plan != nil && plan.Version == 2 {
		own = plan.Dirs[""]
	}
	var points []string
	for _, m := range ParseCgroupMounts(data) {
		point := unescapeMountPath(m.Point)
		if err := refuseCgroupGrants(cfg, point, m.Version, own); err != nil {
			return err
		}
		if m.Version == 2 {
			points = append(points, point)
		}
	}
	// The outermost hierarchy holding it: one below another is hidden
	// with it.
	cover := -1
	for i, p := range points {
		if _, ok := within(own, []string{p}); ok && (cover < 0 || len(p) < len(points[cover])) {
			cover = i
		}
	}
	if cover < 0 {
		own = ""
	}
	tree := -1
	if own != "" {
		// Taken before the hierarchy is covered, and bound back once
		// the path to it is made in the tmpfs.
		tree, err = unix.OpenTree(unix.AT_FDCWD, own, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		// A kernel before 5.2 has no open_tree, nor CLONE_INTO_CGROUP
		// (5.7), so nothing to hide the hierarchy from.
		if errors.Is(err, unix.ENOSYS) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("clone the app's cgroup %s: %w", own, err)
		}
		defer unix.Close(tree)
	}
	for _, p := range points {
		err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0755")
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("cover cgroup hierarchy %s: %w", p, err)
		}
	}
	if own == "" {
		return nil
	}
	rel, err := filepath.Rel(points[cover], own)
	if err != nil {
		return fmt.Errorf("place the app's cgroup %s: %w", own, err)
	}
	// Each directory on the way traversable, whatever the umask.
	dir := points[cover]
	for _, name := range strings.Split(rel, "/") {
		dir = filepath.Join(dir, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("place the app's cgroup %s: %w", own, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("place the app's cgroup %s: %w", own, err)
		}
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, own, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind the app's cgroup %s: %w", own, err)
	}
	return nil
}

// kernelFileSystems are the kernel's interfaces mounted as file systems
// (cgroups apart: refuseCgroupGrants), whose files set the host's kernel,
// devices and memory management for every namespace, guarded by their
// modes alone: root's to write.
var kernelFileSystems = map[string]bool{
	"proc": true, "sysfs": true, "debugfs": true, "tracefs": true, "securityfs": true,
	"configfs": true, "bpf": true, "pstore": true, "efivarfs": true, "binfmt_misc": true,
	"fusectl": true,
}

// refuseKernelGrants refuses, to an app running as root, a grant with "w"
// at, above or in a mount of a kernel file system: a writable grant is a
// writable mount, and uid 0 passes the modes of the host's settings there
// without a capability (kernel.core_pattern names a program the kernel
// runs as root on the host, sysfs removes devices or suspends the
// machine). Other uids keep such grants: the modes keep them out but for
// what the host gave them (a device attribute udev made their group's).
func refuseKernelGrants(cfg *Config) error {
	if cfg.UID != 0 {
		return nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		pre, post, ok := strings.Cut(line, " - ")
		f, pf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(pf) < 1 || !kernelFileSystems[pf[0]] {
			continue
		}
		point := unescapeMountPath(f[4])
		for _, p := range cfg.Landlock.Paths {
			if !strings.Contains(p.Access, "w") {
				continue
			}
			path := filepath.Clean(p.Path)
			if real, err := filepath.EvalSymlinks(path); err == nil {
				path = real
			}
			_, holds := within(point, []string{path})
			_, in := within(path, []string{point})
			if holds || in {
				return fmt.Errorf("path %s: mode %q lets the app, running as root, write to the kernel's %s file system at %s, the host's kernel settings and devices (kernel.core_pattern names a program the kernel runs as root): grant it without \"w\", or run the app as a user or group the file's mode lets write it", p.Path, p.Access, pf[0], point)
			}
		}
	}
	return nil
}

// refuseCgroupGrants refuses a [[sandbox.paths]] grant that the cover of
// the cgroup hierarchy mounted at point cannot hold: one with "w" at,
// above or in any hierarchy, v1 too, where an app running as root could
// write its own limits or another cgroup's tasks or cgroup.procs (a
// writable grant is a writable mount, the cover and the app's own cgroup
// bound back in it included); and in a v2 hierarchy one of a cgroup
// other than the app's own or the directories on the way to it, which the
// cover hides. A grant is taken with its symbolic links resolved, as the
// launcher opens it, and as the host shows it: the cover is not yet
// mounted.
func refuseCgroupGrants(cfg *Config, point string, version int, own string) error {
	for _, p := range cfg.Landlock.Paths {
		path := filepath.Clean(p.Path)
		if real, err := filepath.EvalSymlinks(path); err == nil {
			path = real
		}
		_, holds := within(point, []string{path})
		_, in := within(path, []string{point})
		if strings.Contains(p.Access, "w") && (holds || in) {
			return fmt.Errorf("path %s: mode %q lets the app write to the cgroup hierarchy %s, where an app running as root could leave its cgroup or raise its limits: grant it without \"w\"", p.Path, p.Access, point)
		}
		if version != 2 || !in || holds {
			continue
		}
		// own is "" without a v2 plan, and within would take it for "/".
		if own != "" {
			_, mine := within(path, []string{own})
			_, onTheWay := within(own, []string{path})
			if mine || onTheWay {
				continue
			}
		}
		return fmt.Errorf("path %s: in the cgroup v2 hierarchy %s, which the sandbox hides but for the app's own cgroup, readable without a grant: an app running as root could start children in any other cgroup it can name", p.Path, point)
	}
	return nil
}

// coverOwnerOnlyProc covers with an empty file each file of /proc that
// only its owner (root) or group may read and the app may by its uid or
// gid: slabinfo, vmallocinfo, timer_list, pagetypeinfo and kpageflags,
// kpagecount, kpagecgroup, the kernel's heap and the host's physical
// memory, aids to an attack on the kernel. Their mode alone keeps them
// from other users, and a root app, without capabilities, passes it.
// Docker masks some of them likewise. An app of its own uid reads none
// of them anyway: nothing is mounted then.
func coverOwnerOnlyProc(cfg *Config) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list /proc: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		path := "/proc/" + e.Name()
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil || st.Mode&0o004 != 0 {
			continue
		}
		if !(st.Uid == cfg.UID && st.Mode&0o400 != 0 || st.Gid == cfg.GID && st.Mode&0o040 != 0) {
			continue
		}
		if err := unix.Mount("/dev/null", path, "", unix.MS_BIND, ""); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("cover %s: %w", path, err)
		}
	}
	return nil
}

// shmDir is where POSIX shared memory and semaphores live (shm_open,
// sem_open, and on them Python's multiprocessing).
const shmDir = "/dev/shm"

// shmSize bounds the sandbox's /dev/shm as Docker bounds a container's.
// Its pages count against the app's memory limit, as any tmpfs's do; the
// size keeps an app without a limit from holding up to half the host's
// memory there.
const shmSize = 64 << 20

// privateShm mounts a tmpfs of the app's own on /dev/shm: the host's is
// read-only in the sandbox, and made writable it would be shared with
// every user of the host. It is mounted once the other mounts are
// read-only, so that it stays writable. A grant of /dev/shm, or of a
// path in it, keeps the host's: the operator asks for memory shared with
// the host's processes. A host without /dev/shm has no POSIX shared
// memory to give.
func (l *launcher) privateShm() error {
	for _, p := range l.cfg.Landlock.Paths {
		if _, ok := within(filepath.Clean(p.Path), []string{shmDir}); ok {
			return nil
		}
	}
	if _, err := os.Stat(shmDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", shmSize, l.cfg.UID, l.cfg.GID)
	if err := unix.Mount("tmpfs", shmDir, "tmpfs", flags, opts); err != nil {
		return fmt.Errorf("mount a private tmpfs on %s: %w", shmDir, err)
	}
	l.shm = true
	return nil
}

// ownSessionKeyring gives the calling (locked) thread, and so the app it
// forks, a new anonymous session keyring. Kernel keyrings are not
// namespaced, and a process keeps the session keyring of the one that
// started it: the runner's, and through it that of the shell or service
// manager that started the runner. Whoever possesses a keyring may read
// its keys and add its own, whatever its uid: the app could read the
// host's keys there, plant keys for the host's processes to find, or pass
// them to another app. runc does the same for each container.
func ownSessionKeyring() error {
	_, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
	if errno != 0 && errno != unix.ENOSYS {
		return fmt.Errorf("join a session keyring of its own: %w", errno)
	}
	return nil
}

// appRootCandidates are where the launcher may mount the sandbox's root:
// top directories every system has, one of which no Landlock rule names.
var appRootCandidates = []string{"/sys", "/dev", "/mnt", "/media", "/srv", "/opt", "/boot", "/home", "/var"}

// enterOwnRoot binds the sandbox's tree, read-only mounts and all, onto a
// top directory and chroots the launcher there, and so the app. Both see
// the same paths as before, and Landlock rules follow the files whatever
// the path; but the kernel refuses a user namespace to a process whose
// root is not its mount namespace's. Without that, the app could create
// one and hold every capability in it: not over the host, but over a
// network namespace of its own, where nf_tables and the rest of the
// kernel's network configuration, a frequent source of privilege
// escalations, are open to it.
//
// Landlock walks a path up past the root, through the directory the tree
// is mounted on and that directory's parents: a rule on one of them would
// cover every file. So the directory is one no rule names, and its only
// parent is /, a rule on which covers every file anyway.
func enterOwnRoot(cfg *Config, g grants) error {
	ruled := map[[2]uint64]bool{}
	for _, f := range g {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) == nil {
			ruled[fileID(&st)] = true
		}
	}
	for _, dir := range appRootCandidates {
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || ruled[fileID(&st)] {
			continue
		}
		if err := unix.Mount("/", dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind the sandbox's root on %s: %w", dir, err)
		}
		if err := unix.Chroot(dir); err != nil {
			return fmt.Errorf("chroot to %s: %w", dir, err)
		}
		if err := unix.Chdir(cfg.Dir); err != nil {
			return fmt.Errorf("enter %s: %w", cfg.Dir, err)
		}
		return nil
	}
	return fmt.Errorf("no directory to mount the sandbox's root on: %s are all missing or granted", strings.Join(appRootCandidates, ", "))
}

// fileID tells one file from another: its device and inode. The device
// is widened because it is a uint32 on mips.
func fileID(st *unix.Stat_t) [2]uint64 {
	return [2]uint64{uint64(st.Dev), st.Ino}
}

// hideRunDir covers the instance's run/ with an empty read-only tmpfs,
// once the bridges no longer need its sockets by name: the launcher has
// handed the outbound listeners over and bound the inbound ones, and the
// runner reaches them from outside. Only root may enter run/, but an app
// running as root could otherwise connect to the runner's bridge socket
// and have it serve listeners of its own, past the connection limit.
func hideRunDir(cfg *Config) error {
	run := filepath.Join(cfg.Dir, "run")
	const flags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("tmpfs", run, "tmpfs", flags, "size=4k,mode=0700"); err != nil {
		return fmt.Errorf("hide %s: %w", run, err)
	}
	return nil
}

// openPrivilegedPorts lets the app listen on every port of its own
// network namespace, as Docker does for a container: the app has no
// capability, so the ports below 1024 would be closed to it ([http] port =
// 80 failing with "permission denied", whatever its user), though in its
// namespace they guard nothing of the host's. The setting belongs to the
// network namespace of the process that writes it, through the sandbox's
// /proc, before it is made read-only. Kernels before 4.11 lack the
// setting: there the app keeps 1024 as its lowest port.
func openPrivilegedPorts() error {
	const sysctl = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	err := os.WriteFile(sysctl, []byte("0"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open the ports below 1024 to the app: %w", err)
	}
	return nil
}

// startBridges opens the bridge listeners before Landlock and the
// capability drop, so the app cannot bind the bridge ports itself. The
// outbound ones go to the runner, which serves them (OutboundBridge); the
// launcher stays out of the app's NATS traffic.
func startBridges(cfg *Config) error {
	ctx := context.Background()
	for _, b := range cfg.Outbound {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(b.Port)})
		if err != nil {
			return fmt.Errorf("listen on bridge port %d: %w", b.Port, err)
		}
		err = handOver(ln, b.Socket)
		ln.Close()
		if err != nil {
			return fmt.Errorf("bridge port %d: %w", b.Port, err)
		}
	}
	for _, b := range cfg.Inbound {
		if err := os.Remove(b.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale bridge socket: %w", err)
		}
		ln, err := listenUnix(b.Socket)
		if err != nil {
			return fmt.Errorf("listen on bridge socket: %w", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(b.Port)))
		var d net.Dialer
		// The runner opens these connections, not the app: no limit.
		go forward(ctx, ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, 0)
	}
	return nil
}

// enterCgroup prepares the app's cgroup placement without putting the
// launcher's own memory and threads into it. On v2 the app is cloned
// into its cgroup. On v1, where no clone flag exists, the thread that
// forks steps into the app's cgroups for the fork and back out after
// it; moving one thread, not the process, keeps the launcher's other
// threads from counting against the app's pids.max. The files are
// opened now because Landlock will not allow opening them later, and
// through detached mounts because the sandbox's own are made read-only.
func (l *launcher) enterCgroup() error {
	l.cgroupFD = -1
	if l.plan == nil {
		return nil
	}
	if l.plan.Version == 2 {
		fd, err := unix.Open(l.plan.Dirs[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open cgroup: %w", err)
		}
		l.cgroupFD = fd
		return nil
	}
	apps, homes, err := l.plan.v1Steps(l.cfg.cgroupPath())
	if err != nil {
		return err
	}
	for i, dir := range apps {
		home, err := openThroughClone(homes[i], "tasks")
		if err != nil {
			return fmt.Errorf("open own cgroup: %w", err)
		}
		l.homeV1 = append(l.homeV1, home)
		app, err := openThroughClone(dir, "tasks")
		if err != nil {
			return fmt.Errorf("open app's cgroup: %w", err)
		}
		l.appV1 = append(l.appV1, app)
	}
	return nil
}

// noExecMemfds makes every memfd of the sandbox non-executable: Landlock
// rules cover files of the filesystem, not anonymous ones, and the app
// could otherwise write code it fetched into a memfd and exec it through
// /proc/self/fd or execveat, past the execute allow-list. The setting
// belongs to the PID namespace of the process that writes it, the
// sandbox's own here, and a namespace's children may only raise it. With
// 1, since Linux 6.3, memfd_create without MFD_EXEC seals the memfd
// non-executable, so apps that make memfds for shared memory still work,
// and the seccomp filter refuses MFD_EXEC. 2 refuses MFD_EXEC in the
// kernel too, but before 6.6 it also refuses every memfd_create without
// MFD_NOEXEC_SEAL, which breaks those apps: it is kept for architectures
// without the filter, where nothing else refuses MFD_EXEC. A value the
// parent namespace set higher (a hardened host's 2) is inherited and may
// not be lowered: it is kept. Kernels before 6.3 lack the setting
// (docs/SECURITY.md, "Known limits").
func noExecMemfds() error {
	const sysctl = "/proc/sys/vm/memfd_noexec"
	level := byte('1')
	if _, filtered := seccompArchs[runtime.GOARCH]; !filtered {
		level = '2'
	}
	cur, err := os.ReadFile(sysctl)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("make memfds non-executable: %w", err)
	}
	if len(cur) > 0 && cur[0] >= level && cur[0] <= '2' {
		return nil
	}
	if err := os.WriteFile(sysctl, []byte{level}, 0); err != nil {
		return fmt.Errorf("make memfds non-executable: %w", err)
	}
	return nil
}

// launcherOwnUID makes LauncherUID the launcher's real and saved uid,
// keeping uid 0 as its effective one, and so its capabilities. The kernel
// lets a process without CAP_KILL signal another whose real or saved uid
// is its own, and prlimit(2) the limits of one whose every uid is: an app
// running as root shared all of the launcher's. Its SIGSEGV, whether
// sent or queued as a fault (which signal.Ignore does not cover), made
// the launcher's Go runtime crash, and prlimit set the launcher's limits
// (a hard RLIMIT_NOFILE of 3, and no bridge connection is served). PID 1
// of a namespace gets from its own processes only the signals it has a
// handler for, and Go's runtime has one for nearly all. The launcher
// still signals the app: its effective uid is the app's, or it has
// CAP_KILL. Before the fork, so that the app never runs beside a
// launcher of its uid, and before the resolver keeper's start, which
// takes it as its every uid (startResolverKeeper). A uid the user
// namespace does not map (narun run in a container) is refused with
// EINVAL: there the launcher, and the keeper, stay root's.
func launcherOwnUID() error {
	err := syscall.Setresuid(LauncherUID, 0, LauncherUID)
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("take the launcher's own uid %d: %w", LauncherUID, err)
	}
	return nil
}

// dropPrivileges empties the capability bounding, ambient and
// inheritable sets and sets no_new_privs on the calling (locked) thread,
// the one that forks the app, so the app (even as uid 0) execs with no
// capabilities and cannot gain any. The launcher keeps its effective and
// permitted sets: it still has to switch the app's uid.
func dropPrivileges() error {
	last := 40
	if data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	// An exec as uid 0 puts the whole inheritable set into the permitted
	// one, whatever the bounding set; a runner started with inheritable
	// capabilities would hand them to a root app.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	caps[0].Inheritable, caps[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// applyLandlock confines the launcher itself, so the app inherits the
// domain from its first instruction. What the launcher does afterwards
// (exec the binary, forward bridges, write held cgroup files) is either
// allowed by the same rules or done through descriptors opened before.
func (l *launcher) applyLandlock(g grants) error {
	abi := landlockABI()
	if abi == 0 {
		if l.cfg.Landlock.mode() == LandlockRequired {
			return errors.New("the kernel has no Landlock support (landlock = \"required\")")
		}
		return nil
	}
	c, rules, release, err := landlockRules(l.cfg, abi, g, l.hidden)
	if err != nil {
		return err
	}
	defer release()
	if l.shm {
		// Not among the grants: privateShm mounted it after they were opened.
		rights := landlock.AccessFSSet(rightsReadDir|rightsWriteDir) & c.HandledAccessFS
		rules = append(rules, landlock.PathAccess(rights, shmDir))
	}
	if l.plan != nil {
		// The app's own cgroups, read-only: a JVM, .NET, Node.js or Go
		// sizes its heap and threads from the limits there, else from the
		// host's memory and cores. Their paths are the host's, as
		// /proc/self/cgroup names them, with no cgroup namespace.
		rights := landlock.AccessFSSet(rightsReadDir) & c.HandledAccessFS
		for _, dir := range l.plan.Dirs {
			rules = append(rules, landlock.PathAccess(rights, dir))
		}
	}
	for _, k := range l.kept {
		// The copy itself, whatever its path shows now; the grants hold
		// the host's file.
		rules = append(rules, landlock.PathAccess(landlock.AccessFSSet(rightsReadFile)&c.HandledAccessFS, fdPath(k.copy)))
	}
	if err := c.Restrict(rules...); err != nil {
		return fmt.Errorf("restrict: %w", err)
	}
	l.abi = min(abi, maxABI)
	return nil
}

// startApp forks the app as the config's user with no supplementary
// groups, in a session of its own (and so a process group of its own), and
// returns its pid.
func (l *launcher) startApp() (int, error) {
	cfg := l.cfg
	args := cfg.Args
	if len(args) == 0 {
		args = []string{cfg.Binary}
	}
	// Never nil: os.StartProcess reads nil as "inherit", which would hand
	// the app the launcher's own environment.
	env := append([]string{}, cfg.Env...)
	if hasPreset(cfg, PresetTmp) && !hasEnv(env, "TMPDIR") {
		env = append(env, "TMPDIR=/tmp")
	}
	// A session of its own has no controlling terminal: the launcher's
	// is the runner's, the operator's shell's when narun runs in one, and
	// on it TIOCSTI (Linux before 6.2, or dev.tty.legacy_tiocsti = 1)
	// types commands into that shell through any descriptor of the
	// terminal, /dev/tty included, which opens to every uid. The group is
	// the session's, numbered as the app, as signals to it expect.
	sys := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: []uint32{}},
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if l.cgroupFD >= 0 {
		sys.UseCgroupFD = true
		sys.CgroupFD = l.cgroupFD
	}
	// LauncherMain locked this goroutine to its thread: the one that
	// forks, so the one moved into the app's cgroups.
	var p *os.Process
	err := forkInto(l.appV1, l.homeV1, func() error {
		return retryBusy(func() (err error) {
			p, err = os.StartProcess(cfg.Binary, args, &os.ProcAttr{
				Dir:   cfg.Dir,
				Env:   env,
				Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
				Sys:   sys,
			})
			return err
		})
	})
	for _, f := range append(l.appV1, l.homeV1...) {
		f.Close()
	}
	if err != nil {
		return 0, err
	}
	return p.Pid, nil
}

// explainExec adds the usual cause to an exec refused with "permission
// denied": a binary whose mode the app's uid may not execute, or, refused
// by Landlock, a dynamically linked binary whose loader and libraries are
// not allowed.
func explainExec(cfg *Config, err error) error {
	if !errors.Is(err, unix.EACCES) {
		return err
	}
	var st unix.Stat_t
	if unix.Stat(cfg.Binary, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && !mayExecute(cfg, &st) {
		return fmt.Errorf("%w (uid %d, gid %d may not execute the binary: mode %04o, owner %d:%d)", err, cfg.UID, cfg.GID, st.Mode&0o7777, st.Uid, st.Gid)
	}
	if interp := scriptInterpreter(cfg.Binary); interp != "" {
		return fmt.Errorf("%w (the binary is a script: its interpreter %s needs a [[sandbox.paths]] grant with x, and the %s preset if it is dynamically linked)", err, interp, PresetSharedLibs)
	}
	if hasPreset(cfg, PresetSharedLibs) {
		return err
	}
	if Interpreter(cfg.Binary) != "" {
		return fmt.Errorf("%w (the binary is dynamically linked: add the %s preset)", err, PresetSharedLibs)
	}
	return err
}

// scriptInterpreter returns the interpreter a script's "#!" line names,
// or "" for a file that is no script or cannot be read.
func scriptInterpreter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	line, ok := strings.CutPrefix(string(buf[:n]), "#!")
	if !ok {
		return ""
	}
	line, _, _ = strings.Cut(line, "\n")
	if fields := strings.Fields(line); len(fields) > 0 {
		return fields[0]
	}
	return ""
}

// mayExecute says whether the mode of the file st describes lets the
// app's uid and gid (it has no other group) execute it; root, without
// capabilities, as its owner.
func mayExecute(cfg *Config, st *unix.Stat_t) bool {
	switch {
	case st.Uid == cfg.UID:
		return st.Mode&0o100 != 0
	case st.Gid == cfg.GID:
		return st.Mode&0o010 != 0
	}
	return st.Mode&0o001 != 0
}

// Interpreter returns the program interpreter (dynamic loader) the
// executable at path asks for, or "" for a static one or a file it cannot
// read: Landlock refuses a dynamically linked binary's loader and libraries
// unless the shared_libs preset allows them.
func Interpreter(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
		if err != nil {
			return ""
		}
		return strings.TrimRight(string(b), "\x00")
	}
	return ""
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// supervise forwards signals to the app's process group and reaps every
// child until the app itself has exited; it returns the app's exit code
// or the signal that killed it. Orphans of the app are reparented to the
// launcher (PID 1) and reaped here too; whatever still runs when the
// launcher exits is killed by the kernel with the namespace.
func supervise(app int, sigs, children <-chan os.Signal) (code, sig int) {
	for {
		select {
		case s := <-sigs:
			if unix.Kill(-app, s.(syscall.Signal)) != nil {
				_ = unix.Kill(app, s.(syscall.Signal))
			}
		case <-children:
			if code, sig, exited := reap(app); exited {
				return code, sig
			}
		}
	}
}

// reap waits for every child that has exited, and reports whether the app
// was among them and how it ended.
func reap(app int) (code, sig int, exited bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil || pid <= 0 {
			return 0, 0, false
		}
		if pid != app {
			continue
		}
		if ws.Signaled() {
			return -1, int(ws.Signal()), true
		}
		return ws.ExitStatus(), 0, true
	}
}
