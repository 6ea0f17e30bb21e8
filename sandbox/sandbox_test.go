package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"

	"github.com/narun/narun/embednats/natstest"
)

const nobody = 65534

var (
	// base holds the helper binary and every instance dir; unlike
	// t.TempDir it is traversable by the unprivileged app user.
	base   string
	helper string
	hello  string // the project's testdata/apps/hello fixture
)

func TestMain(m *testing.M) {
	// The sandbox re-execs /proc/self/exe as the launcher, so the test
	// binary must be one.
	if len(os.Args) > 1 && os.Args[1] == "launcher" {
		LauncherMain()
	}
	if len(os.Args) > 1 && os.Args[1] == ExecApplet {
		if os.Getenv(execOffMainEnv) != "" {
			// Locked to the first thread, main keeps it from the
			// goroutine below.
			runtime.LockOSThread()
			go func() {
				runtime.LockOSThread()
				ExecAppMain(os.Args[2:])
			}()
			select {}
		}
		ExecAppMain(os.Args[2:])
	}
	if len(os.Args) > 3 && os.Args[1] == "host-etc" {
		hostEtcMain(os.Args[2], os.Args[3])
	}
	if len(os.Args) > 3 && os.Args[1] == "scratch-cgroups" {
		scratchCgroupsMain(os.Args[2], os.Args[3])
	}
	var err error
	base, err = os.MkdirTemp("", "narun-sandbox-")
	if err == nil {
		err = os.Chmod(base, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "create test dir:", err)
		os.Exit(1)
	}
	helper = filepath.Join(base, "bin", "escape")
	hello = filepath.Join(base, "bin", "hello")
	for bin, pkg := range map[string]string{helper: "./testdata/escape", hello: "../testdata/apps/hello"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	_ = os.Chmod(filepath.Dir(helper), 0o755)
	code := m.Run()
	os.RemoveAll(base)
	os.Exit(code)
}

// execOffMainEnv has this test binary run ExecApplet from a thread other
// than its first, where Go's scheduler may move the main goroutine.
const execOffMainEnv = "NARUN_TEST_EXEC_OFF_MAIN"

// init reports the parent-death signal of a process run as "pdeathsig":
// the kernel keeps it per thread, and init runs on the thread the process
// began with.
func init() {
	if len(os.Args) < 2 || os.Args[1] != "pdeathsig" {
		return
	}
	var sig int32
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&sig)), 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "read the parent-death signal:", err)
		os.Exit(1)
	}
	fmt.Println(sig)
	os.Exit(0)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root to create namespaces and cgroups")
	}
}

func requireLandlock(t testing.TB, abi int) {
	t.Helper()
	if got := landlockABI(); got < abi {
		t.Skipf("kernel lacks Landlock ABI %d (has %d)", abi, got)
	}
}

// asEachUser runs test as the unprivileged user of testConfig in the
// subtest name and, when alsoRoot, as uid 0 in name-as-root: what confines
// an app must hold for both, and as root Landlock alone stands in the way.
func asEachUser(t *testing.T, name string, alsoRoot bool, test func(t *testing.T, root bool)) {
	t.Helper()
	t.Run(name, func(t *testing.T) { test(t, false) })
	if alsoRoot {
		t.Run(name+"-as-root", func(t *testing.T) { test(t, true) })
	}
}

// asRoot makes cfg run its app as uid and gid 0.
func asRoot(cfg *Config) { cfg.UID, cfg.GID, cfg.AllowRoot = 0, 0, true }

// testConfig is a sandbox for the helper in mode args, as nobody, in a
// fresh instance dir named after the test.
func testConfig(t testing.TB, args ...string) Config {
	t.Helper()
	name := strings.NewReplacer("/", "-", "_", "-", "#", "-").Replace(strings.ToLower(t.Name()))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return Config{
		Binary:   helper,
		Args:     append([]string{"escape"}, args...),
		Env:      []string{"PATH=/usr/bin:/bin", "APP_SECRET=s3cret"},
		Dir:      dir,
		Hostname: name,
		UID:      nobody,
		GID:      nobody,
		Landlock: LandlockConfig{Presets: []string{PresetStdio, PresetProcSelf}},
	}
}

// sandboxed is a started sandbox whose output is collected line by line.
type sandboxed struct {
	*Launch
	lines chan string
	mu    sync.Mutex
	out   strings.Builder
	stdin io.WriteCloser
	done  chan struct{}
}

func startSandbox(t testing.TB, cfg Config) *sandboxed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Command(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("command: %v", err)
	}
	s := &sandboxed{Launch: l, lines: make(chan string, 100), done: make(chan struct{})}
	r, w := io.Pipe()
	l.Cmd.Stdout = w
	l.Cmd.Stderr = w
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	l.Cmd.Stdin = stdinR
	s.stdin = stdinW
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			s.mu.Lock()
			s.out.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			select {
			case s.lines <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		stdinW.Close()
		w.Close()
		if err := l.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := l.Start(); err != nil {
		stdinR.Close()
		w.Close()
		w.Close()
		<-s.done
		t.Fatalf("start: %v\n%s", err, s.out.String())
	}
	stdinR.Close()
	return s
}

// wait waits for the sandbox and the end of its output.
func (s *sandboxed) wait(t testing.TB) (string, error) {
	t.Helper()
	tm := time.AfterFunc(15*time.Second, func() {
		s.mu.Lock()
		fmt.Fprintf(os.Stderr, "STUCK %s output so far:\n%s", t.Name(), s.out.String())
		s.mu.Unlock()
	})
	defer tm.Stop()
	err := s.Wait()
	s.Cmd.Stdout.(*io.PipeWriter).Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String(), err
}

// waitLine blocks until the app prints want.
func (s *sandboxed) waitLine(t testing.TB, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-s.lines:
			if l == want {
				return
			}
		case <-timeout:
			s.mu.Lock()
			t.Fatalf("app never printed %q:\n%s", want, s.out.String())
		}
	}
}

func runSandbox(t testing.TB, cfg Config) (string, error) {
	t.Helper()
	return startSandbox(t, cfg).wait(t)
}

func exitCode(err error) int {
	var xe *ExitError
	if errors.As(err, &xe) {
		return xe.Code
	}
	if err == nil {
		return 0
	}
	return -2
}

func TestEscapeCatalogue(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 4)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostPort := ln.Addr().String()
	outside := filepath.Join(base, "outside.txt")
	// Root's own file: as uid 0 only Landlock or the mount stands
	// between the app and chmod, and Landlock does not handle chmod.
	rootsFile := filepath.Join(base, "roots-file")
	if err := os.WriteFile(rootsFile, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	notAllowed := "/usr/bin/true"
	if _, err := os.Stat(notAllowed); err != nil {
		notAllowed = "/bin/sh"
	}
	// Unix sockets of the host that file permissions leave open to
	// anyone, or to root: only Landlock stands in the way.
	sockDir := filepath.Join(base, "host-sockets")
	if err := os.MkdirAll(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pathSock := filepath.Join(sockDir, "open.sock")
	abstractSock := fmt.Sprintf("@narun-test-%d", os.Getpid())
	for _, addr := range []string{pathSock, abstractSock} {
		ul, err := net.Listen("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ul.Close()
	}
	if err := os.Chmod(pathSock, 0o777); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		network string
		asRoot  bool // also meaningful as uid 0 without capabilities
		abi     int  // the Landlock ABI that blocks it, when above 4
	}{
		{"read-shadow", []string{"read", "/etc/shadow"}, "", true, 0},
		// The descriptions of the keys uid 0 may view: the host's root
		// keyrings (the seccomp filter refuses their contents).
		{"list-host-keys", []string{"readsome", "/proc/keys"}, "", true, 0},
		{"write-outside", []string{"write", outside}, "", true, 0},
		{"write-etc", []string{"write", "/etc/narun-escaped"}, "", true, 0},
		{"write-tmp-without-preset", []string{"write", "/tmp/narun-escaped"}, "", true, 0},
		{"exec-not-allowed", []string{"exec", notAllowed}, "", true, 0},
		{"kill-host-process", []string{"kill0", strconv.Itoa(os.Getpid())}, "", true, 0},
		{"raw-socket", []string{"rawsock"}, "", true, 0},
		{"mount", []string{"mount", "/mnt"}, "", true, 0},
		{"chmod-outside", []string{"chmod", rootsFile}, "", true, 0},
		{"user-namespace", []string{"userns"}, "", true, 0},
		{"become-root", []string{"setuid"}, "", false, 0},
		{"connect-other-port", []string{"connect", hostPort}, NetworkNone, true, 0},
		{"connect-closed-port", []string{"connect", "127.0.0.1:1"}, NetworkNone, true, 0},
		{"connect-abstract-unix-socket", []string{"unixconnect", abstractSock}, "", true, 6},
		{"connect-pathname-unix-socket", []string{"unixconnect", pathSock}, NetworkNone, true, 9},
		{"read-shadow-through-opath", []string{"opath-read", "/etc/shadow"}, "", true, 0},
		{"link-host-file-into-data", []string{"link", rootsFile, "data/linked"}, "", true, 0},
		{"raise-own-pids-limit", []string{"cgroup-limit", "pids.max"}, "", true, 0},
	}
	for _, tc := range tests {
		asEachUser(t, tc.name, tc.asRoot, func(t *testing.T, root bool) {
			requireLandlock(t, tc.abi)
			cfg := testConfig(t, tc.args...)
			cfg.Network = tc.network
			if cfg.Network == NetworkNone {
				cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
				serveBridge(t, cfg, "127.0.0.1:1")
			}
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("escape not blocked: %v\n%s", err, out)
			}
			t.Log(strings.TrimSpace(out))
		})
	}
	if _, err := os.Stat(outside); err == nil {
		t.Errorf("%s was written", outside)
	}
	if fi, err := os.Stat(rootsFile); err != nil || fi.Mode() != 0o600 {
		t.Errorf("%s: mode %v (%v), want it left at 0600", rootsFile, fi.Mode(), err)
	}
}

// Landlock's execute rights cover files of the filesystem, not anonymous
// ones: an app could write code it fetched into a memfd and run it, through
// /proc/self/fd or execveat, past the allow-list. The sandbox's PID
// namespace gets vm.memfd_noexec = 1 and the seccomp filter refuses
// MFD_EXEC, so a memfd is never executable; one made without the new
// flags, as for shared memory, still works. The host's own setting stays
// as it was.
func TestMemfdExecRefused(t *testing.T) {
	requireRoot(t)
	const sysctl = "/proc/sys/vm/memfd_noexec"
	host, err := os.ReadFile(sysctl)
	if err != nil {
		t.Skipf("kernel before 6.3, without %s (docs/SECURITY.md, Known limits): %v", sysctl, err)
	}
	tests := []struct {
		name    string
		arg     string
		refused bool
	}{
		{"proc-fd", "default,proc", true},
		{"execveat", "default,execveat", true},
		{"mfd-exec", "exec,proc", true},
	}
	for _, tc := range tests {
		asEachUser(t, tc.name, true, func(t *testing.T, root bool) {
			cfg := testConfig(t, "memfdexec", tc.arg)
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("ran code from an anonymous file: %v\n%s", err, out)
			}
			t.Log(strings.TrimSpace(out))
		})
	}
	t.Run("memfd-still-works", func(t *testing.T) {
		out, err := runSandbox(t, testConfig(t, "memfd"))
		if err != nil || !strings.Contains(out, "ESCAPED") {
			t.Fatalf("memfd_create refused: %v\n%s", err, out)
		}
	})
	if after, err := os.ReadFile(sysctl); err != nil || string(after) != string(host) {
		t.Errorf("the host's %s changed: %q, was %q (%v)", sysctl, after, host, err)
	}
}

// memfdParentEnv marks the run of the test binary that
// TestSandboxUnderStricterMemfdParent starts in a PID namespace of its own.
const memfdParentEnv = "NARUN_TEST_MEMFD_PARENT"

// A sandbox starts under a parent PID namespace whose vm.memfd_noexec is
// stricter than the sandbox's own level (a hardened host's 2): a child
// namespace may not lower it, and the launcher keeps it instead of
// failing. The test binary runs again as PID 1 of a new namespace, whose
// setting it raises to 2, so that the host's is left alone.
func TestSandboxUnderStricterMemfdParent(t *testing.T) {
	requireRoot(t)
	const sysctl = "/proc/sys/vm/memfd_noexec"
	if _, err := os.Stat(sysctl); err != nil {
		t.Skipf("kernel before 6.3, without %s (docs/SECURITY.md, Known limits): %v", sysctl, err)
	}
	if os.Getenv(memfdParentEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxUnderStricterMemfdParent$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), memfdParentEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestSandboxUnderStricterMemfdParent") {
			t.Fatalf("in a PID namespace with vm.memfd_noexec = 2: %v\n%s", err, out)
		}
		return
	}
	if err := os.WriteFile(sysctl, []byte("2"), 0); err != nil {
		t.Fatalf("raise %s in this PID namespace: %v", sysctl, err)
	}
	out, err := runSandbox(t, testConfig(t, "memfd"))
	if err != nil || !strings.Contains(out, "ESCAPED") {
		t.Fatalf("sandbox under a parent with vm.memfd_noexec = 2: %v\n%s", err, out)
	}
	out, err = runSandbox(t, testConfig(t, "memfdexec", "exec,proc"))
	if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
		t.Fatalf("ran code from an anonymous file made with MFD_EXEC: %v\n%s", err, out)
	}
}

