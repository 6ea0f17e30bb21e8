package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// v1Controllers are the legacy hierarchies an instance gets a cgroup in.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids"}

// cgroupPlan locates one instance's cgroup in every hierarchy. It is
// computed by the runner and sent to the launcher, so both agree.
type cgroupPlan struct {
	// Version is 1 or 2.
	Version int `json:"version"`
	// Dirs maps a v1 controller to its directory; v2 uses the key "".
	Dirs map[string]string `json:"dirs"`
	// Root is the v2 hierarchy's mount point, where delegating the
	// controllers down to Dirs[""] starts.
	Root string `json:"root,omitempty"`
}

// hierarchies describes the cgroup mounts of this machine.
type hierarchies struct {
	v2root string            // mount point of a v2 hierarchy that has controllers, or ""
	v1     map[string]string // v1 controller -> mount point
}

func (h hierarchies) version() int {
	switch {
	case h.v2root != "":
		return 2
	case h.v1["memory"] != "" || h.v1["cpu"] != "" || h.v1["pids"] != "":
		return 1
	}
	return 0
}

// detectHierarchies reads the mount table. A v2 hierarchy counts only at
// /sys/fs/cgroup (or root when given): the hybrid layout's empty
// /sys/fs/cgroup/unified has no controllers to enforce anything with.
func detectHierarchies(root string) (hierarchies, error) {
	h := hierarchies{v1: map[string]string{}}
	if root != "" {
		h.v2root = root
		return h, nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return h, fmt.Errorf("read mount table: %w", err)
	}
	for _, m := range ParseCgroupMounts(data) {
		switch {
		case m.Version == 2 && m.Point == "/sys/fs/cgroup":
			h.v2root = m.Point
		case m.Version == 1:
			for _, c := range v1Controllers {
				if slices.Contains(m.Options, c) {
					h.v1[c] = m.Point
				}
			}
		}
	}
	return h, nil
}

// planCgroups decides where the instance's cgroup lives; nil means the
// machine has no usable cgroups and no limits were asked for.
func planCgroups(cfg *Config) (*cgroupPlan, error) {
	return planCgroupsAt(cfg.CgroupRoot, cfg.cgroupPath(), cfg.Resources)
}

// planCgroupsAt is planCgroups for the cgroup at rel, below each
// hierarchy's root; root overrides the detected v2 mount point.
func planCgroupsAt(root, rel string, r Resources) (*cgroupPlan, error) {
	h, err := detectHierarchies(root)
	if err != nil {
		return nil, err
	}
	switch h.version() {
	case 2:
		return &cgroupPlan{Version: 2, Dirs: map[string]string{"": filepath.Join(h.v2root, rel)}, Root: h.v2root}, nil
	case 1:
		p := &cgroupPlan{Version: 1, Dirs: map[string]string{}}
		for c, mnt := range h.v1 {
			p.Dirs[c] = filepath.Join(mnt, rel)
		}
		return p, nil
	}
	if r.MemoryMax > 0 || r.CPUMillis > 0 || r.PidsMax > 0 {
		return nil, errors.New("resource limits need cgroups, and this machine has none mounted")
	}
	return nil, nil
}

