// Package sandbox runs one app instance inside new Linux namespaces,
// confined by Landlock and cgroups, with privileges dropped: the runner
// side builds the command (Command), and the same binary, re-executed as
// the hidden launcher applet, sets the sandbox up from the inside
// (LauncherMain). It is pure Go and runs no external program.
package sandbox

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"path/filepath"
	"strings"
)

// Network modes of Config.Network.
const (
	// NetworkHost shares the host's network namespace.
	NetworkHost = "host"
	// NetworkNone gives the app a namespace with only loopback; the
	// bridges in Config.Outbound and Config.Inbound are its only ways out.
	NetworkNone = "none"
	// NetworkIsolated is NetworkNone for apps that declare more outbound
	// bridges than NATS; the two differ only in what the runner allows.
	NetworkIsolated = "isolated"
)

// Landlock modes of LandlockConfig.Mode.
const (
	// LandlockRequired refuses to start the app on a kernel without Landlock.
	LandlockRequired = "required"
	// LandlockBestEffort starts the app unconfined on a kernel without
	// Landlock and reports the degradation.
	LandlockBestEffort = "best-effort"
)

// Landlock presets of LandlockConfig.Presets.
const (
	PresetStdio      = "stdio"       // /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom
	PresetTmp        = "tmp"         // a private /tmp (the instance's tmp/ mounted there), read-write
	PresetCerts      = "certs"       // the system's CA certificates, read-only
	PresetDNS        = "dns"         // resolv.conf, hosts, nsswitch.conf, read-only
	PresetSharedLibs = "shared_libs" // /lib, /usr/lib and ld.so.cache, read and execute
	PresetProcSelf   = "proc_self"   // the sandbox's own /proc (its PID namespace only), read-only
)

// DefaultNATSPort is where an app without network finds NATS inside its
// namespace.
const DefaultNATSPort = 4222

// Config describes one sandboxed app instance. It travels to the
// launcher as JSON over an inherited pipe, never through argv or the
// launcher's environment, because Env may carry secrets.
type Config struct {
	// Binary is the absolute host path of the app's executable; required.
	// It may be a symlink, which names the process (comm, what ps and
	// pgrep show); Landlock grants the file it resolves to.
	Binary string `json:"binary"`
	// Args is the app's argv including argv[0]; empty means {Binary}.
	Args []string `json:"args,omitempty"`
	// Env is the app's whole environment; nothing of the runner's leaks in.
	Env []string `json:"env,omitempty"`
	// Dir is the instance directory, the app's working directory and
	// readable to it; its data/ is writable, its tmp/ becomes /tmp with
	// the tmp preset, its run/ holds the bridge sockets. Required, absolute.
	Dir string `json:"dir"`
	// Hostname is the UTS hostname, the instance id; empty keeps "sandbox".
	Hostname string `json:"hostname,omitempty"`
	// Network is NetworkHost (default when empty), NetworkNone or NetworkIsolated.
	Network string `json:"network,omitempty"`
	// Outbound bridges let the app reach services outside its network
	// namespace: the launcher listens on 127.0.0.1:Port inside and hands
	// the listener to the OutboundBridge listening on Socket, which must
	// exist before Start. Ignored with NetworkHost.
	Outbound []Bridge `json:"outbound,omitempty"`
	// Inbound bridges let the host reach the app: the launcher listens on
	// Socket and forwards to 127.0.0.1:Port inside. Ignored with NetworkHost.
	Inbound []Bridge `json:"inbound,omitempty"`
	// Landlock restricts the filesystem, TCP ports and IPC scopes.
	Landlock LandlockConfig `json:"landlock"`
	// UID and GID the app runs as; 0 (either) is refused unless AllowRoot is set.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// AllowRoot permits UID and GID 0; even then the app gets no capabilities, but
	// before Landlock ABI 9 it may connect to every unix socket root owns
	// on the host (docs/SECURITY.md).
	AllowRoot bool `json:"allow_root,omitempty"`
	// Resources are the cgroup limits; zero values mean unlimited.
	Resources Resources `json:"resources"`
	// Cgroup is the instance's cgroup path relative to each hierarchy's
	// root; empty means CgroupParent/Hostname. It must lie under
	// CgroupParent, so CleanStaleUnder can find it after a crash.
	Cgroup string `json:"cgroup,omitempty"`
	// Hidden are host files the app finds empty whatever it is granted:
	// narun's configuration and keys, which a root app granted /etc, say,
	// would read (NATS passwords, the secrets key), and with them log in
	// as the runner or decrypt every app's secrets. A host process that
	// replaces one by rename uncovers it; with Landlock the app still
	// cannot open what takes its name, and in the directories on its way
	// reaches only the entries there at its start (docs/SECURITY.md).
	Hidden []string `json:"hidden,omitempty"`
	// CgroupRoot overrides the detected cgroup v2 mount point, for tests
	// on machines whose v2 hierarchy is not at /sys/fs/cgroup; empty detects.
	CgroupRoot string `json:"cgroup_root,omitempty"`
}