// TestCatalogueControl shows the escape helper does succeed where the
// sandbox allows it, so the catalogue's blocks are not the helper's bugs.
func TestCatalogueControl(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		args  []string
		paths []Path
	}{
		{"read-allowed-file", []string{"read", "/etc/hostname"}, []Path{{Path: "/etc/hostname", Access: "r"}}},
		{"write-data", []string{"write", "DATA/f"}, nil},
		{"exec-allowed", []string{"exec", "/usr/bin/true"}, []Path{{Path: "/usr/bin/true", Access: "rx"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			args := append([]string(nil), tc.args...)
			args[1] = strings.Replace(args[1], "DATA", filepath.Join(cfg.Dir, "data"), 1)
			cfg.Args = append([]string{"escape"}, args...)
			cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs)
			cfg.Landlock.Paths = tc.paths
			for _, p := range tc.paths {
				if _, err := os.Stat(p.Path); err != nil {
					t.Skipf("%s missing on this machine", p.Path)
				}
			}
			out, err := runSandbox(t, cfg)
			if err != nil || !strings.Contains(out, "ESCAPED") {
				t.Fatalf("allowed access failed: %v\n%s", err, out)
			}
		})
	}
}

// Every sandbox gets a seccomp filter, as Docker's default profile: no
// io_uring and no kernel keyrings, which no namespace confines. A network
// namespace confines only the socket families the kernel keeps per
// namespace: an AF_VSOCK socket made inside one still reaches the
// hypervisor and, with vsock's loopback transport, the machine's own vsock
// listeners. Without host networking the app opens only namespaced
// families (io_uring's IORING_OP_SOCKET would open the others past the
// filter); with host networking any.
func TestSystemCallFilter(t *testing.T) {
	requireRoot(t)
	if sandboxFilter(runtime.GOARCH, true) == nil {
		t.Skipf("no seccomp filter on %s (docs/SECURITY.md, Known limits)", runtime.GOARCH)
	}
	// What the host itself allows: a kernel without vsock, or with
	// io_uring turned off, refuses them before the sandbox does.
	vsock := true
	if fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0); err != nil {
		vsock = false
	} else {
		unix.Close(fd)
	}
	var params [120]byte
	iouring := true
	if fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0); errno != 0 {
		iouring = false
	} else {
		unix.Close(int(fd))
	}
	_, err := unix.AddKey("user", "narun-probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	keyrings := err == nil
	userfaultfd := true
	if fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|1, 0, 0); errno != 0 {
		userfaultfd = false
	} else {
		unix.Close(int(fd))
	}
	// Where the host refuses bpf to every uid without a capability, the
	// app is refused before the filter: nothing to test.
	setting, _ := os.ReadFile("/proc/sys/kernel/unprivileged_bpf_disabled")
	unprivilegedBPF := strings.TrimSpace(string(setting)) == "0"
	setting, _ = os.ReadFile("/proc/sys/kernel/dmesg_restrict")
	dmesg := strings.TrimSpace(string(setting)) == "0"
	// A kernel without the 32-bit x86 entry (or another machine) refuses
	// int 0x80 itself.
	int80 := exec.Command(helper, "int80").Run() == nil
	fanotify := true
	if fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_FID, unix.O_RDONLY); err != nil {
		fanotify = false
	} else {
		unix.Close(fd)
	}
	tests := []struct {
		name    string
		args    []string
		network string
		refused string // the error the app gets; "" = allowed
		needs   bool   // the host allows it
	}{
		{"vsock-none", []string{"socket", "vsock"}, NetworkNone, "address family not supported", vsock},
		{"vsock-isolated", []string{"socket", "vsock"}, NetworkIsolated, "address family not supported", vsock},
		{"io-uring-none", []string{"iouring"}, NetworkNone, "operation not permitted", iouring},
		{"inet-none", []string{"socket", "inet"}, NetworkNone, "", true},
		{"unix-none", []string{"socket", "unix"}, NetworkNone, "", true},
		{"netlink-none", []string{"socket", "netlink"}, NetworkNone, "", true},
		{"uevent-none", []string{"socket", "uevent"}, NetworkNone, "protocol not supported", true},
		{"uevent-isolated", []string{"socket", "uevent"}, NetworkIsolated, "protocol not supported", true},
		{"uevent-host", []string{"socket", "uevent"}, NetworkHost, "", true},
		{"vsock-host", []string{"socket", "vsock"}, NetworkHost, "", vsock},
		{"io-uring-host", []string{"iouring"}, NetworkHost, "operation not permitted", iouring},
		{"keyring-none", []string{"addkey"}, NetworkNone, "operation not permitted", keyrings},
		{"keyring-host", []string{"addkey"}, NetworkHost, "operation not permitted", keyrings},
		{"userfaultfd-none", []string{"userfaultfd"}, NetworkNone, "operation not permitted", userfaultfd},
		{"userfaultfd-host", []string{"userfaultfd"}, NetworkHost, "operation not permitted", userfaultfd},
		{"fanotify-none", []string{"fanotify", "/etc"}, NetworkNone, "operation not permitted", fanotify},
		{"fanotify-host", []string{"fanotify", "/etc"}, NetworkHost, "operation not permitted", fanotify},
		{"bpf-none", []string{"bpf"}, NetworkNone, "operation not permitted", unprivilegedBPF},
		{"bpf-host", []string{"bpf"}, NetworkHost, "operation not permitted", unprivilegedBPF},
		{"dmesg-none", []string{"dmesg"}, NetworkNone, "operation not permitted", dmesg},
		{"dmesg-host", []string{"dmesg"}, NetworkHost, "operation not permitted", dmesg},
		{"int80-host", []string{"int80"}, NetworkHost, "function not implemented", int80},
	}
	for _, tc := range tests {
		asEachUser(t, tc.name, true, func(t *testing.T, root bool) {
			if !tc.needs {
				t.Skipf("the host itself refuses %s", tc.args)
			}
			cfg := testConfig(t, tc.args...)
			cfg.Network = tc.network
			if cfg.Network != NetworkHost {
				cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
				serveBridge(t, cfg, "127.0.0.1:1")
			}
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			switch {
			case tc.refused == "" && (err != nil || !strings.Contains(out, "ESCAPED")):
				t.Fatalf("refused, want allowed: %v\n%s", err, out)
			case tc.refused != "" && (exitCode(err) != 10 || !strings.Contains(out, tc.refused)):
				t.Fatalf("want refused with %q: %v\n%s", tc.refused, err, out)
			}
		})
	}
}

// A path granted below one the app may write is the app's to replace, or
// a directory on its way: with a symbolic link to anywhere, which the next
// start (a restart, or another replica's start while this one runs) would
// follow and grant, as runc once followed a volume nested in another
// (CVE-2021-30465). The sandbox refuses to start through such a link.
func TestGrantReplacedByALinkIsNotFollowed(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	tests := []struct {
		name   string
		nested string // granted below "granted", which the app may write
		access string
		swap   string // what the app replaces with a link
		try    []string
	}{
		// A grant read-only is no mount point: the link takes its place.
		{"read", "config", "r", "config", []string{"read", "config/secret"}},
		// One granted "w" is (its own bind), but not the directory above it.
		{"write", "a/b", "rw", "a", []string{"write", "a/b/pwned"}},
	}
	for _, tc := range tests {
		asEachUser(t, tc.name, true, func(t *testing.T, root bool) {
			cfg := testConfig(t)
			if root {
				asRoot(&cfg)
			}
			granted := filepath.Join(cfg.Dir, "granted")
			// Outside every grant, but the app's uid's: only Landlock
			// keeps the app out.
			victim := filepath.Join(cfg.Dir, "victim")
			// A run before this one (-count) left its link planted.
			for _, d := range []string{granted, victim} {
				if err := os.RemoveAll(d); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []string{filepath.Join(granted, tc.nested), filepath.Join(victim, "b")} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(victim, "secret"), []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{granted, filepath.Join(granted, tc.nested), filepath.Dir(filepath.Join(granted, tc.nested)), victim, filepath.Join(victim, "b"), filepath.Join(victim, "secret")} {
				if err := os.Chown(d, int(cfg.UID), int(cfg.GID)); err != nil {
					t.Fatal(err)
				}
			}
			cfg.Landlock.Paths = []Path{{Path: granted, Access: "rw"}, {Path: filepath.Join(granted, tc.nested), Access: tc.access}}
			plant := cfg
			plant.Args = []string{"escape", "symlink", filepath.Join(granted, tc.swap), victim}
			if out, err := runSandbox(t, plant); err != nil || !strings.Contains(out, "ESCAPED") {
				t.Fatalf("the app could not replace what it may write: %v\n%s", err, out)
			}
			again := cfg
			again.Args = []string{"escape", tc.try[0], filepath.Join(granted, tc.try[1])}
			l, err := Command(context.Background(), again)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			l.Cmd.Stdout, l.Cmd.Stderr = &out, &out
			err = l.Start()
			if err == nil {
				err = l.Wait()
			}
			l.Cleanup()
			if strings.Contains(out.String(), "ESCAPED") {
				t.Fatalf("the app reached outside its grants through the link it planted: %v\n%s", err, out.String())
			}
			if reason := Reason(err); !strings.Contains(reason, "symbolic link") {
				t.Errorf("start through the planted link: %q, want refused naming the link\n%s", reason, out.String())
			}
		})
	}
}

// Kernel keyrings are not namespaced, and a process keeps the session
// keyring of the one that started it: the runner's, and through it that of
// the shell or service manager that started the runner. An app possessing
// it could read every key there (possessors may, whatever their uid), put
// keys of its own there for the host's processes to find, or pass them to
// another app. As runc does for containers, each sandbox gets a session
// keyring of its own.
func TestSessionKeyringNotInherited(t *testing.T) {
	requireRoot(t)
	// The session keyring is a thread's: the one that starts the launcher.
	// Left locked, the thread ends with the test, its new keyring with it.
	runtime.LockOSThread()
	if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
		t.Skipf("no kernel keyrings: %v", errno)
	}
	desc := fmt.Sprintf("narun-test-%d", os.Getpid())
	if _, err := unix.AddKey("user", desc, []byte("runner's secret"), unix.KEY_SPEC_SESSION_KEYRING); err != nil {
		t.Fatalf("add a key to the runner's session keyring: %v", err)
	}
	for _, root := range []bool{false, true} {
		cfg := testConfig(t, "keyring", desc)
		if root {
			asRoot(&cfg)
		}
		out, err := runSandbox(t, cfg)
		if exitCode(err) != 10 || strings.Contains(out, "secret") {
			t.Errorf("root %v: the app found the runner's key: %v\n%s", root, err, out)
		}
		t.Log(strings.TrimSpace(out))
	}
}

// The host's mounts are read-only inside the sandbox but for what the app
// may write, since Landlock leaves chmod to file permissions (see
// TestEscapeCatalogue/chmod-outside-as-root). What is granted stays
// writable, mounts below a granted directory included, unless they were
// read-only on the host.
func TestWritableOnlyWhereGranted(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	granted := filepath.Join(cfg.Dir, "granted")
	for _, d := range []string{"sub", "ro"} {
		if err := os.MkdirAll(filepath.Join(granted, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for d, flags := range map[string]uintptr{"sub": 0, "ro": unix.MS_RDONLY} {
		p := filepath.Join(granted, d)
		if err := unix.Mount("tmpfs", p, "tmpfs", flags, "mode=0755"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
	}
	// Granted through a symbolic link: the mounts below are found all the same.
	link := filepath.Join(cfg.Dir, "granted-link")
	if err := os.Symlink(granted, link); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	data := filepath.Join(cfg.Dir, "data")
	tests := []struct {
		args    []string
		escaped bool
	}{
		{[]string{"write", filepath.Join(data, "f")}, true},
		{[]string{"chmod", filepath.Join(data, "f")}, true},
		{[]string{"write", filepath.Join(granted, "f")}, true},
		{[]string{"write", filepath.Join(granted, "sub", "f")}, true},
		{[]string{"write", "/dev/null"}, true},
		{[]string{"write", filepath.Join(granted, "ro", "f")}, false},
		{[]string{"chmod", helper}, false},
		{[]string{"chmod", cfg.Dir}, false},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := cfg
			c.Args = append([]string{"escape"}, tc.args...)
			asRoot(&c)
			c.Landlock.Paths = []Path{{Path: link, Access: "rw"}}
			out, err := runSandbox(t, c)
			if escaped := err == nil && strings.Contains(out, "ESCAPED"); escaped != tc.escaped {
				t.Fatalf("succeeded: %v, want %v (%v)\n%s", escaped, tc.escaped, err, out)
			}
		})
	}
	if fi, err := os.Stat(helper); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: mode %v (%v), want it left at 0755", helper, fi.Mode(), err)
	}
}

// An app's /dev/shm is a tmpfs of its own, as a container's is: POSIX
// shared memory and semaphores (sem_open, Python's multiprocessing) need
// it writable, and the host's is shared by every user of the host.
func TestPrivateDevShm(t *testing.T) {
	requireRoot(t)
	asEachUser(t, "write", true, func(t *testing.T, root bool) {
		name := "/dev/shm/narun-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatBool(root)
		t.Cleanup(func() { os.Remove(name) })
		cfg := testConfig(t, "write", name)
		if root {
			asRoot(&cfg)
		}
		out, err := runSandbox(t, cfg)
		if err != nil || !strings.Contains(out, "ESCAPED") {
			t.Fatalf("writing to /dev/shm: %v\n%s", err, out)
		}
		if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the app wrote %s in the host's /dev/shm (stat: %v)", name, err)
		}
	})
	// Granted, the host's /dev/shm is shared, as an operator asks for
	// shared memory with a host process.
	t.Run("granted", func(t *testing.T) {
		name := "/dev/shm/narun-test-" + strconv.Itoa(os.Getpid()) + "-granted"
		t.Cleanup(func() { os.Remove(name) })
		cfg := testConfig(t, "write", name)
		cfg.Landlock.Paths = []Path{{Path: "/dev/shm", Access: "rw"}}
		out, err := runSandbox(t, cfg)
		if err != nil || !strings.Contains(out, "ESCAPED") {
			t.Fatalf("writing to /dev/shm: %v\n%s", err, out)
		}
		if _, err := os.Stat(name); err != nil {
			t.Errorf("the granted host /dev/shm was not the app's: %v", err)
		}
	})
}

