package sandbox

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	// the pid, mnt, ipc, uts and net namespaces.
	Sandbox bool `json:"sandbox"`
}

// Probe inspects the running kernel; it changes nothing.
func Probe() Capabilities {
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
	need := map[string]bool{"pid": true, "net": true, "mnt": true, "ipc": true, "uts": true}
	for _, ns := range c.Namespaces {
		delete(need, ns)
	}
	c.Sandbox = os.Geteuid() == 0 && len(need) == 0
	return c
}