// dirs returns each distinct directory once (cpu and cpuacct may share a mount).
func (p *cgroupPlan) dirs() []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range p.Dirs {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

func (p *cgroupPlan) dir(controller string) string {
	if p.Version == 2 {
		return p.Dirs[""]
	}
	return p.Dirs[controller]
}

// create makes the instance's cgroups and writes the limits. A leftover
// cgroup of the same name (from a crashed runner) is removed first.
func (p *cgroupPlan) create(r Resources) error {
	if err := p.destroy(); err != nil {
		return fmt.Errorf("remove leftover cgroup: %w", err)
	}
	if p.Version == 2 {
		if err := enableV2Controllers(p.Root, p.Dirs[""]); err != nil {
			return err
		}
	}
	for _, d := range p.dirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
	}
	need := func(controller, file string) (string, error) {
		d := p.dir(controller)
		if d == "" {
			return "", fmt.Errorf("cgroup v1 %s controller is not mounted", controller)
		}
		path := filepath.Join(d, file)
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("cgroup v%d %s controller is not available: %w", p.Version, controller, err)
		}
		return path, nil
	}
	type limit struct {
		controller, file, value string
		optional                bool // absent when swap accounting is off
	}
	var limits []limit
	if m := r.MemoryMax; m > 0 {
		v := strconv.FormatInt(m, 10)
		if p.Version == 2 {
			limits = append(limits, limit{"memory", "memory.max", v, false}, limit{"memory", "memory.swap.max", "0", true})
		} else {
			// v1 counts the memory of TCP buffers only with a limit of
			// its own (v2 charges it to memory.max): without, an app held
			// as much as the host's tcp_mem allows, past its limit, and at
			// that every TCP socket of the host is refused memory. Absent
			// from kernels that dropped it (Linux 6.x deprecates it, with
			// a warning in the kernel log at the first write).
			limits = append(limits, limit{"memory", "memory.limit_in_bytes", v, false}, limit{"memory", "memory.memsw.limit_in_bytes", v, true},
				limit{"memory", "memory.kmem.tcp.limit_in_bytes", v, true})
		}
	}
	if c := r.CPUMillis; c > 0 {
		const period = 100000
		quota := strconv.FormatInt(c*period/1000, 10)
		if p.Version == 2 {
			limits = append(limits, limit{"cpu", "cpu.max", quota + " " + strconv.Itoa(period), false})
		} else {
			limits = append(limits, limit{"cpu", "cpu.cfs_period_us", strconv.Itoa(period), false}, limit{"cpu", "cpu.cfs_quota_us", quota, false})
		}
	}
	if n := r.PidsMax; n > 0 {
		limits = append(limits, limit{"pids", "pids.max", strconv.FormatInt(n, 10), false})
	}
	for _, l := range limits {
		path, err := need(l.controller, l.file)
		if err != nil {
			if l.optional {
				continue
			}
			return err
		}
		if err := os.WriteFile(path, []byte(l.value), 0); err != nil {
			return fmt.Errorf("set %s to %s: %w", path, l.value, err)
		}
	}
	return nil
}

// enableV2Controllers delegates memory, cpu and pids from the hierarchy's
// root down to the instance's parent, so the instance's own files exist.
// It goes top-down, creating each level: a child offers only what its
// parent enabled, so on a fresh host (no narun/ yet) every level needs
// its turn, the root's first. The root's list is what the hierarchy has.
func enableV2Controllers(root, dir string) error {
	rel, err := filepath.Rel(root, filepath.Dir(dir))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("cgroup %s is not under the hierarchy %s", dir, root)
	}
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read controllers of %s: %w", root, err)
	}
	var enable []string
	for _, c := range strings.Fields(string(avail)) {
		if c == "memory" || c == "cpu" || c == "pids" {
			enable = append(enable, "+"+c)
		}
	}
	d := root
	levels := []string{"."}
	if rel != "." {
		levels = append(levels, strings.Split(rel, "/")...)
	}
	for _, name := range levels {
		d = filepath.Join(d, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if len(enable) == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
			return fmt.Errorf("enable %s in %s: %w", strings.Join(enable, " "), d, err)
		}
	}
	return nil
}

// Stats are an instance's resource figures, read from its cgroup, so
// they describe the app and its children, never the launcher.
type Stats struct {
	// MemoryCurrent is the memory charged to the cgroup (page cache included).
	MemoryCurrent int64 `json:"memory_current"`
	// MemoryPeak is the highest MemoryCurrent seen; 0 if the kernel does not say.
	MemoryPeak int64 `json:"memory_peak,omitempty"`
	// RSS is the anonymous memory.
	RSS int64 `json:"rss"`
	// CPU is the CPU time used.
	CPU time.Duration `json:"cpu"`
	// Pids is the number of tasks.
	Pids int64 `json:"pids"`
	// OOMKills counts processes the kernel killed for hitting MemoryMax.
	OOMKills int64 `json:"oom_kills"`
	// PidsLimitHits counts the processes and threads the kernel refused
	// to create for hitting PidsMax.
	PidsLimitHits int64 `json:"pids_limit_hits"`
}