// A writable mount on the host's /tmp lies under the instance's own /tmp
// (tmp preset), out of the app's reach: it used to fail the start, so any
// program, or another sandbox's test, keeping a mount there stopped every
// sandboxed app with the preset.
func TestHostMountUnderTmpCovered(t *testing.T) {
	requireRoot(t)
	host, err := os.MkdirTemp("/tmp", "narun-host-mount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(host) })
	if err := unix.Mount("tmpfs", host, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(host, unix.MNT_DETACH) })
	cfg := testConfig(t, "write", "/tmp/written")
	// The instance's directory and binary cannot be on the /tmp it covers.
	if cfg.Dir, err = os.MkdirTemp("/var/tmp", "narun-sandbox-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cfg.Dir) })
	if err := os.Chmod(cfg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(helper)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Binary = filepath.Join(cfg.Dir, "escape")
	if err := os.WriteFile(cfg.Binary, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	asRoot(&cfg)
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetTmp)
	out, err := runSandbox(t, cfg)
	if err != nil || !strings.Contains(out, "ESCAPED") {
		t.Fatalf("writing to its /tmp: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "tmp", "written")); err != nil {
		t.Errorf("the app's /tmp is not the instance's tmp/: %v", err)
	}
}

// A binary run through a symbolic link is named after the link (comm,
// what ps, top and pgrep show; argv[0]), as the runner's links to its
// binary cache rely on, and Landlock checks the file it resolves to: no
// rule covers the link's directory, which stays read-only even to root.
func TestBinaryThroughSymlink(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	const name = "named-through-a-link"
	cfg := testConfig(t, "hold", "0")
	dir := filepath.Join(filepath.Dir(cfg.Dir), "links-"+cfg.Hostname)
	link := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(helper, link); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.Binary, cfg.Args = link, []string{link, "hold", "0"}
	s := startSandbox(t, cfg)
	s.waitLine(t, "ready")
	procs := readProcs(t, s.plan)
	if len(procs) != 1 {
		t.Fatalf("want the app alone in its cgroup, got %v", procs)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", procs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != name[:15] {
		t.Errorf("comm %q, want %q", got, name[:15])
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", procs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 != link {
		t.Errorf("argv[0] %q, want %q", argv0, link)
	}
	s.stdin.Close()
	if out, err := s.wait(t); err != nil {
		t.Fatalf("app through a link: %v\n%s", err, out)
	}

	write := cfg
	write.Args = []string{link, "write", filepath.Join(dir, "other")}
	asRoot(&write)
	if out, err := runSandbox(t, write); exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
		t.Errorf("root wrote beside its link: %v\n%s", err, out)
	}
}

// The sandbox's root is its tree bound onto a top directory (so that the
// app may not create user namespaces), and Landlock walks up through that
// directory: one granted must not be chosen, or its rule would cover every
// file. Here the first candidates are granted "r".
func TestAppRootMountsWhereNoRuleCovers(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	cfg := testConfig(t, "read", "/etc/shadow")
	asRoot(&cfg)
	for _, dir := range appRootCandidates[:2] {
		cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: dir, Access: "r"})
	}
	out, err := runSandbox(t, cfg)
	if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
		t.Fatalf("read /etc/shadow with %v granted: %v\n%s", cfg.Landlock.Paths, err, out)
	}
}

// A path granted below the directory the sandbox's tree is mounted on
// (/sys, unless granted itself) keeps its name: the launcher, chrooted
// too, resolves the rules in the same tree as the app.
func TestGrantBelowTheRootMountKeepsItsPath(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	const file = "/sys/kernel/uevent_seqnum"
	if _, err := os.Stat(file); err != nil {
		t.Skipf("%s: %v", file, err)
	}
	cfg := testConfig(t, "read", file)
	cfg.Landlock.Paths = []Path{{Path: file, Access: "r"}}
	out, err := runSandbox(t, cfg)
	if err != nil || !strings.Contains(out, "ESCAPED") {
		t.Fatalf("read granted %s: %v\n%s", file, err, out)
	}
}

func TestIdentityInsideSandbox(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		root bool
		// inheritable capabilities of the runner's thread that starts the
		// launcher: exec as uid 0 turns inheritable into permitted.
		inheritable uint32
	}{
		{false, 0},
		{true, 0},
		{false, 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_SYS_MODULE},
		{true, 1<<unix.CAP_SYS_ADMIN | 1<<unix.CAP_SYS_MODULE},
	} {
		t.Run(fmt.Sprintf("root=%v,inheritable=%#x", tc.root, tc.inheritable), func(t *testing.T) {
			cfg := testConfig(t, "info")
			if tc.root {
				asRoot(&cfg)
			}
			if tc.inheritable != 0 {
				raiseInheritable(t, tc.inheritable)
			}
			s := startSandbox(t, cfg)
			if got, want := s.LandlockABI(), min(landlockABI(), maxABI); got != want {
				t.Errorf("landlock abi %d, want %d", got, want)
			}
			out, err := s.wait(t)
			if err != nil {
				t.Fatalf("info: %v\n%s", err, out)
			}
			var info struct {
				Hostname string
				PID      int
				PPID     int
				UID, GID int
				Groups   []int
				Env      []string
				CapEff   uint64 `json:"cap_eff"`
				CapPrm   uint64 `json:"cap_prm"`
				CapInh   uint64 `json:"cap_inh"`
				Bounding []int
				NNP      int
				WD       string
				FDs      []string
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatalf("decode %q: %v", out, err)
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"hostname", info.Hostname, cfg.Hostname},
				{"parent is the launcher, PID 1", info.PPID, 1},
				{"uid", info.UID, int(cfg.UID)},
				{"gid", info.GID, int(cfg.GID)},
				{"groups", len(info.Groups), 0},
				{"env", strings.Join(info.Env, " "), strings.Join(cfg.Env, " ")},
				{"effective caps", info.CapEff, uint64(0)},
				{"permitted caps", info.CapPrm, uint64(0)},
				{"inheritable caps", info.CapInh, uint64(0)},
				{"bounding set", len(info.Bounding), 0},
				{"no_new_privs", info.NNP, 1},
				{"working dir", info.WD, cfg.Dir},
				{"launcher pipes inherited", launcherPipes(info.FDs), ""},
			}
			for _, c := range checks {
				if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

// An app given no environment gets none, not the launcher's: that holds
// the descriptor numbers of the launcher's pipes.
func TestEmptyEnvironmentStaysEmpty(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "info")
	cfg.Env = nil
	out, err := runSandbox(t, cfg)
	if err != nil {
		t.Fatalf("info: %v\n%s", err, out)
	}
	var info struct{ Env []string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if len(info.Env) != 0 {
		t.Fatalf("app environment %q, want none", info.Env)
	}
}

func TestMemoryLimitKillsOnlyThatApp(t *testing.T) {
	requireRoot(t)
	other := startSandbox(t, testConfig(t, "sigterm"))
	other.waitLine(t, "ready")

	cfg := testConfig(t, "alloc", "256")
	cfg.Hostname += "-oom"
	cfg.Resources.MemoryMax = 32 << 20
	s := startSandbox(t, cfg)
	out, err := s.wait(t)
	var xe *ExitError
	if want := "oom: killed at its memory limit of 32MiB ([resources] memory)"; !errors.As(err, &xe) || !xe.OOM || Reason(err) != want {
		t.Fatalf("want an oom exit, got %v (reason %q)\n%s", err, Reason(err), out)
	}
	if st := s.Stats(); st.OOMKills < 1 {
		t.Errorf("cgroup counted %d oom kills", st.OOMKills)
	}

	if err := other.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if out, err := other.wait(t); err != nil || !strings.Contains(out, "got SIGTERM") {
		t.Fatalf("the neighbour was affected: %v\n%s", err, out)
	}
}

// A worker killed at the memory limit is not the app: the app's own end
// stays its reason, and the kill is told after it.
func TestChildOOMKeepsExitStatus(t *testing.T) {
	requireRoot(t)
	for _, code := range []string{"1", "0"} {
		t.Run("exit"+code, func(t *testing.T) {
			cfg := testConfig(t, "childoom", code)
			cfg.Resources.MemoryMax = 32 << 20
			out, err := runSandbox(t, cfg)
			want := "exit status " + code + "; a process of the instance was OOM-killed at its memory limit of 32MiB ([resources] memory)"
			var xe *ExitError
			if !errors.As(err, &xe) || xe.OOM || Reason(err) != want {
				t.Fatalf("want reason %q, got %v (reason %q)\n%s", want, err, Reason(err), out)
			}
		})
	}
}

func TestForkBombStoppedByPidsMax(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "forkbomb", "200")
	cfg.Resources.PidsMax = 32
	out, err := runSandbox(t, cfg)
	if exitCode(err) != 10 || !strings.Contains(out, "resource temporarily unavailable") {
		t.Fatalf("fork bomb not stopped by pids.max: %v\n%s", err, out)
	}
	// The app's logs alone said why; the reason does too.
	if want := "exit status 10; hit its pids limit of 32 ([resources] pids)"; Reason(err) != want {
		t.Errorf("reason %q, want %q", Reason(err), want)
	}
}

func TestSIGTERMReachesApp(t *testing.T) {
	requireRoot(t)
	s := startSandbox(t, testConfig(t, "sigterm"))
	s.waitLine(t, "ready")
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out, err := s.wait(t)
	if err != nil || !strings.Contains(out, "got SIGTERM") {
		t.Fatalf("graceful stop failed: %v\n%s", err, out)
	}
}

func TestAppIgnoringSignalsIsStillStopped(t *testing.T) {
	requireRoot(t)
	s := startSandbox(t, testConfig(t, "ignore"))
	s.waitLine(t, "ready")
	procs := readProcs(t, s.plan)
	if len(procs) != 1 {
		t.Fatalf("want the app alone in its cgroup, got %v", procs)
	}
	if procs[0] == s.Pid() {
		t.Fatalf("the launcher (%d) is in the app's cgroup", s.Pid())
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The supervisor's grace period runs out; SIGKILL ends the namespace.
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, err := s.wait(t)
	var xe *ExitError
	if !errors.As(err, &xe) || xe.Signal != syscall.SIGKILL {
		t.Fatalf("want the launcher killed, got %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", procs[0])); !os.IsNotExist(err) {
		t.Fatalf("app %d survived its launcher", procs[0])
	}
}

func TestNoZombieRemains(t *testing.T) {
	requireRoot(t)
	out, err := runSandbox(t, testConfig(t, "zombie"))
	if err != nil || !strings.Contains(out, "reaped") {
		t.Fatalf("orphan not reaped by the launcher: %v\n%s", err, out)
	}
}

func TestSetupErrorReason(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	cfg := testConfig(t, "hello")
	cfg.Landlock.Paths = []Path{{Path: "/nonexistent/narun", Access: "r"}}
	l, err := Command(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Cleanup() })
	err = l.Start()
	var se *SetupError
	if !errors.As(err, &se) {
		t.Fatalf("want a setup error, got %v", err)
	}
	if want := "landlock: path /nonexistent/narun: "; !strings.HasPrefix(Reason(err), want) {
		t.Fatalf("reason %q, want prefix %q", Reason(err), want)
	}
	if l.Cmd.ProcessState == nil || l.Cmd.ProcessState.ExitCode() != ExitSetupFailed {
		t.Fatalf("launcher state %v, want exit %d", l.Cmd.ProcessState, ExitSetupFailed)
	}
}

func TestInterpreter(t *testing.T) {
	if got := Interpreter(hello); got != "" {
		t.Errorf("static Go binary: interpreter %q, want none", got)
	}
	if got := Interpreter(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Errorf("missing file: interpreter %q, want none", got)
	}
	const dynamic = "/bin/sh"
	if _, err := os.Stat(dynamic); err != nil {
		t.Skipf("no %s to read", dynamic)
	}
	// /bin/sh is dynamically linked on the distributions CI and devices
	// run; its loader lives under /lib.
	if got := Interpreter(dynamic); !strings.HasPrefix(got, "/lib") {
		t.Errorf("%s: interpreter %q, want a loader under /lib", dynamic, got)
	}
}

// TestDynamicBinary runs a dynamically linked system binary: refused
// with a hint without the shared_libs preset, run with it.
func TestDynamicBinary(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	const bin = "/usr/bin/true"
	if Interpreter(bin) == "" {
		t.Skipf("%s is not a dynamically linked executable here", bin)
	}
	t.Run("without-shared-libs", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Binary, cfg.Args = bin, nil
		err := startErr(t, cfg)
		if r := Reason(err); !strings.HasPrefix(r, "exec: ") || !strings.Contains(r, "add the shared_libs preset") {
			t.Fatalf("reason %q", r)
		}
	})
	t.Run("with-shared-libs", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Binary, cfg.Args = bin, nil
		cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs)
		if out, err := runSandbox(t, cfg); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

func TestOptionalPathMayBeMissing(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "hello")
	cfg.Landlock.Paths = []Path{{Path: "/nonexistent/narun", Access: "r", Optional: true}}
	if out, err := runSandbox(t, cfg); err != nil || out != "hello\n" {
		t.Fatalf("got %v\n%s", err, out)
	}
}

func TestNetworkNoneBridges(t *testing.T) {
	requireRoot(t)
	t.Run("nats-outbound", func(t *testing.T) {
		srv := natstest.Start(t)
		cfg := testConfig(t, "natsinfo", "127.0.0.1:4222")
		cfg.Network = NetworkNone
		cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
		serveBridge(t, cfg, srv.ClientURL())
		out, err := runSandbox(t, cfg)
		if err != nil || !strings.HasPrefix(out, "INFO {") {
			t.Fatalf("no NATS through the bridge: %v\n%s", err, out)
		}
	})
	t.Run("http-inbound", func(t *testing.T) {
		cfg := testConfig(t, "serve", "8080")
		cfg.Network = NetworkNone
		cfg.Inbound = []Bridge{HTTPBridge(cfg.Dir, 8080)}
		s := startSandbox(t, cfg)
		s.waitLine(t, "ready")
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", cfg.Inbound[0].Socket)
			},
		}}
		resp, err := client.Get("http://app/")
		if err != nil {
			t.Fatalf("get through the bridge: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hi from the sandbox" {
			t.Fatalf("body %q", body)
		}
		_ = s.Signal(syscall.SIGKILL)
		_, _ = s.wait(t)
	})
}