// Bridge is one TCP port inside the sandbox joined to a unix socket outside.
type Bridge struct {
	// Port is the TCP port on 127.0.0.1 inside the network namespace.
	Port uint16 `json:"port"`
	// Socket is the absolute path of the unix socket on the host side.
	Socket string `json:"socket"`
}

// LandlockConfig is the Landlock part of Config.
type LandlockConfig struct {
	// Mode is LandlockRequired (default when empty) or LandlockBestEffort.
	Mode string `json:"mode,omitempty"`
	// Presets are named groups of paths (Preset* constants).
	Presets []string `json:"presets,omitempty"`
	// Paths are extra files or directories with their access.
	Paths []Path `json:"paths,omitempty"`
	// ConnectTCP lists extra TCP ports the app may connect to. With
	// NetworkHost and no ConnectTCP and no BindTCP, TCP is not restricted.
	ConnectTCP []uint16 `json:"connect_tcp,omitempty"`
	// BindTCP lists extra TCP ports the app may listen on.
	BindTCP []uint16 `json:"bind_tcp,omitempty"`
}

// Path grants access to a file or a directory tree.
type Path struct {
	// Path is absolute.
	Path string `json:"path"`
	// Access is a combination of "r" (read, list), "w" (write, create,
	// delete, and from Landlock ABI 9 connect to unix sockets) and "x"
	// (execute); required.
	Access string `json:"access"`
	// Optional skips the path when it does not exist instead of failing
	// the start.
	Optional bool `json:"optional,omitempty"`
}

// Resources are cgroup limits.
type Resources struct {
	// MemoryMax in bytes (swap included where the kernel allows); 0 = unlimited.
	MemoryMax int64 `json:"memory_max,omitempty"`
	// CPUMillis is the CPU quota in thousandths of a core; 0 = unlimited.
	CPUMillis int64 `json:"cpu_millis,omitempty"`
	// PidsMax bounds processes plus threads; 0 = unlimited.
	PidsMax int64 `json:"pids_max,omitempty"`
}

// CgroupParent is the cgroup under which every instance cgroup lives, in
// every hierarchy.
const CgroupParent = "narun"

// NATSBridge is the outbound bridge that gives an app without network
// its NATS at 127.0.0.1:4222, through run/nats.sock in the instance dir.
func NATSBridge(dir string) Bridge {
	return Bridge{Port: DefaultNATSPort, Socket: filepath.Join(dir, "run", "nats.sock")}
}

// HTTPBridge is the inbound bridge to a plain-HTTP app listening on port
// inside its namespace, reached through run/http.sock in the instance dir.
func HTTPBridge(dir string, port uint16) Bridge {
	return Bridge{Port: port, Socket: filepath.Join(dir, "run", "http.sock")}
}

// The ids AppID derives lie in 0x70000000..0x7FFDFFFF, which systemd's
// allocation of uids leaves unused. Below it are the subordinate ids
// useradd hands each new user in /etc/subuid and /etc/subgid (65536 of
// them from 100000 on, up to 600165535 by default), any of which their
// user may become in a user namespace of its own (newuidmap), and the
// ranges systemd-nspawn picks for containers (from 524288); above it,
// systemd's foreign range (0x7FFE0000) and ids a signed 32-bit int reads
// as negative.
const (
	appIDBase  = 0x70000000
	appIDCount = 0x7FFE0000 - appIDBase
)

// LauncherUID is the launcher's real and saved uid while the app runs:
// the first id above systemd's foreign range, which neither AppID nor
// systemd hands out, so that no process of the host, and no app, shares
// it (launcherOwnUID).
const LauncherUID = 0x7FFF0000

// AppID is a dedicated uid (and gid) for an app that names no user: a
// stable hash of its name into a range that no host user is given,
// nor may take as a subordinate id, so apps do not share an identity with
// each other or with the host's users and their containers. Two names may
// collide; a spec that must not share names its own user.
func AppID(app string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(app))
	return appIDBase + h.Sum32()%appIDCount
}

// maxHostname is the longest hostname the kernel takes (HOST_NAME_MAX).
const maxHostname = 64

// minCPUMillis is the least CPU limit: the kernel refuses a quota under
// 1 ms, and the sandbox's period is 100 ms.
const minCPUMillis = 10

// validate refuses limits the kernel would refuse at the cgroup's
// creation, where its "invalid argument" names neither the limit nor
// what would do.
func (r Resources) validate() error {
	if m := r.CPUMillis; m > 0 && m < minCPUMillis {
		return fmt.Errorf("%w: cpu limit of %d millicores: want at least %d millicores, the kernel's least quota of 1 ms per 100 ms period", ErrInvalidConfig, m, minCPUMillis)
	}
	return nil
}

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("invalid sandbox config")