// stats reads what each hierarchy offers; missing files leave zeros.
func (p *cgroupPlan) stats() Stats {
	var s Stats
	if p.Version == 2 {
		d := p.Dirs[""]
		s.MemoryCurrent = readInt(filepath.Join(d, "memory.current"))
		s.MemoryPeak = readInt(filepath.Join(d, "memory.peak"))
		s.RSS = readKey(filepath.Join(d, "memory.stat"), "anon")
		s.CPU = time.Duration(readKey(filepath.Join(d, "cpu.stat"), "usage_usec")) * time.Microsecond
		s.Pids = readInt(filepath.Join(d, "pids.current"))
		s.OOMKills = readKey(filepath.Join(d, "memory.events"), "oom_kill")
		s.PidsLimitHits = readKey(filepath.Join(d, "pids.events"), "max")
		return s
	}
	if d := p.Dirs["memory"]; d != "" {
		s.MemoryCurrent = readInt(filepath.Join(d, "memory.usage_in_bytes"))
		s.MemoryPeak = readInt(filepath.Join(d, "memory.max_usage_in_bytes"))
		s.RSS = readKey(filepath.Join(d, "memory.stat"), "total_rss")
		s.OOMKills = readKey(filepath.Join(d, "memory.oom_control"), "oom_kill")
	}
	if d := p.Dirs["cpuacct"]; d != "" {
		s.CPU = time.Duration(readInt(filepath.Join(d, "cpuacct.usage")))
	}
	if d := p.Dirs["pids"]; d != "" {
		s.Pids = readInt(filepath.Join(d, "pids.current"))
		s.PidsLimitHits = readKey(filepath.Join(d, "pids.events"), "max")
	}
	return s
}

func readInt(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n
}

// readKey reads one "key value" line of a flat-keyed cgroup file.
func readKey(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// destroy kills whatever is left in the instance's cgroups and removes
// them. A missing cgroup is not an error.
func (p *cgroupPlan) destroy() error {
	var errs []error
	for _, d := range p.dirs() {
		errs = append(errs, removeCgroup(d))
	}
	return errors.Join(errs...)
}

// removeCgroup empties dir (and its children) and removes it.
func removeCgroup(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	entries, _ := os.ReadDir(dir)
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeCgroup(filepath.Join(dir, e.Name())))
		}
	}
	if os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0) != nil {
		killProcs(dir)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return errors.Join(errs...)
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return errors.Join(append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))...)
		}
		killProcs(dir)
		time.Sleep(10 * time.Millisecond) // polling the kernel: no event says a cgroup emptied on v1
	}
}

func killProcs(dir string) {
	_ = signalProcs([]string{dir}, syscall.SIGKILL)
}

// signalProcs sends sig once to every process in the cgroups dirs (one
// process in several v1 hierarchies: an app may take a second SIGTERM
// for a hurry).
func signalProcs(dirs []string, sig syscall.Signal) error {
	pids, err := procsIn(dirs)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return err
}

// procsIn lists the processes in the cgroups dirs, each once, but this
// one: on v1 a thread of the caller that stepped into the cgroup to fork
// (forkInto) and could not step back makes cgroup.procs list the caller.
// It lists what it could read when one of dirs fails.
func procsIn(dirs []string) ([]int, error) {
	seen := map[int]bool{os.Getpid(): true}
	var pids []int
	var errs []error
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			errs = append(errs, fmt.Errorf("list the processes of cgroup %s: %w", dir, err))
			continue
		}
		for _, f := range bytes.Fields(data) {
			if pid, err := strconv.Atoi(string(f)); err == nil && pid > 0 && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids, errors.Join(errs...)
}