// An app with a network namespace of its own listens on its [http] port
// even below 1024, as in a container: the namespace's privileged ports
// guard nothing of the host's, and no key grants CAP_NET_BIND_SERVICE.
func TestOwnNetworkAppBindsPort80(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "serve", "80")
	cfg.Network = NetworkNone
	cfg.Inbound = []Bridge{HTTPBridge(cfg.Dir, 80)}
	host, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Skipf("no ip_unprivileged_port_start: %v", err)
	}
	s := startSandbox(t, cfg)
	s.waitLine(t, "ready")
	_ = s.Signal(syscall.SIGKILL)
	_, _ = s.wait(t)
	if after, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err != nil || string(after) != string(host) {
		t.Errorf("the host's ip_unprivileged_port_start is %q (%v), was %q", after, err, host)
	}
}

// An app without network cannot take every descriptor of the runner by
// opening connections through its NATS bridge: beyond OutboundConnLimit
// open ones, the bridge closes a new connection as soon as it accepts it.
// The runner's bridge socket is out of an app's reach, even as root
// (which file permissions let in) before Landlock ABI 9 (which would
// refuse it): the app could hand the runner listeners of its own.
func TestBridgeSocketHiddenFromApp(t *testing.T) {
	requireRoot(t)
	for _, root := range []bool{false, true} {
		t.Run(fmt.Sprintf("root=%v", root), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Args = []string{"escape", "unixconnect", NATSBridge(cfg.Dir).Socket}
			cfg.Network = NetworkNone
			cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
			serveBridge(t, cfg, "127.0.0.1:1")
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("connected to the runner's bridge socket: %v\n%s", err, out)
			}
			if _, err := os.Stat(NATSBridge(cfg.Dir).Socket); err != nil {
				t.Fatalf("the runner's side lost its socket: %v", err)
			}
		})
	}
}

func TestOutboundBridgeCapsConnections(t *testing.T) {
	requireRoot(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			_, _ = c.Write([]byte("hello\n"))
		}
	}()
	extra := 5
	cfg := testConfig(t, "conns", strconv.Itoa(OutboundConnLimit+extra), "127.0.0.1:4222")
	cfg.Network = NetworkNone
	cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
	serveBridge(t, cfg, target.Addr().String())
	out, err := runSandbox(t, cfg)
	want := fmt.Sprintf("served %d closed %d", OutboundConnLimit, extra)
	if err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("got %v %q, want %q", err, out, want)
	}
}

// TestHelloFixtureWithoutNetwork runs the project's hello fixture with
// network = "none", as a NATS Micro service through the NATS bridge and
// as a plain HTTP server through the inbound bridge.
func TestHelloFixtureWithoutNetwork(t *testing.T) {
	requireRoot(t)
	t.Run("nats", func(t *testing.T) {
		srv := natstest.Start(t)
		nc := natstest.Connect(t, srv)
		cfg := testConfig(t)
		cfg.Binary, cfg.Args = hello, []string{"hello"}
		cfg.Network = NetworkNone
		cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
		serveBridge(t, cfg, srv.ClientURL())
		s := startSandbox(t, cfg)
		var reply string
		waitFor(t, func() bool {
			msg, err := nc.Request("$SRV.PING.hello", nil, time.Second)
			if err == nil {
				reply = string(msg.Data)
			}
			return err == nil
		})
		if !strings.Contains(reply, `"name":"hello"`) {
			t.Fatalf("ping reply %s", reply)
		}
		if err := s.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if out, err := s.wait(t); err != nil {
			t.Fatalf("hello did not stop cleanly: %v\n%s", err, out)
		}
	})
	t.Run("http", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Binary, cfg.Args = hello, []string{"hello", "--http", "127.0.0.1:8080"}
		cfg.Network = NetworkNone
		cfg.Inbound = []Bridge{HTTPBridge(cfg.Dir, 8080)}
		s := startSandbox(t, cfg)
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", cfg.Inbound[0].Socket)
			},
		}}
		var body []byte
		waitFor(t, func() bool {
			resp, err := client.Post("http://app/hello/", "application/json", strings.NewReader(`{"name":"Sandbox"}`))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK
		})
		if !strings.Contains(string(body), "Hello, Sandbox") {
			t.Fatalf("body %s", body)
		}
		if err := s.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if out, err := s.wait(t); err != nil {
			t.Fatalf("hello did not stop cleanly: %v\n%s", err, out)
		}
	})
}

// TestHostNetworkTCPAllowList: with host networking and a ConnectTCP
// list, Landlock lets the app reach the listed port and nothing else.
func TestHostNetworkTCPAllowList(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 4)
	var ports []uint16
	for range 2 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	tests := []struct {
		port uint16
		want int
	}{{ports[0], 0}, {ports[1], 10}}
	for _, tc := range tests {
		t.Run(map[int]string{0: "listed", 10: "unlisted"}[tc.want], func(t *testing.T) {
			cfg := testConfig(t, "connect", fmt.Sprintf("127.0.0.1:%d", tc.port))
			cfg.Landlock.ConnectTCP = []uint16{ports[0]}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != tc.want {
				t.Fatalf("connect to %d: %v\n%s", tc.port, err, out)
			}
		})
	}
}

func TestStatsComeFromTheApp(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "hold", "64")
	cfg.Resources = Resources{MemoryMax: 256 << 20, CPUMillis: 500, PidsMax: 64}
	s := startSandbox(t, cfg)
	s.waitLine(t, "ready")
	st := s.Stats()
	if st.RSS < 64<<20 || st.MemoryCurrent < st.RSS {
		t.Errorf("rss %d, memory %d: want at least the app's 64 MiB", st.RSS, st.MemoryCurrent)
	}
	if st.Pids < 1 || st.CPU <= 0 {
		t.Errorf("pids %d, cpu %v", st.Pids, st.CPU)
	}
	if _, err := io.WriteString(s.stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	if out, err := s.wait(t); err != nil {
		t.Fatalf("app failed: %v\n%s", err, out)
	}
}

// TestCgroupV2Placement runs against a cgroup v2 hierarchy: the app is
// cloned into its cgroup and the launcher stays out. On hybrid machines
// the v2 hierarchy has no controllers, so only placement and CPU
// accounting are checked there.
func TestCgroupV2Placement(t *testing.T) {
	requireRoot(t)
	root := requireCgroupV2(t)
	cfg := testConfig(t, "hold", "1")
	cfg.CgroupRoot = root
	s := startSandbox(t, cfg)
	s.waitLine(t, "ready")
	procs := readProcs(t, s.plan)
	if len(procs) != 1 || procs[0] == s.Pid() {
		t.Fatalf("cgroup holds %v; want the app only (launcher %d)", procs, s.Pid())
	}
	io.WriteString(s.stdin, "\n")
	if out, err := s.wait(t); err != nil {
		t.Fatalf("app failed: %v\n%s", err, out)
	}
	if st := s.Stats(); st.CPU <= 0 {
		t.Errorf("cpu %v from cpu.stat", st.CPU)
	}
}

// requireCgroupV2 returns the mount point of a cgroup v2 hierarchy, with
// controllers or not.
func requireCgroupV2(t *testing.T) string {
	t.Helper()
	root := ""
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if syscall.Statfs(p, &st) == nil && st.Type == 0x63677270 {
			root = p
		}
	}
	if root == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	return root
}

// TestAppCannotLeaveItsCgroup: clone3 with CLONE_INTO_CGROUP starts a
// child in the cgroup v2 directory a descriptor names, and the kernel
// checks only that the caller may write cgroup.procs of the cgroup above
// both, which root owns: not Landlock (the descriptor may be O_PATH,
// which Landlock does not check) nor the read-only mount (the check is
// the inode's). An app running as root started children in the
// hierarchy's root, out of its memory, pids and CPU limits. On this
// hybrid VM the v2 hierarchy has no controllers, so the test checks the
// placement.
func TestAppCannotLeaveItsCgroup(t *testing.T) {
	requireRoot(t)
	root := requireCgroupV2(t)
	// The hierarchy's root, and the cgroup above the app's, reached
	// through the app's own directory.
	for _, tc := range []struct {
		name   string
		target func(cfg *Config) string
	}{
		{"root", func(*Config) string { return root }},
		{"parent", func(cfg *Config) string { return filepath.Join(root, cfg.cgroupPath()) + "/.." }},
	} {
		asEachUser(t, tc.name, true, func(t *testing.T, asroot bool) {
			cfg := testConfig(t)
			cfg.CgroupRoot = root
			target := tc.target(&cfg)
			cfg.Args = append(cfg.Args, "cgroup-escape", target)
			if asroot {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("the app started a child out of its cgroup: %v\n%s", err, out)
			}
		})
	}
	// Its own cgroup stays where /proc/self/cgroup says, for its limits,
	// with a grant of /sys too.
	for _, grant := range []string{"", "/sys"} {
		t.Run("own-readable"+strings.ReplaceAll(grant, "/", "-"), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.CgroupRoot = root
			if grant != "" {
				cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: grant, Access: "r"})
			}
			cfg.Args = append(cfg.Args, "readsome", filepath.Join(root, cfg.cgroupPath(), "cgroup.procs"))
			if out, err := runSandbox(t, cfg); err != nil {
				t.Fatalf("the app could not read its own cgroup: %v\n%s", err, out)
			}
		})
	}
	// A grant of the hierarchy, or of a directory holding it, shows it
	// covered all the same.
	for _, tc := range []struct{ name, grant string }{
		{"granted-hierarchy", root},
		{"granted-above", filepath.Dir(root)},
		{"granted-sys", "/sys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.CgroupRoot = root
			asRoot(&cfg)
			cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: tc.grant, Access: "r"})
			cfg.Args = append(cfg.Args, "cgroup-escape", root)
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("with %s granted, the app started a child out of its cgroup: %v\n%s", tc.grant, err, out)
			}
		})
	}
	// A grant the cover cannot hold is refused: one the app could write
	// the hierarchy through (its own limits too), or one of another
	// cgroup, which the cover hides.
	sibling, err := os.MkdirTemp(root, "narun-test-sibling-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(sibling); err != nil {
			t.Errorf("remove the test's cgroup: %v", err)
		}
	})
	for _, tc := range []struct{ name, grant, access, target string }{
		{"granted-hierarchy-writable", root, "rw", root},
		{"granted-above-writable", "/sys", "rw", root},
		{"granted-sibling", sibling, "r", sibling},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.CgroupRoot = root
			asRoot(&cfg)
			cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: tc.grant, Access: tc.access})
			cfg.Args = append(cfg.Args, "cgroup-escape", tc.target)
			reason := setupRefusal(t, cfg)
			if want := "path " + tc.grant + ": "; !strings.Contains(reason, want) || !strings.Contains(reason, "cgroup") {
				t.Fatalf("reason %q, want it to name %q and the cgroup hierarchy", reason, want)
			}
		})
	}
}

// TestWritableCgroupGrantRefused: a grant with "w" of a directory that
// holds a cgroup hierarchy, v1 or v2, makes it a writable mount, the
// app's own cgroup in it, where a root app raised its own limits.
func TestWritableCgroupGrantRefused(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "cgroup-limit", "pids.max")
	cfg.Resources.PidsMax = 64
	asRoot(&cfg)
	cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: "/sys", Access: "rw"})
	reason := setupRefusal(t, cfg)
	if want := "path /sys: "; !strings.Contains(reason, want) || !strings.Contains(reason, "cgroup") {
		t.Fatalf("reason %q, want it to name %q and the cgroup hierarchy", reason, want)
	}
}

