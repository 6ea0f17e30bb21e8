package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// envChild names the test that a child of the test binary runs in the
// conditions inChild made for it.
const envChild = "NARUN_SANDBOX_TEST_CHILD"

// inChild reruns the test in a child of the test binary started with sys
// and reports true in that child, where the test makes its checks; in the
// parent it fails the test if the child did. A seccomp filter cannot be
// undone, and a user namespace is a whole process's.
func inChild(t *testing.T, sys *syscall.SysProcAttr) bool {
	t.Helper()
	if os.Getenv(envChild) == t.Name() {
		return true
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envChild+"="+t.Name())
	cmd.SysProcAttr = sys
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return false
}

// refuseNamespacesInClone makes clone(2) fail with EINVAL, for every
// thread of the process, when it is asked for a new namespace: what
// qemu-user does with the calls of the program it emulates.
func refuseNamespacesInClone(t *testing.T) {
	t.Helper()
	a, ok := seccompArchs[runtime.GOARCH]
	if !ok {
		t.Skipf("no seccomp numbers for %s", runtime.GOARCH)
	}
	arg0 := uint32(16) // struct seccomp_data: the low half of args[0]
	if a.bigEndian {
		arg0 += 4
	}
	const newNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 4, K: a.audit},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 2, K: unix.SYS_CLONE},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: arg0},
		{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: 1, K: newNamespaces},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EINVAL)},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatalf("set no_new_privs: %v", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		t.Fatalf("install seccomp filter: %v", errno)
	}
}

// TestProbeWhereCloneRefusesNamespaces is narun under qemu-user: the
// namespace files are in /proc and narun is root, but clone refuses the
// namespaces. The node must say it cannot sandbox, and a sandbox started
// anyway must fail for good, pointing at mode = "exec".
func TestProbeWhereCloneRefusesNamespaces(t *testing.T) {
	requireRoot(t)
	if !inChild(t, nil) {
		return
	}
	refuseNamespacesInClone(t)
	if c := Probe(); c.Sandbox || c.SandboxNote != noNamespaces+" (clone: invalid argument)" {
		t.Errorf("probe where clone refuses namespaces: sandbox %v, note %q", c.Sandbox, c.SandboxNote)
	}
	l, err := Command(context.Background(), testConfig(t, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Cleanup() })
	err = l.Start()
	var se *SetupError
	if !errors.As(err, &se) || se.Stage != "namespaces" {
		t.Fatalf("start: %v, want a setup error of stage namespaces", err)
	}
	if want := `this node cannot create namespaces (in a container, or an emulator such as qemu-user?): use mode = "exec"`; !strings.Contains(se.Msg, want) {
		t.Errorf("reason %q lacks %q", se.Reason(), want)
	}
}

// TestUnmappedUIDInUserNamespace is narun in an unprivileged container:
// a user namespace that maps uid 0 only. The app's uid cannot own its
// data dir there, which must fail for good, naming the uid and the way out.
func TestUnmappedUIDInUserNamespace(t *testing.T) {
	requireRoot(t)
	if !inChild(t, &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}) {
		return
	}
	c := Probe()
	if want := "this user namespace maps only uids 0-0 (narun runs in a container?): an app needs a [sandbox] user among them"; !c.Sandbox || c.SandboxNote != want {
		t.Errorf("probe in a user namespace of one uid: sandbox %v, note %q; want true, %q", c.Sandbox, c.SandboxNote, want)
	}
	_, err := Command(context.Background(), testConfig(t, "hello"))
	var se *SetupError
	if !errors.As(err, &se) {
		t.Fatalf("command: %v, want a setup error", err)
	}
	if want := `uid 65534 is not mapped in this user namespace (narun runs in a container?): set [sandbox] user to a mapped uid or use mode = "exec"`; se.Msg != want {
		t.Errorf("reason %q, want %q", se.Msg, want)
	}
}

// TestCloneIntoReportsTheErrno needs no emulator: the kernel refuses a
// new mount namespace that shares its filesystem information with EINVAL,
// before it checks any privilege.
func TestCloneIntoReportsTheErrno(t *testing.T) {
	if err := cloneInto(unix.CLONE_NEWNS | unix.CLONE_FS); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("clone with CLONE_NEWNS|CLONE_FS: %v, want EINVAL", err)
	}
}

func TestIDMapped(t *testing.T) {
	container := []idRange{{first: 0, outside: 100000, count: 65536}, {first: 70000, outside: 200000, count: 10}}
	for _, c := range []struct {
		m    []idRange
		id   uint32
		want bool
	}{
		{nil, 2137059038, true},
		{[]idRange{{0, 0, 1<<32 - 1}}, 2137059038, true},
		{container, 0, true},
		{container, 65535, true},
		{container, 65536, false},
		{container, 70009, true},
		{container, 70010, false},
		{container, 2137059038, false},
	} {
		if got := mapped(c.m, c.id); got != c.want {
			t.Errorf("mapped(%v, %d) = %v, want %v", c.m, c.id, got, c.want)
		}
	}
}