func (c *Config) network() string {
	if c.Network == "" {
		return NetworkHost
	}
	return c.Network
}

func (c *Config) newNet() bool { return c.network() != NetworkHost }

func (c *Config) cgroupPath() string {
	if c.Cgroup != "" {
		return filepath.Clean(c.Cgroup)
	}
	// Cleaned as Cgroup is: a hostname of "." would otherwise pass for a
	// cgroup under CgroupParent while naming CgroupParent itself, which
	// Start removes as a leftover, with every sandbox in it.
	return filepath.Clean(CgroupParent + "/" + c.hostname())
}

func (c *Config) hostname() string {
	if c.Hostname == "" {
		return "sandbox"
	}
	return c.Hostname
}

func (l *LandlockConfig) mode() string {
	if l.Mode == "" {
		return LandlockRequired
	}
	return l.Mode
}

// Validate reports the first problem of c, wrapping ErrInvalidConfig.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if !filepath.IsAbs(c.Binary) {
		return bad("binary %q is not an absolute path", c.Binary)
	}
	if !filepath.IsAbs(c.Dir) {
		return bad("dir %q is not an absolute path", c.Dir)
	}
	if hasPreset(c, PresetTmp) {
		// The instance's tmp/ is mounted on /tmp: what lay there is out
		// of reach, the instance dir and its tmp/ included.
		for _, p := range []struct{ what, path string }{{"dir", c.Dir}, {"binary", c.Binary}} {
			if clean := filepath.Clean(p.path); clean == "/tmp" || strings.HasPrefix(clean, "/tmp/") {
				return bad("%s %s is under /tmp, which the tmp preset covers with the instance's own tmp/: move it out of /tmp", p.what, p.path)
			}
		}
	}
	switch c.network() {
	case NetworkHost, NetworkNone, NetworkIsolated:
	default:
		return bad("network %q: want host, none or isolated", c.Network)
	}
	for _, b := range append(append([]Bridge(nil), c.Outbound...), c.Inbound...) {
		if b.Port == 0 || !filepath.IsAbs(b.Socket) {
			return bad("bridge %d -> %q: want a port and an absolute socket path", b.Port, b.Socket)
		}
	}
	switch c.Landlock.mode() {
	case LandlockRequired, LandlockBestEffort:
	default:
		return bad("landlock mode %q: want required or best-effort", c.Landlock.Mode)
	}
	for _, p := range c.Landlock.Presets {
		if _, ok := presets[p]; !ok && p != PresetTmp {
			return bad("unknown landlock preset %q", p)
		}
	}
	for _, p := range c.Landlock.Paths {
		if !filepath.IsAbs(p.Path) {
			return bad("landlock path %q is not absolute", p.Path)
		}
		if p.Access == "" || strings.Trim(p.Access, "rwx") != "" {
			return bad("landlock path %q: access %q, want a combination of r, w, x", p.Path, p.Access)
		}
	}
	for _, h := range c.Hidden {
		if !filepath.IsAbs(h) {
			return bad("hidden path %q is not absolute", h)
		}
	}
	// (uid_t)-1 is no id: setuid refuses it, and chown leaves the owner
	// as it was, so data/ and tmp/ would stay root's.
	if c.UID == math.MaxUint32 || c.GID == math.MaxUint32 {
		return bad("uid or gid %d is (uid_t)-1, not an id", uint32(math.MaxUint32))
	}
	if c.UID == 0 && !c.AllowRoot {
		return bad("uid 0 without allow_root")
	}
	if c.UID == LauncherUID {
		return bad("uid %d is the launcher's own, which the app must not share", c.UID)
	}
	// Group 0 opens every file that root's group may read or write.
	if c.GID == 0 && !c.AllowRoot {
		return bad("gid 0 without allow_root")
	}
	if c.Resources.MemoryMax < 0 || c.Resources.CPUMillis < 0 || c.Resources.PidsMax < 0 {
		return bad("negative resource limit")
	}
	if err := c.Resources.validate(); err != nil {
		return err
	}
	if h := c.hostname(); len(h) > maxHostname {
		return bad("hostname %q is %d bytes: the kernel takes %d bytes at most", h, len(h), maxHostname)
	}
	cg := c.cgroupPath()
	if filepath.IsAbs(cg) || !strings.HasPrefix(cg, CgroupParent+"/") || strings.Contains(cg, "..") {
		if c.Cgroup == "" {
			return bad("hostname %q makes the cgroup %q, which is not under %s/: set cgroup, or a hostname that names one", c.Hostname, cg, CgroupParent)
		}
		return bad("cgroup %q is not under %s/", c.Cgroup, CgroupParent)
	}
	return nil
}

func hasPreset(c *Config, name string) bool {
	for _, p := range c.Landlock.Presets {
		if p == name {
			return true
		}
	}
	return false
}