// setupRefusal starts the sandbox of cfg and returns the reason its setup
// failed; it fails t if the app started.
func setupRefusal(t *testing.T, cfg Config) string {
	t.Helper()
	l, err := Command(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// One writer for both: exec.Cmd then writes to it from one goroutine.
	var out strings.Builder
	l.Cmd.Stdout, l.Cmd.Stderr = &out, &out
	err = l.Start()
	var se *SetupError
	if errors.As(err, &se) {
		return Reason(err)
	}
	if err == nil {
		err = l.Wait()
	}
	t.Fatalf("want a setup error, the app ran: %v\n%s", err, out.String())
	return ""
}

func TestCleanStale(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	// A scope of its own: cleaning all of CgroupParent would kill the
	// sandboxes of tests running in parallel, in this package or others.
	scope := "stale-" + cfg.Hostname
	cfg.Cgroup = CgroupParent + "/" + scope + "/orphan"
	plan, err := planCgroups(&cfg)
	if err != nil || plan == nil {
		t.Skipf("no cgroups: %v", err)
	}
	if err := plan.create(Resources{}); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command(helper, "sleep")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	for _, d := range plan.dirs() {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(orphan.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := CleanStaleUnder(scope); err != nil {
		t.Fatalf("clean stale: %v", err)
	}
	for _, d := range plan.dirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists", d)
		}
	}
	if err := orphan.Wait(); err == nil {
		t.Error("the orphan was not killed")
	}

	// A runner that stops removes its scope too.
	if err := RemoveScope(scope); err != nil {
		t.Fatalf("remove scope: %v", err)
	}
	for _, d := range plan.dirs() {
		if _, err := os.Stat(filepath.Dir(d)); !os.IsNotExist(err) {
			t.Errorf("scope %s still exists", filepath.Dir(d))
		}
	}
	if err := RemoveScope(""); err == nil {
		t.Error("an empty scope, all of CgroupParent, was accepted")
	}
}

func TestProbe(t *testing.T) {
	c := Probe()
	if c.LandlockABI != landlockABI() {
		t.Errorf("landlock abi %d, kernel says %d", c.LandlockABI, landlockABI())
	}
	if os.Geteuid() == 0 && !c.Sandbox {
		t.Errorf("root on linux but sandbox unavailable: %+v", c)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"landlock_abi"`, `"cgroup_version"`, `"namespaces"`, `"sandbox"`, `"user_namespaces"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("%s lacks %s", data, key)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Binary: "/bin/app", Dir: "/var/lib/narun/i1", Hostname: "i1", UID: 1000, GID: 1000}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // "" = valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"relative binary", func(c *Config) { c.Binary = "app" }, "binary"},
		{"relative dir", func(c *Config) { c.Dir = "i1" }, "dir"},
		{"bad network", func(c *Config) { c.Network = "bridge" }, "network"},
		{"root without consent", func(c *Config) { c.UID = 0 }, "uid 0"},
		{"root with consent", func(c *Config) { c.UID, c.AllowRoot = 0, true }, ""},
		{"root group without consent", func(c *Config) { c.GID = 0 }, "gid 0"},
		{"root group with consent", func(c *Config) { c.GID, c.AllowRoot = 0, true }, ""},
		{"uid (uid_t)-1", func(c *Config) { c.UID = 1<<32 - 1 }, "(uid_t)-1"},
		{"gid (uid_t)-1", func(c *Config) { c.GID = 1<<32 - 1 }, "(uid_t)-1"},
		{"highest uid and gid", func(c *Config) { c.UID, c.GID = 1<<32-2, 1<<32-2 }, ""},
		{"the launcher's uid", func(c *Config) { c.UID = LauncherUID }, "launcher's own"},
		{"bad landlock mode", func(c *Config) { c.Landlock.Mode = "maybe" }, "landlock mode"},
		{"unknown preset", func(c *Config) { c.Landlock.Presets = []string{"gpu"} }, "preset"},
		{"bad access", func(c *Config) { c.Landlock.Paths = []Path{{Path: "/x", Access: "rc"}} }, "access"},
		{"relative path", func(c *Config) { c.Landlock.Paths = []Path{{Path: "x", Access: "r"}} }, "not absolute"},
		{"relative hidden path", func(c *Config) { c.Hidden = []string{"narun.toml"} }, "hidden path \"narun.toml\" is not absolute"},
		{"hidden paths", func(c *Config) { c.Hidden = []string{"/etc/narun/narun.toml", "/etc/narun"} }, ""},
		{"cgroup escape", func(c *Config) { c.Cgroup = "narun/../system.slice" }, "cgroup"},
		{"cgroup outside parent", func(c *Config) { c.Cgroup = "other/x" }, "cgroup"},
		{"bridge without socket", func(c *Config) { c.Outbound = []Bridge{{Port: 4222}} }, "bridge"},
		{"dir under the tmp preset's /tmp", func(c *Config) { c.Dir, c.Landlock.Presets = "/tmp/i1", []string{PresetTmp} }, "tmp preset"},
		{"binary under the tmp preset's /tmp", func(c *Config) { c.Binary, c.Landlock.Presets = "/tmp/app", []string{PresetTmp} }, "tmp preset"},
		{"dir under /tmp without the preset", func(c *Config) { c.Dir = "/tmp/i1" }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.modify(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig)):
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
		})
	}
}

// raiseInheritable adds caps to the inheritable set of the test's thread
// for the rest of the test, as a runner started with inheritable
// capabilities would have them: the goroutine stays on this thread, so the
// launcher is forked from it, and the thread is discarded with it.
func raiseInheritable(t *testing.T, caps uint32) {
	t.Helper()
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	data[0].Inheritable |= caps
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatalf("raise inheritable capabilities: %v", err)
	}
}

// launcherPipes lists the descriptors above stderr that are pipes: the
// app must not hold the launcher's config or status pipe.
func launcherPipes(fds []string) string {
	var pipes []string
	for _, fd := range fds {
		n, target, _ := strings.Cut(fd, "=")
		if n != "0" && n != "1" && n != "2" && strings.HasPrefix(target, "pipe:") {
			pipes = append(pipes, fd)
		}
	}
	return strings.Join(pipes, ",")
}

func readProcs(t testing.TB, plan *cgroupPlan) []int {
	t.Helper()
	dir := plan.dir("pids")
	if dir == "" {
		dir = plan.dir("memory")
	}
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	return pids
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkFirstLine measures the time from start to the app's first
// output line, for a plain exec and for the sandbox (namespaces,
// cgroups with limits, Landlock, privilege drop).
func BenchmarkFirstLine(b *testing.B) {
	requireRoot(b)
	firstLine := func(b *testing.B, cmd *exec.Cmd, start func() error) time.Duration {
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		d := time.Since(t0)
		if err != nil || line != "hello\n" {
			b.Fatalf("first line %q: %v", line, err)
		}
		return d
	}
	b.Run("exec", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			cmd := exec.Command(helper, "hello")
			total += firstLine(b, cmd, cmd.Start)
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/first-line")
	})
	b.Run("sandbox", func(b *testing.B) {
		cfg := testConfig(b, "hello")
		cfg.Resources = Resources{MemoryMax: 64 << 20, CPUMillis: 500, PidsMax: 64}
		cfg.Landlock.Presets = []string{PresetStdio}
		var total time.Duration
		for b.Loop() {
			l, err := Command(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			total += firstLine(b, l.Cmd, l.Start)
			if err := l.Wait(); err != nil {
				b.Fatal(err)
			}
			if err := l.Cleanup(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/first-line")
	})
}

// serveBridge runs the runner's half of cfg's outbound bridge to target
// until the test ends.
func serveBridge(t *testing.T, cfg Config, target string) {
	t.Helper()
	br, err := ListenBridge(cfg.Outbound[0].Socket, target)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- br.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve bridge: %v", err)
		}
	})
}

// TestRootReachesHostUnixSocketsBeforeABI9 pins the limit docs/SECURITY.md
// states: before Landlock ABI 9 nothing but file permissions guards
// pathname unix sockets, so an app as uid 0 connects to root's own (a
// service manager's, a container engine's), while another uid does not.
func TestRootReachesHostUnixSocketsBeforeABI9(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	if abi := landlockABI(); abi >= 9 {
		t.Skipf("Landlock ABI %d confines pathname unix sockets (TestEscapeCatalogue/connect-pathname-unix-socket)", abi)
	}
	dir, err := os.MkdirTemp("", "narun-root-only-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "root.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, root := range []bool{false, true} {
		t.Run(fmt.Sprintf("root=%v", root), func(t *testing.T) {
			cfg := testConfig(t, "unixconnect", sock)
			cfg.Network = NetworkNone
			cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
			serveBridge(t, cfg, "127.0.0.1:1")
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if escaped := err == nil && strings.Contains(out, "ESCAPED"); escaped != root {
				t.Fatalf("connected to a root-only unix socket: %v, want %v (%v)\n%s", escaped, root, err, out)
			}
		})
	}
}

// On a kernel with Landlock ABI 9 the app may connect to the pathname unix
// sockets it did not create only under a path the config grants "w": one
// granted "r" or "rx", the instance's data/ and the presets (a private
// /tmp, /dev/null "rw") do not open them. The rules are checked here since
// this VM lacks ABI 9; TestEscapeCatalogue/connect-pathname-unix-socket and
// TestGrantedUnixSocketConnects check them for real where a kernel has it.
func TestLandlockRulesConfineUnixSocketsFromABI9(t *testing.T) {
	cfg := testConfig(t)
	cfg.Landlock.Presets = []string{PresetStdio, PresetTmp, PresetCerts, PresetDNS, PresetSharedLibs, PresetProcSelf}
	// Access to name: a directory, or a socket when it ends in .sock.
	grant := map[string]string{"w": "sockets", "rw": "w.sock", "r": "readable", "rx": "r.sock"}
	granted := map[string]bool{}
	for access, name := range grant {
		p := filepath.Join(cfg.Dir, name)
		if strings.HasSuffix(name, ".sock") {
			ul, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			defer ul.Close()
		} else if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: p, Access: access})
		granted[p] = strings.Contains(access, "w")
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	resolveUnix := landlock.AccessFSSet(ll.AccessFSResolveUnix)
	for abi, handled := range map[int]bool{7: false, 8: false, 9: true, 10: true} {
		c, rules, release, err := landlockRules(&cfg, abi, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		release()
		if got := c.HandledAccessFS&resolveUnix != 0; got != handled {
			t.Errorf("ABI %d: connecting to unix sockets handled: %v, want %v (%v)", abi, got, handled, c)
		}
		connects := map[string]bool{}
		for _, r := range rules {
			s := fmt.Sprint(r)
			if !strings.Contains(s, "resolve_unix") {
				continue
			}
			_, paths, _ := strings.Cut(s, " for paths ")
			p := strings.Trim(paths, "[]")
			if !granted[p] || !handled {
				t.Errorf("ABI %d: rule %v grants connecting to unix sockets", abi, r)
			}
			connects[p] = true
		}
		for p, w := range granted {
			if w && handled && !connects[p] {
				t.Errorf("ABI %d: %s granted with w, but the app may not connect to sockets there", abi, p)
			}
		}
	}
}

// TestGrantedUnixSocketConnects shows what a "w" grant is for: the app
// reaches a host socket under it, while "r" alone leaves it refused from
// Landlock ABI 9 (before, nothing but file permissions decides).
func TestGrantedUnixSocketConnects(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	dir := filepath.Join(base, "granted-sockets")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "app.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, access string
		connects     bool
	}{
		{sock, "rw", true},
		{dir, "w", true},
		{dir, "r", landlockABI() < 9},
	} {
		t.Run(filepath.Base(tc.path)+"-"+tc.access, func(t *testing.T) {
			cfg := testConfig(t, "unixconnect", sock)
			cfg.Landlock.Paths = []Path{{Path: tc.path, Access: tc.access}}
			out, err := runSandbox(t, cfg)
			if connected := err == nil && strings.Contains(out, "ESCAPED"); connected != tc.connects {
				t.Fatalf("connected: %v, want %v (%v)\n%s", connected, tc.connects, err, out)
			}
		})
	}
}

// On a fresh cgroup v2 host no narun/ exists yet: the root and every level
// down to the instance's parent must delegate the controllers, top-down,
// or the first instance's limits find no controller files. The tree is a
// plain directory standing in for cgroupfs, which offers only the root's
// controllers here.
func TestCgroupV2DelegatesOnAFreshHost(t *testing.T) {
	root := t.TempDir()
	for file, content := range map[string]string{"cgroup.controllers": "cpuset cpu io memory pids\n", "cgroup.subtree_control": ""} {
		if err := os.WriteFile(filepath.Join(root, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(t)
	cfg.CgroupRoot = root
	cfg.Cgroup = CgroupParent + "/r-abc/app.inst"
	plan, err := planCgroups(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := enableV2Controllers(plan.Root, plan.Dirs[""]); err != nil {
		t.Fatal(err)
	}
	for _, level := range []string{".", CgroupParent, CgroupParent + "/r-abc"} {
		got, err := os.ReadFile(filepath.Join(root, level, "cgroup.subtree_control"))
		if err != nil || string(got) != "+cpu +memory +pids" {
			t.Errorf("%s/cgroup.subtree_control = %q (%v), want +cpu +memory +pids", level, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(plan.Dirs[""], "cgroup.subtree_control")); err == nil {
		t.Error("the instance's own cgroup delegates controllers: it holds the app, so it must not")
	}
}

// An app finds its own limits where programs look for them: a JVM, .NET,
// Node.js (libuv) and Go itself read /proc/self/cgroup, then the limit
// files of the cgroup it names below /sys/fs/cgroup, and size their heaps
// and thread pools from them; without the limits they size them from the
// host's memory and cores. The script reads them as libuv does.
func TestAppReadsItsOwnCgroupLimits(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	cfg := testConfig(t)
	cfg.Binary = "/bin/sh"
	cfg.Args = []string{"sh", "-c", `while IFS=: read -r id ctls path; do
		case "$ctls" in
		*memory*) m=/sys/fs/cgroup/memory$path/memory.limit_in_bytes ;;
		cpu,cpuacct|cpuacct,cpu|cpu) c=/sys/fs/cgroup/$ctls$path/cpu.cfs_quota_us ;;
		"") [ -e /sys/fs/cgroup$path/memory.max ] && m=/sys/fs/cgroup$path/memory.max c=/sys/fs/cgroup$path/cpu.max ;;
		esac
	done < /proc/self/cgroup
	read v < "$m" && echo "memory:$v"
	read v < "$c" && echo "cpu:$v"
	exit 0`}
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs)
	cfg.Resources.MemoryMax = 64 << 20
	cfg.Resources.CPUMillis = 500
	out, err := runSandbox(t, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "memory:67108864\n") || !strings.Contains(out, "cpu:50000") {
		t.Fatalf("the app did not read its limits (64 MiB, half a core):\n%s", out)
	}
}

// Time zone data is readable in every sandbox: without it Go's
// time.LoadLocation fails with permission denied, and time.Local, glibc's
// localtime and date fall back to UTC on a host that keeps local time.
func TestTimeZoneDataReadable(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	for _, path := range []string{"/etc/localtime", "/usr/share/zoneinfo/Europe/Paris"} {
		if _, err := os.Stat(path); err != nil {
			t.Skipf("%s missing on this machine", path)
		}
		out, err := runSandbox(t, testConfig(t, "read", path))
		if err != nil || !strings.Contains(out, "ESCAPED") {
			t.Errorf("read %s: %v\n%s", path, err, out)
		}
	}
}

// The certs preset gives the system's CA certificates, not what lies
// beside them: /etc/ssl/private (Debian) and /etc/pki/tls/private (Red
// Hat) hold the host's TLS private keys, which only file permissions, that
// let uid 0 in, kept from an app running as root.
func TestCertsPresetLeavesPrivateKeys(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	var key string
	for _, dir := range []string{"/etc/ssl/private", "/etc/pki/tls/private"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Type().IsRegular() {
				key = filepath.Join(dir, e.Name())
				break
			}
		}
	}
	if key == "" {
		t.Skip("no private key in /etc/ssl/private or /etc/pki/tls/private on this machine")
	}
	cfg := testConfig(t, "read", key)
	asRoot(&cfg)
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetCerts)
	out, err := runSandbox(t, cfg)
	if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
		t.Errorf("root app with the certs preset read %s: %v\n%s", key, err, out)
	}
	for _, bundle := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"} {
		if _, err := os.Stat(bundle); err != nil {
			continue
		}
		cfg := testConfig(t, "read", bundle)
		cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetCerts)
		if out, err := runSandbox(t, cfg); err != nil || !strings.Contains(out, "ESCAPED") {
			t.Errorf("read %s with the certs preset: %v\n%s", bundle, err, out)
		}
	}
}