// threadCgroups maps each v1 controller to the cgroup the calling thread
// is in, relative to its hierarchy's root: on v1 each thread has its own.
func threadCgroups() (map[string]string, error) {
	own, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	mine := map[string]string{}
	for _, line := range strings.Split(string(own), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			mine[c] = parts[2]
		}
	}
	return mine, nil
}

// v1Steps pairs each v1 cgroup directory of the plan, the cgroup at rel,
// with the directory of the cgroup the calling thread is in now in the
// same hierarchy: where a thread that steps into the app's cgroups to
// fork it (forkInto) steps back to.
func (p *cgroupPlan) v1Steps(rel string) (app, home []string, err error) {
	mine, err := threadCgroups()
	if err != nil {
		return nil, nil, err
	}
	for _, c := range slices.Sorted(maps.Keys(p.Dirs)) {
		own, ok := mine[c]
		if !ok {
			continue
		}
		dir := p.Dirs[c]
		// The hierarchy's mount is dir minus the instance's relative path.
		mnt := strings.TrimSuffix(dir, "/"+rel)
		app, home = append(app, dir), append(home, filepath.Join(mnt, own))
	}
	return app, home, nil
}

// forkInto runs start, which forks, with the calling thread in the app's
// v1 cgroups (their tasks files in app), and moves the thread back
// through the tasks files in home after: the child is born in the app's
// cgroups, so nothing it runs can fork before being placed, and the
// caller's memory and other threads are never charged to the app. Moving
// one thread, not the process, keeps the caller's other threads from
// counting against the app's pids.max. The caller must be locked to its
// thread, which is the one that forks.
func forkInto(app, home []*os.File, start func() error) error {
	tid := []byte(strconv.Itoa(unix.Gettid()))
	var err error
	for _, f := range app {
		if _, err = f.Write(tid); err != nil {
			err = fmt.Errorf("enter the app's cgroup %s: %w", f.Name(), err)
			break
		}
	}
	if err == nil {
		err = start()
	}
	for _, f := range home {
		if _, herr := f.Write(tid); herr != nil {
			err = errors.Join(err, fmt.Errorf("%w: %s: %w", ErrThreadStuck, f.Name(), herr))
		}
	}
	return err
}

// ErrThreadStuck is Cgroup.Start's error when the thread that forked
// could not step back out of the app's v1 cgroups. The thread is left
// locked to the caller's goroutine, which must end without unlocking
// it, so that Go ends the thread: one kept running would start whatever
// it forks next in the app's cgroup, and keep that cgroup from being
// removed.
var ErrThreadStuck = errors.New("leave the app's cgroup")

// cgroupMounts lists the hierarchies instance cgroups are made in, each once.
func cgroupMounts() ([]string, error) {
	h, err := detectHierarchies("")
	if err != nil {
		return nil, err
	}
	var mounts []string
	if h.v2root != "" {
		mounts = append(mounts, h.v2root)
	}
	for _, m := range h.v1 {
		if !slices.Contains(mounts, m) {
			mounts = append(mounts, m)
		}
	}
	return mounts, nil
}

// RemoveScope removes CgroupParent/scope itself, after what is under it
// (as CleanStaleUnder does): a runner calls it when it stops, so that the
// scope of a data dir that goes away (a test's, a moved one) is not left
// behind for ever.
func RemoveScope(scope string) error {
	// "." and "./" name all of CgroupParent as "" does.
	if filepath.Clean(scope) == "." {
		return fmt.Errorf("%w: cgroup scope %q would be all of %s", ErrInvalidConfig, scope, CgroupParent)
	}
	if err := CleanStaleUnder(scope); err != nil {
		return err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := os.Remove(filepath.Join(m, CgroupParent, scope)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup scope: %w", err))
		}
	}
	return errors.Join(errs...)
}

