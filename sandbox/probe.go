package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Capabilities are what this node's kernel lets the sandbox enforce,
// for the node heartbeat. The runner publishes it as is.
type Capabilities struct {
	// LandlockABI is the kernel's Landlock ABI version; 0 = no Landlock.
	LandlockABI int `json:"landlock_abi"`
	// LandlockEnforced is the ABI the sandbox uses (capped at what it knows).
	LandlockEnforced int `json:"landlock_enforced"`
	// CgroupVersion is 2 (unified), 1 (legacy controllers) or 0 (none).
	CgroupVersion int `json:"cgroup_version"`
	// CgroupControllers lists the usable controllers among memory, cpu, cpuacct, pids.
	CgroupControllers []string `json:"cgroup_controllers"`
	// Namespaces lists the namespace kinds this kernel has (pid, net, mnt, ipc, uts, user, cgroup).
	Namespaces []string `json:"namespaces"`
	// UserNamespaces reports whether user namespaces may be created.
	UserNamespaces bool `json:"user_namespaces"`
	// Sandbox reports whether mode = "sandbox" can run here: root, and
	// the pid, mnt, ipc, uts and net namespaces, which a child could be
	// created in.
	Sandbox bool `json:"sandbox"`
	// SandboxNote says why Sandbox is false or, where it is true, what
	// limits it (a user namespace that maps only some uids); empty when
	// nothing does.
	SandboxNote string `json:"sandbox_note,omitempty"`
}

// sandboxNamespaces are the namespaces the launcher is started in;
// Command adds CLONE_NEWNET unless the app shares the host's network.
const sandboxNamespaces = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS

// noNamespaces is the advice for a node whose clone(2) refuses them.
const noNamespaces = `this node cannot create namespaces (in a container, or an emulator such as qemu-user?): use mode = "exec"`

// probed is the probe of this process: the kernel and narun's privileges
// do not change while it runs, and the probe starts a process.
var probed = sync.OnceValue(probe)

// Probe inspects the running kernel, once per process. It changes
// nothing, but starts a child in new namespaces that ends at once.
func Probe() Capabilities {
	c := probed()
	c.CgroupControllers = slices.Clone(c.CgroupControllers)
	c.Namespaces = slices.Clone(c.Namespaces)
	return c
}

func probe() Capabilities {
	var c Capabilities
	c.LandlockABI = landlockABI()
	c.LandlockEnforced = min(c.LandlockABI, maxABI)
	if h, err := detectHierarchies(""); err == nil {
		c.CgroupVersion = h.version()
		switch c.CgroupVersion {
		case 2:
			data, _ := os.ReadFile(filepath.Join(h.v2root, "cgroup.controllers"))
			for _, ctl := range strings.Fields(string(data)) {
				if ctl == "memory" || ctl == "cpu" || ctl == "pids" {
					c.CgroupControllers = append(c.CgroupControllers, ctl)
				}
			}
		case 1:
			for ctl := range h.v1 {
				c.CgroupControllers = append(c.CgroupControllers, ctl)
			}
		}
		sort.Strings(c.CgroupControllers)
	}
	for _, ns := range []string{"pid", "net", "mnt", "ipc", "uts", "user", "cgroup"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err == nil {
			c.Namespaces = append(c.Namespaces, ns)
		}
	}
	if data, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		c.UserNamespaces = n > 0
	}
	var missing []string
	for _, ns := range []string{"pid", "mnt", "ipc", "uts", "net"} {
		if !slices.Contains(c.Namespaces, ns) {
			missing = append(missing, ns)
		}
	}
	switch {
	case os.Geteuid() != 0:
		c.SandboxNote = "it needs root"
	case len(missing) > 0:
		c.SandboxNote = "the kernel lacks the " + strings.Join(missing, ", ") + " namespaces"
	default:
		if err := cloneInto(sandboxNamespaces | syscall.CLONE_NEWNET); err != nil {
			c.SandboxNote = fmt.Sprintf("%s (%v)", noNamespaces, err)
			break
		}
		c.Sandbox = true
		c.SandboxNote = uidMapNote()
	}
	return c
}

// cloneInto creates a child in the namespaces flags name, as Command
// starts the launcher: the files in /proc/self/ns and root do not
// promise it, since a container's seccomp profile or qemu-user's clone
// refuses them (EPERM, EINVAL). The child runs no program: it executes
// the empty path, which fails with ENOENT in the child, after the clone.
// Re-executing /proc/self/exe instead would, in a test binary that does
// not dispatch to the launcher, run its tests in the child.
func cloneInto(flags uintptr) error {
	_, err := os.StartProcess("", []string{"narun-probe"}, &os.ProcAttr{
		Env: []string{},
		Sys: &syscall.SysProcAttr{Cloneflags: flags},
	})
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("clone into new namespaces: %w", err)
	}
	if errno != syscall.ENOENT {
		return fmt.Errorf("clone: %w", errno)
	}
	return nil
}

// idRange is one line of /proc/self/uid_map or gid_map: ids first to
// first+count-1 of this namespace are those of its parent's from outside.
type idRange struct{ first, outside, count uint64 }

// readIDMap reads a uid_map or gid_map; nil where the kernel has no user
// namespaces, and every id is the host's.
func readIDMap(path string) ([]idRange, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read id map: %w", err)
	}
	defer f.Close()
	var m []idRange
	s := bufio.NewScanner(f)
	for s.Scan() {
		var r idRange
		if _, err := fmt.Sscan(s.Text(), &r.first, &r.outside, &r.count); err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", path, s.Text(), err)
		}
		m = append(m, r)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return m, nil
}

// isFull reports whether m maps every id, as the initial user namespace
// does (where m is nil, or 0 0 4294967295).
func isFull(m []idRange) bool {
	return m == nil || len(m) == 1 && m[0].first == 0 && m[0].count == 1<<32-1
}

// mapped reports whether m maps id.
func mapped(m []idRange, id uint32) bool {
	if isFull(m) {
		return true
	}
	for _, r := range m {
		if uint64(id) >= r.first && uint64(id)-r.first < r.count {
			return true
		}
	}
	return false
}

// uidMapNote names the uids a user namespace that maps only some of them
// leaves the apps: an app's uid derived from its name lies most likely
// outside, and cannot own its data dir.
func uidMapNote() string {
	m, err := readIDMap("/proc/self/uid_map")
	if err != nil {
		return err.Error()
	}
	if isFull(m) {
		return ""
	}
	ranges := make([]string, len(m))
	for i, r := range m {
		ranges[i] = fmt.Sprintf("%d-%d", r.first, r.first+r.count-1)
	}
	return fmt.Sprintf("this user namespace maps only uids %s (narun runs in a container?): an app needs a [sandbox] user among them", strings.Join(ranges, ", "))
}