// A host replaces its resolver files at each network change: by rename
// (NetworkManager, dhclient; systemd-resolved and resolvconf behind a
// link from /etc) or in place (udhcpc). The app reads the new content
// each time, where a grant of the host's file would leave it a file it may
// no longer open, and even as root it cannot write the copy it reads.
func TestResolverFilesFollowTheHost(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	for _, behindLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("behind-link=%v", behindLink), func(t *testing.T) {
			etc, run := freshHostDirs(t)
			resolv, hosts := filepath.Join(etc, "resolv.conf"), filepath.Join(etc, "hosts")
			if behindLink {
				resolv = filepath.Join(run, "stub-resolv.conf")
				symlink(t, resolv, filepath.Join(etc, "resolv.conf"))
			}
			replaceFile(t, resolv, "nameserver 192.0.2.1")
			writeFile(t, hosts, "192.0.2.10 first")

			cfg := testConfig(t)
			asRoot(&cfg)
			cfg.Binary = "/bin/sh"
			cfg.Args = []string{"sh", "-c", `while read cmd; do
				r= h=; read r < /etc/resolv.conf; read h < /etc/hosts; echo "seen:$r|$h"
				(echo x > /etc/resolv.conf) 2>/dev/null && echo "WROTE /etc/resolv.conf"
				(echo x > ` + cfg.Dir + `/run/resolv.conf) 2>/dev/null && echo "WROTE the copy"
			done
			exit 0`}
			cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs, PresetDNS)
			app := startWithHostEtc(t, etc, cfg)
			app.await(t, "seen:nameserver 192.0.2.1|192.0.2.10 first")

			replaceFile(t, resolv, "nameserver 192.0.2.2")
			if behindLink {
				replaceFile(t, hosts, "192.0.2.11 second")
			} else {
				writeFile(t, hosts, "192.0.2.11 second")
			}
			app.await(t, "seen:nameserver 192.0.2.2|192.0.2.11 second")
			replaceFile(t, resolv, "nameserver 192.0.2.3")
			app.await(t, "seen:nameserver 192.0.2.3|192.0.2.11 second")
			if !behindLink {
				return
			}
			// The keeper reads as root, past Landlock: it follows the
			// file within the directory it was in at start, and not a
			// link turned to any other file, whoever turned it.
			secret := filepath.Join(base, "host-secret")
			writeFile(t, secret, "nameserver 192.0.2.66 secret")
			relink(t, secret, filepath.Join(etc, "resolv.conf"))
			// Then a change the keeper follows, so that the app's view
			// below is one taken after the keeper saw the link.
			writeFile(t, hosts, "192.0.2.12 third")
			app.await(t, "seen:|192.0.2.12 third")
		})
	}
}

// A resolver file may not be there when the app starts: at boot
// /etc/resolv.conf links to a file systemd-resolved or NetworkManager has
// still to write, or a DHCP client writes it at its first lease. The app
// starts all the same and reads the file once it appears. And a link
// turned to another file and back leads the app to each in turn.
func TestResolverFilesAppearingOrTurning(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	for _, tc := range []struct {
		name string
		// before prepares etc and run; after changes them while the app
		// runs, and returns what the app must then see of resolv.conf.
		before func(t *testing.T, etc, run string)
		after  []func(t *testing.T, etc, run string) string
	}{
		{"link to a file still to be written",
			func(t *testing.T, etc, run string) {
				symlink(t, filepath.Join(run, "stub-resolv.conf"), filepath.Join(etc, "resolv.conf"))
			},
			[]func(t *testing.T, etc, run string) string{func(t *testing.T, etc, run string) string {
				writeFile(t, filepath.Join(run, "stub-resolv.conf"), "nameserver 192.0.2.1")
				return "nameserver 192.0.2.1"
			}}},
		{"no file yet",
			func(t *testing.T, etc, run string) {},
			[]func(t *testing.T, etc, run string) string{func(t *testing.T, etc, run string) string {
				replaceFile(t, filepath.Join(etc, "resolv.conf"), "nameserver 192.0.2.1")
				return "nameserver 192.0.2.1"
			}}},
		{"link into a directory still to be made",
			func(t *testing.T, etc, run string) {
				symlink(t, filepath.Join(run, "resolve", "stub-resolv.conf"), filepath.Join(etc, "resolv.conf"))
			},
			[]func(t *testing.T, etc, run string) string{func(t *testing.T, etc, run string) string {
				if err := os.Mkdir(filepath.Join(run, "resolve"), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(run, "resolve", "stub-resolv.conf"), "nameserver 192.0.2.1")
				return "nameserver 192.0.2.1"
			}}},
		{"link turned into a plain file",
			func(t *testing.T, etc, run string) {
				writeFile(t, filepath.Join(run, "stub-resolv.conf"), "nameserver 192.0.2.1")
				symlink(t, filepath.Join(run, "stub-resolv.conf"), filepath.Join(etc, "resolv.conf"))
			},
			[]func(t *testing.T, etc, run string) string{func(t *testing.T, etc, run string) string {
				replaceFile(t, filepath.Join(etc, "resolv.conf"), "nameserver 192.0.2.2")
				return "nameserver 192.0.2.2"
			}}},
		{"hosts grown past the bound",
			func(t *testing.T, etc, run string) {
				writeFile(t, filepath.Join(etc, "resolv.conf"), "nameserver 192.0.2.1")
			},
			[]func(t *testing.T, etc, run string) string{func(t *testing.T, etc, run string) string {
				// The earlier copy stays, not the host's file, unreadable.
				big := "192.0.2.11 big\n" + strings.Repeat("0.0.0.0 blocked.example\n", (maxResolverFile+1<<20)/24)
				replaceFile(t, filepath.Join(etc, "hosts"), big)
				// A change after it, so that the app's view below is
				// one taken after the keeper saw the new hosts.
				writeFile(t, filepath.Join(etc, "resolv.conf"), "nameserver 192.0.2.2")
				return "nameserver 192.0.2.2"
			}}},
		{"link turned and back",
			func(t *testing.T, etc, run string) {
				writeFile(t, filepath.Join(run, "a.conf"), "nameserver 192.0.2.1")
				writeFile(t, filepath.Join(run, "b.conf"), "nameserver 192.0.2.2")
				symlink(t, filepath.Join(run, "a.conf"), filepath.Join(etc, "resolv.conf"))
			},
			[]func(t *testing.T, etc, run string) string{
				func(t *testing.T, etc, run string) string {
					relink(t, filepath.Join(run, "b.conf"), filepath.Join(etc, "resolv.conf"))
					return "nameserver 192.0.2.2"
				},
				func(t *testing.T, etc, run string) string {
					relink(t, filepath.Join(run, "a.conf"), filepath.Join(etc, "resolv.conf"))
					return "nameserver 192.0.2.1"
				},
				func(t *testing.T, etc, run string) string {
					writeFile(t, filepath.Join(run, "a.conf"), "nameserver 192.0.2.3")
					return "nameserver 192.0.2.3"
				},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etc, run := freshHostDirs(t)
			writeFile(t, filepath.Join(etc, "hosts"), "192.0.2.10 first")
			tc.before(t, etc, run)
			cfg := testConfig(t)
			cfg.Binary = "/bin/sh"
			cfg.Args = []string{"sh", "-c", `while read cmd; do
				r= h=; read r < /etc/resolv.conf; read h < /etc/hosts; echo "seen:$r|$h"
			done
			exit 0`}
			cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs, PresetDNS)
			app := startWithHostEtc(t, etc, cfg)
			app.await(t, "seen:"+firstResolvLine(filepath.Join(etc, "resolv.conf"))+"|192.0.2.10 first")
			for _, change := range tc.after {
				app.await(t, "seen:"+change(t, etc, run)+"|192.0.2.10 first")
			}
		})
	}
}

// The keeper copies, as root and past Landlock, what the app reads: an
// app running as root (without capabilities) and allowed to write the
// resolver's directory must not have it copy a file Landlock keeps from
// the app, by a hard link in place of a resolver file not there yet.
func TestResolverKeeperRefusesHardLinks(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	etc, _ := freshHostDirs(t)
	writeFile(t, filepath.Join(etc, "resolv.conf"), "nameserver 192.0.2.1")
	if err := os.WriteFile(filepath.Join(etc, "shadow"), []byte("root:SECRETHASH:1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	asRoot(&cfg)
	cfg.Binary = "/bin/sh"
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs, PresetDNS)
	cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: "/etc", Access: "w"},
		Path{Path: "/usr/bin", Access: "rx"}, Path{Path: "/bin", Access: "rx", Optional: true})
	cfg.Args = []string{"sh", "-c", `read cmd
		(read s < /etc/shadow) 2>/dev/null && echo "read the secret directly"
		ln /etc/shadow /etc/hosts
		while read cmd; do h=; read h < /etc/hosts; echo "seen:$h"; done
		exit 0`}
	app := startWithHostEtc(t, etc, cfg)
	if _, err := io.WriteString(app.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for refused := false; !refused; {
		if _, err := io.WriteString(app.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		for seen := false; !seen; {
			select {
			case l, ok := <-app.lines:
				if !ok {
					t.Fatalf("app ended:\n%s", app.output())
				}
				if strings.Contains(l, "SECRET") || strings.Contains(l, "secret") {
					t.Fatalf("the app read a file Landlock denies it: %q\n%s", l, app.output())
				}
				refused = refused || strings.Contains(l, "has 2 links")
				seen = strings.HasPrefix(l, "seen:")
			case <-deadline:
				t.Fatalf("the keeper never said it refused the hard link:\n%s", app.output())
			}
		}
	}
}

// Keepers take LauncherUID's inotify instances, which the keepers of the
// node's other runners share: past watchingKeepers sandboxes of one
// runner they are told to poll instead, and a sandbox that ends gives its
// share back.
func TestResolverKeepersShareInotify(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		t.Skip("no /etc/resolv.conf on this machine")
	}
	if n := watching.Load(); n != 0 {
		t.Fatalf("%d inotify shares taken before the test", n)
	}
	for range watchingKeepers - 1 {
		if !takeWatch() {
			t.Fatal("a share refused below the bound")
		}
	}
	t.Cleanup(func() {
		for range watchingKeepers - 1 {
			releaseWatch()
		}
	})
	start := func(name string) *sandboxed {
		cfg := testConfig(t)
		cfg.Hostname += name
		cfg.Binary = "/bin/sh"
		cfg.Args = []string{"sh", "-c", "echo ready; read x; exit 0"}
		cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs, PresetDNS)
		s := startSandbox(t, cfg)
		s.waitLine(t, "ready")
		return s
	}
	last := start("-last")
	over := start("-over")
	if n := watching.Load(); n != watchingKeepers {
		t.Errorf("%d shares taken, want %d", n, watchingKeepers)
	}
	for s, poll := range map[*sandboxed]bool{last: false, over: true} {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", keeperOf(t, s.Pid())))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(env), `"poll":true`); got != poll {
			t.Errorf("keeper told to poll: %v, want %v (%s)", got, poll, env)
		}
	}
	last.stdin.Close()
	if out, err := last.wait(t); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := watching.Load(); n != watchingKeepers-1 {
		t.Errorf("%d shares taken once a sandbox ended, want %d", n, watchingKeepers-1)
	}
}

// keeperOf is the pid of the resolver keeper the launcher of pid started.
func keeperOf(t *testing.T, launcher int) int {
	t.Helper()
	var keeper int
	waitFor(t, func() bool {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			i := strings.LastIndexByte(string(stat), ')')
			fields := strings.Fields(string(stat[i+1:]))
			if len(fields) > 1 && fields[1] == strconv.Itoa(launcher) && strings.Contains(string(stat[:i]), "("+resolverKeeperName) {
				keeper, _ = strconv.Atoi(e.Name())
				return true
			}
		}
		return false
	})
	return keeper
}