// CleanStaleUnder removes every instance cgroup under
// CgroupParent/scope, killing what still runs in them: instances of a
// crashed runner are orphans nobody supervises. The scope keeps a runner
// from killing the instances of another runner on the same machine; ""
// means all of CgroupParent.
func CleanStaleUnder(scope string) error {
	if filepath.IsAbs(scope) || strings.Contains(scope, "..") {
		return fmt.Errorf("%w: cgroup scope %q", ErrInvalidConfig, scope)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		parent := filepath.Join(m, CgroupParent, scope)
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				errs = append(errs, removeCgroup(filepath.Join(parent, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// ErrNoCgroups is NewCgroup's answer on a machine without a cgroup
// hierarchy to make the cgroup in.
var ErrNoCgroups = errors.New("no cgroup hierarchy (memory, cpu or pids) is mounted")

// Cgroup is a cgroup of its own, in every hierarchy a sandbox uses, for a
// process that runs outside the sandbox (the runner's mode "exec"): it is
// placed there from birth as the launcher places a sandboxed app, and
// everything it forks, whatever process group or session it moves to,
// stays there to be signalled and killed with it.
type Cgroup struct {
	plan *cgroupPlan
	rel  string
	r    Resources
}

// NewCgroup plans the cgroup at path, relative to each hierarchy's root
// and under CgroupParent (as Config.Cgroup), with the limits r; root
// overrides the detected cgroup v2 mount point, as Config.CgroupRoot
// does. It creates nothing: see Create.
func NewCgroup(path, root string, r Resources) (*Cgroup, error) {
	rel := filepath.Clean(path)
	if filepath.IsAbs(rel) || !strings.HasPrefix(rel, CgroupParent+"/") || strings.Contains(rel, "..") {
		return nil, fmt.Errorf("%w: cgroup %q is not under %s/", ErrInvalidConfig, path, CgroupParent)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	plan, err := planCgroupsAt(root, rel, r)
	if err != nil {
		return nil, err
	}
	if plan == nil {
		return nil, ErrNoCgroups
	}
	// Without CLONE_INTO_CGROUP, Go's clone3 fails every start; a process
	// moved in after its start could fork before it is placed.
	if release, err := os.ReadFile("/proc/sys/kernel/osrelease"); plan.Version == 2 && err == nil && !kernelAtLeast(string(release), 5, 7) {
		return nil, fmt.Errorf("placing a process in a cgroup v2 needs Linux 5.7 (CLONE_INTO_CGROUP), this is %s", strings.TrimSpace(string(release)))
	}
	return &Cgroup{plan: plan, rel: rel, r: r}, nil
}

// kernelAtLeast says whether a kernel release ("6.1.0-13-amd64") is
// major.minor or later; one it cannot read counts as recent.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

// Create makes the cgroup and writes its limits, after removing a
// leftover of the same name (and killing what ran in it). It leaves
// nothing behind when it fails.
func (c *Cgroup) Create() error {
	if err := c.plan.create(c.r); err != nil {
		return errors.Join(fmt.Errorf("cgroup %s: %w", c.rel, err), c.plan.destroy())
	}
	return nil
}

// Start starts cmd inside the cgroup, which Create made: on v2 it is
// cloned into it (CLONE_INTO_CGROUP), on v1 the thread that forks steps
// into its tasks files for the fork and back out (forkInto), and an
// ErrThreadStuck says that it could not. It sets cmd.SysProcAttr's
// cgroup fields and keeps the rest.
func (c *Cgroup) Start(cmd *exec.Cmd) error {
	if c.plan.Version == 2 {
		fd, err := unix.Open(c.plan.Dirs[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open cgroup: %w", err)
		}
		defer unix.Close(fd)
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		return cmd.Start()
	}
	// A thread that could not step back stays locked (ErrThreadStuck).
	runtime.LockOSThread()
	apps, homes, err := c.plan.v1Steps(c.rel)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(dirs []string) ([]*os.File, error) {
		var out []*os.File
		for _, d := range dirs {
			f, err := os.OpenFile(filepath.Join(d, "tasks"), os.O_WRONLY, 0)
			if err != nil {
				return nil, fmt.Errorf("open cgroup: %w", err)
			}
			files = append(files, f)
			out = append(out, f)
		}
		return out, nil
	}
	app, err := open(apps)
	var home []*os.File
	if err == nil {
		home, err = open(homes)
	}
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err = forkInto(app, home, cmd.Start)
	if !errors.Is(err, ErrThreadStuck) {
		runtime.UnlockOSThread()
	}
	return err
}

// Signal sends sig to every process in the cgroup. SIGKILL goes through
// cgroup.kill where the kernel has it (v2, Linux 5.14), which no fork
// can outrun.
func (c *Cgroup) Signal(sig syscall.Signal) error {
	if sig == syscall.SIGKILL && c.plan.Version == 2 {
		if os.WriteFile(filepath.Join(c.plan.Dirs[""], "cgroup.kill"), []byte("1"), 0) == nil {
			return nil
		}
	}
	return signalProcs(c.plan.dirs(), sig)
}

// Stats reads the resource use of the cgroup's processes; OOMKills says
// whether the kernel killed one of them for memory.
func (c *Cgroup) Stats() Stats { return c.plan.stats() }

// Explain tells how the cgroup's main process ended, ps, when the
// cgroup counted what its exit status does not say: an *ExitError when
// the kernel OOM-killed a process of it or refused one at the pids
// limit, nil when it did neither.
func (c *Cgroup) Explain(ps *os.ProcessState) error {
	st := c.plan.stats()
	if ps == nil || st.OOMKills == 0 && st.PidsLimitHits == 0 {
		return nil
	}
	var sig syscall.Signal
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig = ws.Signal()
	}
	if e := exitError(ps.ExitCode(), sig, st, c.r); e != nil {
		return e
	}
	return nil
}

// Remove kills whatever is left in the cgroup and removes it; a cgroup
// already gone is not an error.
func (c *Cgroup) Remove() error { return c.plan.destroy() }

// Procs lists the processes in the cgroup, wherever they are in the
// process tree: a daemon that left its parent's session is among them.
func (c *Cgroup) Procs() ([]int, error) { return procsIn(c.plan.dirs()) }

// emptyPoll is how often WaitEmpty reads a cgroup that the kernel
// cannot report empty by an event.
const emptyPoll = 20 * time.Millisecond

// WaitEmpty returns once no process is left in the cgroup, or with ctx's
// error if ctx ends first: a stop's grace covers every process of the
// cgroup, not only the first. A cgroup already removed is empty. On v2
// the kernel reports it in cgroup.events, watched with inotify; v1 tells
// only a release agent, which is the machine's, so there the processes
// are read every emptyPoll.
func (c *Cgroup) WaitEmpty(ctx context.Context) error {
	if c.plan.Version == 2 {
		if err := waitUnpopulated(ctx, c.plan.Dirs[""]); !errors.Is(err, errNoWatch) {
			return err
		}
	}
	t := time.NewTicker(emptyPoll)
	defer t.Stop()
	for !c.empty() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// empty says whether no process is left in any of the cgroup's
// directories; one that cannot be read is not known to be empty.
func (c *Cgroup) empty() bool {
	for _, d := range c.plan.dirs() {
		pids, err := procsIn([]string{d})
		if len(pids) > 0 || err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	return true
}

// errNoWatch says that a cgroup's events cannot be watched (no inotify
// instance left to the user, say): the caller polls instead.
var errNoWatch = errors.New("cannot watch cgroup.events")

// waitUnpopulated waits for the v2 cgroup dir to hold no process, in
// it or below: the kernel then writes "populated 0" to cgroup.events and
// signals a modification of the file.
func waitUnpopulated(ctx context.Context, dir string) error {
	events := filepath.Join(dir, "cgroup.events")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoWatch, err)
	}
	// The watch comes before the first read, so no change falls between.
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("%w: %w", errNoWatch, err)
	}
	// Non-blocking, the file is read through Go's poller, which
	// deadlines (ctx's end) can interrupt.
	f := os.NewFile(uintptr(fd), events)
	defer f.Close()
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("%w: %w", errNoWatch, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for readKey(events, "populated") != 0 {
		if _, err := f.Read(buf); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("watch %s: %w", events, err)
		}
	}
	return nil
}