// freshHostDirs makes empty stand-ins for a host's /etc and /run, for
// startWithHostEtc. The shell finds its libraries through the host's
// loader cache, copied.
func freshHostDirs(t *testing.T) (etc, run string) {
	t.Helper()
	etc, run = filepath.Join(base, "host-etc"), filepath.Join(base, "host-run")
	for _, d := range []string{etc, run} {
		_ = os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if cache, err := os.ReadFile("/etc/ld.so.cache"); err == nil {
		writeFile(t, filepath.Join(etc, "ld.so.cache"), string(cache))
	}
	return etc, run
}

// firstResolvLine is the first line of the file at path, "" if there is
// none.
func firstResolvLine(path string) string {
	b, _ := os.ReadFile(path)
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// replaceFile replaces the file at path by rename, as resolvers do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path+".new", content)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// relink turns the link at link to target by rename.
func relink(t *testing.T, target, link string) {
	t.Helper()
	symlink(t, target, link+".new")
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
}

// hostEtcApp is a sandboxed shell started by startWithHostEtc, which
// prints a line for each line it reads.
type hostEtcApp struct {
	stdin io.WriteCloser
	lines chan string
	out   *strings.Builder
	mu    *sync.Mutex
}

// await asks the app for its view until it is want, and fails on a line
// that says it wrote what it must not. Each "go" the app reads gives one
// line starting "seen:", after any error the shell printed.
func (a *hostEtcApp) await(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if _, err := io.WriteString(a.stdin, "go\n"); err != nil {
			t.Fatalf("app gone: %v", err)
		}
		for seen := false; !seen; {
			select {
			case l, ok := <-a.lines:
				if !ok {
					t.Fatalf("app ended before printing %q:\n%s", want, a.output())
				}
				if strings.HasPrefix(l, "WROTE") {
					t.Fatal(l)
				}
				if l == want {
					return
				}
				seen = strings.HasPrefix(l, "seen:")
			case <-deadline:
				t.Fatalf("app never printed %q:\n%s", want, a.output())
			}
		}
	}
}

func (a *hostEtcApp) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// startWithHostEtc runs the sandbox of cfg on a host whose /etc is etc:
// from a mount namespace of its own where etc is bound over /etc
// (hostEtcMain), so that files replaced in etc are replaced, for the
// sandbox, in /etc.
func startWithHostEtc(t *testing.T, etc string, cfg Config) *hostEtcApp {
	t.Helper()
	spec, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "host-etc", etc, string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	a := &hostEtcApp{stdin: stdin, lines: make(chan string), out: &strings.Builder{}, mu: &sync.Mutex{}}
	go func() {
		defer close(a.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			a.mu.Lock()
			a.out.WriteString(sc.Text() + "\n")
			a.mu.Unlock()
			a.lines <- sc.Text()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("host-etc: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("sandbox still running 10 s after its stdin closed")
		}
		w.Close()
		for range a.lines {
		}
		if t.Failed() {
			t.Logf("output:\n%s", a.output())
		}
	})
	return a
}

// hostEtcMain binds dir over /etc in the mount namespace it was started
// in, and runs the sandbox of cfgJSON there, the app's stdio its own.
func hostEtcMain(dir, cfgJSON string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "host-etc:", err)
		os.Exit(2)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail(err)
	}
	if err := unix.Mount(dir, "/etc", "", unix.MS_BIND, ""); err != nil {
		fail(err)
	}
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fail(err)
	}
	l, err := Command(context.Background(), cfg)
	if err != nil {
		fail(err)
	}
	l.Cmd.Stdin, l.Cmd.Stdout, l.Cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = l.Start()
	if err == nil {
		err = l.Wait()
	}
	if cerr := l.Cleanup(); err == nil {
		err = cerr
	}
	if err != nil {
		fail(err)
	}
	os.Exit(0)
}

// TestAppHasNoControllingTerminal starts the launcher with a terminal of
// its own, as it inherits the operator's from a runner started in a
// shell: the app must get none, or TIOCSTI on any descriptor of that
// terminal (its stdin here; /dev/tty without Landlock, or granted) types
// commands into the operator's shell, run as the operator, root.
func TestAppHasNoControllingTerminal(t *testing.T) {
	requireRoot(t)
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	go func() { _, _ = io.Copy(io.Discard, master) }()
	for _, root := range []bool{false, true} {
		t.Run(fmt.Sprintf("root=%v", root), func(t *testing.T) {
			cfg := testConfig(t, "tiocsti")
			if root {
				asRoot(&cfg)
			}
			l, err := Command(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := l.Cleanup(); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			var out strings.Builder
			l.Cmd.Stdin, l.Cmd.Stdout, l.Cmd.Stderr = slave, &out, &out
			// The terminal controls the launcher's session.
			l.Cmd.SysProcAttr.Setpgid = false
			l.Cmd.SysProcAttr.Setsid, l.Cmd.SysProcAttr.Setctty, l.Cmd.SysProcAttr.Ctty = true, true, 0
			if err := l.Start(); err != nil {
				t.Fatalf("start: %v", err)
			}
			err = l.Wait()
			if code := exitCode(err); code != 10 || !strings.Contains(out.String(), "tty_nr 0\n") {
				t.Fatalf("the app reached the launcher's terminal (exit %d, %v):\n%s", code, err, out.String())
			}
		})
	}
}

// TestTmpPresetRefusesPathsItCovers: with the tmp preset the instance's
// tmp/ is mounted on /tmp, so an instance dir or binary under /tmp is
// out of the app's reach; the config is refused, naming the cause, not
// started to fail in a mount step with "no such file or directory".
func TestTmpPresetRefusesPathsItCovers(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "hello")
	if !strings.HasPrefix(cfg.Dir, "/tmp/") {
		t.Skipf("the test dir %s is not under /tmp", cfg.Dir)
	}
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetTmp)
	err := runOnce(cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "tmp preset") {
		t.Fatalf("want the config refused for the tmp preset, got %v", err)
	}
}

// TestExecReasonNamesTheMode: a binary the app's uid may not execute is
// refused for its mode, which the reason names; a dynamically linked one
// is not blamed on its loader, which the shared_libs preset would not
// change.
func TestExecReasonNamesTheMode(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	for _, tc := range []struct{ name, from string }{{"static", helper}, {"dynamic", "/usr/bin/true"}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "dynamic" && Interpreter(tc.from) == "" {
				t.Skipf("%s is not a dynamically linked executable here", tc.from)
			}
			cfg := testConfig(t, "hello")
			bin, err := os.ReadFile(tc.from)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Binary = filepath.Join(cfg.Dir, "not-executable")
			if err := os.WriteFile(cfg.Binary, bin, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(cfg.Binary, 0o644); err != nil {
				t.Fatal(err)
			}
			err = startErr(t, cfg)
			if r := Reason(err); !strings.HasPrefix(r, "exec: ") || !strings.Contains(r, "mode 0644") || strings.Contains(r, PresetSharedLibs) {
				t.Fatalf("reason %q, want one naming the mode, not the shared_libs preset", r)
			}
		})
	}
}

// TestRootOnlyProcFilesCovered: the files of /proc only root may read
// (slabinfo, vmallocinfo, timer_list, kpageflags, kpagecount,
// kpagecgroup, pagetypeinfo: the kernel's heap and the host's physical
// memory, aids to an attack on the kernel) are root's by their mode
// alone, which a root app without capabilities passes: it finds them
// empty, as it finds /proc/keys.
func TestRootOnlyProcFilesCovered(t *testing.T) {
	requireRoot(t)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		fi, err := os.Lstat("/proc/" + e.Name())
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o044 == 0 && fi.Mode().Perm()&0o400 != 0 {
			files = append(files, "/proc/"+e.Name())
		}
	}
	if len(files) == 0 {
		t.Skip("no /proc file only root may read here")
	}
	for _, file := range files {
		asEachUser(t, filepath.Base(file), true, func(t *testing.T, root bool) {
			cfg := testConfig(t, "readsome", file)
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 {
				t.Fatalf("read %s: %v\n%s", file, err, out)
			}
		})
	}
}

// TestMaskedPathsHidden: the files and directories of /proc and /sys
// that runc masks in every container, and /proc/key-users (the key quota
// use of every uid of the host: keys are not namespaced), show the app
// nothing, whatever its uid, even where a grant lets it read /sys. Those
// the kernel lacks, or shows nothing in here, are logged.
func TestMaskedPathsHidden(t *testing.T) {
	requireRoot(t)
	// runc's default masked paths (libcontainer/specconv), Docker's
	// additions to them, and key-users.
	masked := []string{"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/key-users",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap", "/sys/devices/virtual/tpm"}
	for _, path := range masked {
		if err := readSome(path); err != nil {
			t.Logf("%s: nothing to hide on this host: %v", path, err)
			continue
		}
		asEachUser(t, strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "-"), true, func(t *testing.T, root bool) {
			cfg := testConfig(t, "readsome", path)
			if strings.HasPrefix(path, "/sys/") {
				cfg.Landlock.Paths = []Path{{Path: "/sys", Access: "r"}}
			}
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 {
				t.Fatalf("read %s: %v\n%s", path, err, out)
			}
		})
	}
}

// TestMaskedPathGrantedKeepsTheHosts: a [[sandbox.paths]] grant of a
// masked path, or of one in it, asks for the host's, as a grant of
// /dev/shm does.
func TestMaskedPathGrantedKeepsTheHosts(t *testing.T) {
	requireRoot(t)
	const path = "/sys/firmware/memmap"
	if err := readSome(path); err != nil {
		t.Skipf("%s: nothing to read on this host: %v", path, err)
	}
	cfg := testConfig(t, "readsome", path)
	cfg.Landlock.Paths = []Path{{Path: path, Access: "r"}}
	if out, err := runSandbox(t, cfg); err != nil {
		t.Fatalf("read %s: %v\n%s", path, err, out)
	}
}

// readSome is the helper app's readsome, as the test process sees path.
func readSome(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err == nil && len(entries) == 0 {
			err = fmt.Errorf("%s is empty", path)
		}
		return err
	}
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 0 {
		err = fmt.Errorf("%s is empty", path)
	}
	return err
}

// TestAppCannotTouchItsLauncher: the app cannot signal, prlimit, trace
// or read the memory of its launcher, PID 1 of the sandbox, even as root.
// A root app shared the launcher's uid: its SIGSEGV, by kill or queued as
// a fault, crashed the launcher's Go runtime, ending the sandbox, and
// prlimit(2) set the launcher's limits (a hard RLIMIT_NOFILE of 3, and
// the launcher serves no more bridge connections).
func TestAppCannotTouchItsLauncher(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"launcher-signal", "launcher-sigqueue", "launcher-sigio", "launcher-prlimit", "launcher-ptrace", "launcher-mem"} {
		asEachUser(t, mode, true, func(t *testing.T, root bool) {
			cfg := testConfig(t, mode)
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("the app reached its launcher: %v\n%s", err, out)
			}
		})
	}
	// The resolver keeper runs only under Landlock, with the dns preset.
	// Its every uid is the launcher's own, which no app shares: before,
	// its saved uid was root's, as after any exec by an effective root,
	// and a root app signalled it where Landlock does not scope signals
	// (before ABI 8).
	for _, mode := range []string{"keeper-signal", "keeper-sigio", "keeper-prlimit"} {
		asEachUser(t, mode, true, func(t *testing.T, root bool) {
			requireLandlock(t, 1)
			cfg := testConfig(t, mode)
			cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetDNS)
			if root {
				asRoot(&cfg)
			}
			out, err := runSandbox(t, cfg)
			if exitCode(err) != 10 || !strings.Contains(out, "BLOCKED") {
				t.Fatalf("the app reached its resolver keeper: %v\n%s", err, out)
			}
		})
	}
}

// TestStartApp: an app started through ExecApplet runs with
// AppOOMScoreAdj, with its arguments and environment as given; one whose
// exec fails fails to start with the error of a direct start, and the
// step exits 127.
func TestStartApp(t *testing.T) {
	t.Run("score", func(t *testing.T) {
		cat, err := exec.LookPath("cat")
		if err != nil {
			t.Skip("no cat to read its own oom_score_adj")
		}
		cmd := exec.Command(cat, "/proc/self/oom_score_adj")
		var out strings.Builder
		cmd.Stdout = &out
		if err := StartApp(cmd, cmd.Start); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != strconv.Itoa(AppOOMScoreAdj) {
			t.Fatalf("cat read its oom_score_adj as %q (%v), want %d", out.String(), err, AppOOMScoreAdj)
		}
	})
	t.Run("arguments and environment", func(t *testing.T) {
		cmd := exec.Command(helper, "info")
		cmd.Env = []string{"APP_VAR=1"}
		var out strings.Builder
		cmd.Stdout = &out
		if err := StartApp(cmd, cmd.Start); err != nil {
			t.Fatal(err)
		}
		var info struct {
			Env []string `json:"env"`
			FDs []string `json:"fds"`
		}
		if err := cmd.Wait(); err != nil || json.Unmarshal([]byte(out.String()), &info) != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if len(info.Env) != 1 || info.Env[0] != "APP_VAR=1" {
			t.Errorf("environment %q, want [APP_VAR=1]", info.Env)
		}
		if pipes := launcherPipes(info.FDs); pipes != "" {
			t.Errorf("the app holds the exec status pipe: %s", pipes)
		}
	})
	// The runner's apps die with it by their parent-death signal, which
	// the kernel keeps per thread and gives no thread a process creates:
	// an exec from a thread other than the first, where Go may have
	// moved the applet's goroutine, would start the app without it.
	t.Run("parent-death signal", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "pdeathsig")
		cmd.Env = append(os.Environ(), execOffMainEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := StartApp(cmd, cmd.Start); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != strconv.Itoa(int(syscall.SIGKILL)) {
			t.Fatalf("the app's parent-death signal is %q (%v), want %d", out.String(), err, syscall.SIGKILL)
		}
	})
	// A binary still open for writing somewhere (in a child that another
	// goroutine forked while the runner wrote it to its cache) cannot be
	// run for that moment: the start waits for it rather than fail with
	// "text file busy".
	t.Run("busy binary", func(t *testing.T) {
		cat, err := exec.LookPath("cat")
		if err != nil {
			t.Skip("no cat to copy")
		}
		content, err := os.ReadFile(cat)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "cat")
		w, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Write(content); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "/proc/self/comm")
		var out strings.Builder
		cmd.Stdout = &out
		started := make(chan error, 1)
		go func() { started <- StartApp(cmd, cmd.Start) }()
		// Held open for a moment after the start began, as a forked
		// child holds it until its own exec.
		time.Sleep(100 * time.Millisecond)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-started; err != nil {
			t.Fatalf("start of a binary open for writing for 100 ms: %v", err)
		}
		if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != "cat" {
			t.Fatalf("the app printed %q (%v), want cat", out.String(), err)
		}
	})
	t.Run("failed exec", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing")
		direct := exec.Command(missing).Start()
		cmd := exec.Command(missing)
		err := StartApp(cmd, cmd.Start)
		if err == nil || direct == nil || err.Error() != direct.Error() || !errors.Is(err, unix.ENOENT) {
			t.Fatalf("start through %s: %v, want %v", ExecApplet, err, direct)
		}
		if werr := cmd.Wait(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 127 {
			t.Fatalf("the step ended with %v, want exit status 127", werr)
		}
	})
}

// TestCPULimitBelowTheKernelsMinimum: the kernel refuses a CPU quota
// under 1 ms per period, 10 millicores with the sandbox's 100 ms period:
// the config is refused, naming the least limit, rather than the cgroup
// write failing with "invalid argument".
func TestCPULimitBelowTheKernelsMinimum(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "hello")
	cfg.Resources.CPUMillis = 5
	err := runOnce(cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "at least 10 millicores") {
		t.Fatalf("want the limit refused, naming the least, got %v", err)
	}
}

// TestTCPBuffersCountAgainstMemoryLimit: the memory of the app's TCP
// buffers is bounded by its memory limit. cgroup v2 charges it to
// memory.max; v1 counts it only once memory.kmem.tcp.limit_in_bytes is
// set, and otherwise let an app of a 32 MiB limit hold hundreds of MiB,
// up to the host's tcp_mem, where every TCP socket of the host (NATS, the
// gateway) is refused memory.
func TestTCPBuffersCountAgainstMemoryLimit(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 4)
	const port, limit = 7000, 32 << 20
	cfg := testConfig(t, "tcpbuffers", strconv.Itoa(port))
	cfg.Network = NetworkNone
	cfg.Outbound = []Bridge{NATSBridge(cfg.Dir)}
	serveBridge(t, cfg, "127.0.0.1:1")
	cfg.Landlock.BindTCP, cfg.Landlock.ConnectTCP = []uint16{port}, []uint16{port}
	cfg.Resources.MemoryMax = limit
	out, err := runSandbox(t, cfg)
	var n int
	if _, serr := fmt.Sscanf(out, "buffered %d", &n); serr != nil || err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n > 2*limit {
		t.Fatalf("the app's TCP buffers held %d MiB, past its memory limit of %d MiB", n>>20, limit>>20)
	}
	t.Logf("the app's TCP buffers held %d KiB", n>>10)
}

// TestHostnameLongerThanTheKernelsRefused: the kernel takes a hostname
// of 64 bytes at most; a longer one is refused as a config naming the
// limit, not at the launcher's sethostname with "invalid argument".
func TestHostnameLongerThanTheKernelsRefused(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t, "hello")
	cfg.Hostname = strings.Repeat("h", 65)
	cfg.Cgroup = "narun/" + filepath.Base(cfg.Dir)
	err := runOnce(cfg)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "64 bytes") {
		t.Fatalf("want the hostname refused, naming the limit, got %v", err)
	}
	cfg.Hostname = strings.Repeat("h", 64)
	if out, err := runSandbox(t, cfg); err != nil || !strings.Contains(out, "hello") {
		t.Fatalf("a hostname of 64 bytes: %v\n%s", err, out)
	}
}

// TestExecReasonNamesAScriptsInterpreter: a script whose interpreter no
// rule lets the app execute is refused with "permission denied"; the
// reason names the interpreter to grant.
func TestExecReasonNamesAScriptsInterpreter(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	cfg := testConfig(t)
	cfg.Binary, cfg.Args = filepath.Join(cfg.Dir, "script"), nil
	if err := os.WriteFile(cfg.Binary, []byte("#!/bin/sh -e\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.Binary, 0o755); err != nil {
		t.Fatal(err)
	}
	err := startErr(t, cfg)
	if r := Reason(err); !strings.HasPrefix(r, "exec: ") || !strings.Contains(r, "interpreter /bin/sh") {
		t.Fatalf("reason %q, want one naming the script's interpreter", r)
	}
}

// runOnce runs the sandbox of cfg to its end and returns the first error
// of making, starting or running it, for a test of a config it refuses.
func runOnce(cfg Config) error {
	l, err := Command(context.Background(), cfg)
	if err == nil {
		err = l.Start()
		if err == nil {
			_ = l.Wait()
		}
		_ = l.Cleanup()
	}
	return err
}

// startErr starts the sandbox of cfg and returns what Start returns, for a
// test of why a start fails; it is cleaned up with the test.
func startErr(t *testing.T, cfg Config) error {
	t.Helper()
	l, err := Command(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Cleanup() })
	return l.Start()
}

// TestHostnameNamingNoCgroupRefused: without Config.Cgroup the instance's
// cgroup is CgroupParent/Hostname, and a hostname of "." or "./" made it
// CgroupParent itself, which Start removes first as a leftover, killing
// every sandbox of every runner on the machine, and the app's limits
// then applied to all of them. Such a config is refused, naming the
// hostname. Nothing is started: the test stops at the plan.
func TestHostnameNamingNoCgroupRefused(t *testing.T) {
	requireRoot(t)
	for _, host := range []string{".", "./", "x/.."} {
		cfg := testConfig(t, "hello")
		cfg.Hostname = host
		l, err := Command(context.Background(), cfg)
		if err == nil {
			for _, d := range l.plan.dirs() {
				if filepath.Base(d) == CgroupParent {
					t.Errorf("hostname %q: the instance's cgroup is %s, all of %s/, which Start would remove with every sandbox in it", host, d, CgroupParent)
				}
			}
			l.closeAll()
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "hostname") {
			t.Errorf("hostname %q: want the config refused, naming the hostname, got %v", host, err)
		}
	}
}

// TestRemoveScopeRefusesAllOfParent: RemoveScope refuses "", which would
// be all of CgroupParent, and so must it "." and "./", which name the
// same: they killed every instance of every runner on the machine. The
// call runs in a mount namespace of its own where each hierarchy is a
// scratch cgroup, so that it cannot reach the machine's CgroupParent.
func TestRemoveScopeRefusesAllOfParent(t *testing.T) {
	requireRoot(t)
	mounts, err := cgroupMounts()
	if err != nil || len(mounts) == 0 {
		t.Skipf("no cgroup hierarchy: %v", err)
	}
	scratch := "narun-test-scratch-" + strconv.Itoa(os.Getpid())
	other := filepath.Join(CgroupParent, "r-other", "app.1")
	for _, m := range mounts {
		if err := os.MkdirAll(filepath.Join(m, scratch, other), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for d := filepath.Join(m, scratch, other); d != m; d = filepath.Dir(d) {
				if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
					t.Errorf("remove the test's cgroup: %v", err)
				}
			}
		})
	}
	for _, scope := range []string{".", "./"} {
		cmd := exec.Command("/proc/self/exe", "scratch-cgroups", scratch, scope)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("scratch-cgroups: %v\n%s", err, out)
		}
		for _, m := range mounts {
			if _, err := os.Stat(filepath.Join(m, scratch, other)); err != nil {
				t.Errorf("RemoveScope(%q) removed another runner's instance: %v (%s)", scope, err, strings.TrimSpace(string(out)))
			}
		}
		if !strings.Contains(string(out), ErrInvalidConfig.Error()) {
			t.Errorf("RemoveScope(%q): %s, want the scope refused", scope, out)
		}
	}
}

// scratchCgroupsMain binds the cgroup scratch of each hierarchy over the
// hierarchy, in the mount namespace it was started in, and calls
// RemoveScope(scope) there. It calls nothing unless every hierarchy shows
// its scratch cgroup.
func scratchCgroupsMain(scratch, scope string) {
	fail := func(err error) {
		fmt.Println("scratch-cgroups:", err)
		os.Exit(1)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail(err)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		fail(err)
	}
	for _, m := range mounts {
		if err := unix.Mount(filepath.Join(m, scratch), m, "", unix.MS_BIND, ""); err != nil {
			fail(err)
		}
	}
	after, err := cgroupMounts()
	if err != nil {
		fail(err)
	}
	for _, m := range after {
		if _, err := os.Stat(filepath.Join(m, CgroupParent, "r-other")); err != nil {
			fail(fmt.Errorf("%s is not the scratch cgroup: %w", m, err))
		}
		if _, err := os.Stat(filepath.Join(m, scratch)); err == nil {
			fail(fmt.Errorf("%s is still the machine's hierarchy", m))
		}
	}
	fmt.Println("RemoveScope:", RemoveScope(scope))
	os.Exit(0)
}

// TestHiddenFileReplacedByRenameStaysHidden: a host process that replaces
// a hidden file by rename (an editor's save, sed -i, narun's own atomic
// writes) detaches the empty file covering it in every sandbox. A root
// app granted a directory above it must still not read the new content,
// and must still read the files beside it. Two hidden files under one
// grant, at different depths, are both kept, and a link to one leads
// nowhere, while a link to a file beside it still leads there.
func TestHiddenFileReplacedByRenameStaysHidden(t *testing.T) {
	requireRoot(t)
	requireLandlock(t, 1)
	dir := filepath.Join(base, "hidden-grant")
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	secret, key, ok := filepath.Join(sub, "secret"), filepath.Join(dir, "key"), filepath.Join(sub, "ok")
	for _, f := range []string{secret, key} {
		if err := os.WriteFile(f, []byte("old-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, ok, "ok-content")
	symlink(t, "secret", filepath.Join(sub, "to-secret"))
	symlink(t, "ok", filepath.Join(sub, "to-ok"))

	cfg := testConfig(t)
	asRoot(&cfg)
	cfg.Binary = "/bin/sh"
	cfg.Args = []string{"sh", "-c", `while read cmd; do
		s= k= l= o= m=
		read s < ` + secret + ` || s="${s:-DENIED}"
		read k < ` + key + ` || k="${k:-DENIED}"
		read l < ` + sub + `/to-secret || l="${l:-DENIED}"
		read o < ` + ok + `
		read m < ` + sub + `/to-ok
		echo "seen:$s|$k|$l|$o|$m"
	done
	exit 0`}
	cfg.Landlock.Presets = append(cfg.Landlock.Presets, PresetSharedLibs)
	cfg.Landlock.Paths = []Path{{Path: dir, Access: "r"}}
	cfg.Hidden = []string{secret, key}
	s := startSandbox(t, cfg)
	ask := func() string {
		t.Helper()
		if _, err := io.WriteString(s.stdin, "go\n"); err != nil {
			t.Fatalf("app gone: %v", err)
		}
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l := <-s.lines:
				if strings.HasPrefix(l, "seen:") {
					return l
				}
			case <-deadline:
				s.mu.Lock()
				defer s.mu.Unlock()
				t.Fatalf("app never answered:\n%s", s.out.String())
			}
		}
	}
	before := ask()
	if strings.Contains(before, "secret") || !strings.HasSuffix(before, "|ok-content|ok-content") {
		t.Fatalf("before the rename the app saw %q, want the secret empty or denied and ok-content", before)
	}

	for _, f := range []string{secret, key} {
		tmp := filepath.Join(filepath.Dir(f), ".new")
		if err := os.WriteFile(tmp, []byte("new-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f); err != nil {
			t.Fatal(err)
		}
	}
	// The rename detaches the cover before it returns: the next read is
	// what the app will see from now on.
	after := ask()
	if strings.Contains(after, "secret") {
		t.Fatalf("after the host replaced the hidden file by rename, the app read it: %q", after)
	}
	if !strings.HasSuffix(after, "|ok-content|ok-content") {
		t.Fatalf("after the rename the app saw %q, want ok-content beside the hidden file", after)
	}
}

// TestKernelSettingsGrantRefused: a grant with "w" at, above or in a file
// system of the kernel's own (proc, sysfs and those mounted in it) makes
// it a writable mount, where the app, running as root, passes the modes
// of the host's kernel settings: kernel.core_pattern names a program the
// kernel runs as root on the host at the next crash, and sysfs holds
// the host's devices and memory management. The app only opens the file
// for writing: a write would change the host.
func TestKernelSettingsGrantRefused(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct{ grant, setting string }{
		{"/proc", "/proc/sys/kernel/core_pattern"},
		{"/proc/sys", "/proc/sys/kernel/core_pattern"},
		{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_pattern"},
		{"/sys/kernel", "/sys/kernel/mm/ksm/run"},
		{"/sys/power/state", "/sys/power/state"},
	} {
		t.Run(strings.ReplaceAll(strings.TrimPrefix(tc.grant, "/"), "/", "-"), func(t *testing.T) {
			if _, err := os.Stat(tc.setting); err != nil {
				t.Skip(err)
			}
			cfg := testConfig(t, "open-for-write", tc.setting)
			asRoot(&cfg)
			cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: tc.grant, Access: "rw"})
			reason := setupRefusal(t, cfg)
			if want := "path " + tc.grant + ": "; !strings.Contains(reason, want) || !strings.Contains(reason, "kernel") {
				t.Fatalf("reason %q, want it to name %q and the kernel's file system", reason, want)
			}
			// Read, or written by an app that is not root, whom the
			// settings' modes keep out, it is the grant it was.
			cfg.Landlock.Paths[len(cfg.Landlock.Paths)-1].Access = "r"
			if out, err := runSandbox(t, cfg); exitCode(err) != 10 {
				t.Fatalf("granted r: %v\n%s", err, out)
			}
			cfg = testConfig(t, "open-for-write", tc.setting)
			cfg.Landlock.Paths = append(cfg.Landlock.Paths, Path{Path: tc.grant, Access: "rw"})
			if out, err := runSandbox(t, cfg); exitCode(err) != 10 {
				t.Fatalf("granted rw to uid %d: %v\n%s", nobody, err, out)
			}
		})
	}
}
