package sandbox

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter runs a seccomp filter on one system call, as the kernel would:
// only the instructions sandboxFilter uses are known.
func runFilter(t *testing.T, prog []unix.SockFilter, bigEndian bool, arch uint32, nr int32, args ...uint64) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data
	order := binary.ByteOrder(binary.LittleEndian)
	if bigEndian {
		order = binary.BigEndian
	}
	order.PutUint32(data[0:], uint32(nr))
	order.PutUint32(data[4:], arch)
	for i, arg := range args {
		order.PutUint64(data[16+8*i:], arg)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = order.Uint32(data[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			if acc&in.K != 0 {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: unknown code %#x", pc, in.Code)
		}
	}
	t.Fatal("the filter ran past its end")
	return 0
}

// The filter decides on what the kernel hands it, including what this
// machine cannot make: system calls of another ABI (int 0x80 from a 64-bit
// program, an x32 or 32-bit binary), whose socketcall(2) hides its family
// in memory, and a big-endian machine's arguments. host is a sandbox with
// host networking, whose sockets are not confined.
func TestFilterDecisions(t *testing.T) {
	const (
		allow        = unix.SECCOMP_RET_ALLOW
		enosys       = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
		eperm        = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		eafnosupport = unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)
		eacces       = unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)
		ioUringSetup = 425 // the same on every architecture
	)
	tests := []struct {
		name   string
		goarch string
		host   bool
		arch   uint32
		nr     int32
		arg0   uint64
		arg1   uint64
		want   uint32
	}{
		{"amd64-vsock", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_VSOCK, 0, eafnosupport},
		{"amd64-inet", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_INET, 0, allow},
		{"amd64-inet6", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_INET6, 0, allow},
		{"amd64-unix", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_UNIX, 0, allow},
		{"amd64-netlink", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_NETLINK, 0, allow},
		{"amd64-bluetooth", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_BLUETOOTH, 0, eafnosupport},
		// The kernel reads the family as an int: high bits change nothing.
		{"amd64-vsock-high-bits", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, 1<<32 | unix.AF_VSOCK, 0, eafnosupport},
		{"amd64-read", "amd64", false, unix.AUDIT_ARCH_X86_64, 0, 0, 0, allow},
		{"amd64-io-uring", "amd64", false, unix.AUDIT_ARCH_X86_64, ioUringSetup, 0, 0, eperm},
		{"amd64-x32-socket", "amd64", false, unix.AUDIT_ARCH_X86_64, 0x40000000 | 41, unix.AF_VSOCK, 0, enosys},
		{"amd64-int80-socketcall", "amd64", false, unix.AUDIT_ARCH_I386, 102, 1, 0, enosys},
		{"amd64-int80-socket", "amd64", false, unix.AUDIT_ARCH_I386, 359, unix.AF_VSOCK, 0, enosys},
		{"arm64-vsock", "arm64", false, unix.AUDIT_ARCH_AARCH64, 198, unix.AF_VSOCK, 0, eafnosupport},
		{"arm64-inet", "arm64", false, unix.AUDIT_ARCH_AARCH64, 198, unix.AF_INET, 0, allow},
		{"arm64-aarch32", "arm64", false, unix.AUDIT_ARCH_ARM, 281, unix.AF_VSOCK, 0, enosys},
		{"arm-vsock", "arm", false, unix.AUDIT_ARCH_ARM, 281, unix.AF_VSOCK, 0, eafnosupport},
		{"ppc64-vsock", "ppc64", false, unix.AUDIT_ARCH_PPC64, 326, unix.AF_VSOCK, 0, eafnosupport},
		{"ppc64-inet", "ppc64", false, unix.AUDIT_ARCH_PPC64, 326, unix.AF_INET, 0, allow},
		{"ppc64-socketcall", "ppc64", false, unix.AUDIT_ARCH_PPC64, 102, 1, 0, enosys},
		{"amd64-add-key", "amd64", false, unix.AUDIT_ARCH_X86_64, 248, 0, 0, eperm},
		{"amd64-request-key", "amd64", false, unix.AUDIT_ARCH_X86_64, 249, 0, 0, eperm},
		{"amd64-keyctl", "amd64", false, unix.AUDIT_ARCH_X86_64, 250, 0, 0, eperm},
		{"arm64-keyctl", "arm64", false, unix.AUDIT_ARCH_AARCH64, 219, 0, 0, eperm},
		{"riscv64-keyctl", "riscv64", false, unix.AUDIT_ARCH_RISCV64, 219, 0, 0, eperm},
		{"riscv64-io-uring", "riscv64", false, unix.AUDIT_ARCH_RISCV64, ioUringSetup, 0, 0, eperm},
		{"amd64-userfaultfd", "amd64", false, unix.AUDIT_ARCH_X86_64, 323, 0, 0, eperm},
		{"arm64-userfaultfd", "arm64", false, unix.AUDIT_ARCH_AARCH64, 282, 0, 0, eperm},
		{"mips64-userfaultfd", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5317, 0, 0, eperm},
		{"amd64-fanotify", "amd64", false, unix.AUDIT_ARCH_X86_64, 300, 0, 0, eperm},
		{"amd64-bpf", "amd64", false, unix.AUDIT_ARCH_X86_64, 321, 5, 0, eperm},
		{"arm64-bpf", "arm64", false, unix.AUDIT_ARCH_AARCH64, 280, 5, 0, eperm},
		{"ppc64-bpf", "ppc64", false, unix.AUDIT_ARCH_PPC64, 361, 5, 0, eperm},
		{"mips64-bpf", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5315, 5, 0, eperm},
		{"host-amd64-bpf", "amd64", true, unix.AUDIT_ARCH_X86_64, 321, 5, 0, eperm},
		{"amd64-syslog", "amd64", false, unix.AUDIT_ARCH_X86_64, 103, 3, 0, eperm},
		{"arm64-syslog", "arm64", false, unix.AUDIT_ARCH_AARCH64, 116, 3, 0, eperm},
		{"mips64-syslog", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5101, 3, 0, eperm},
		{"host-amd64-syslog", "amd64", true, unix.AUDIT_ARCH_X86_64, 103, 3, 0, eperm},
		{"arm64-fanotify", "arm64", false, unix.AUDIT_ARCH_AARCH64, 262, 0, 0, eperm},
		{"ppc64-fanotify", "ppc64", false, unix.AUDIT_ARCH_PPC64, 323, 0, 0, eperm},
		// memfd_create's flags are its second argument, an unsigned int:
		// MFD_EXEC is refused as vm.memfd_noexec = 2 refuses it, whatever
		// the high half holds; the flags of shared memory pass.
		{"amd64-memfd-exec", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_EXEC, eacces},
		{"amd64-memfd-exec-cloexec", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_EXEC | unix.MFD_CLOEXEC, eacces},
		{"amd64-memfd-exec-high-bits", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, 1<<32 | unix.MFD_EXEC, eacces},
		{"amd64-memfd-none", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, 0, allow},
		{"amd64-memfd-shm", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING, allow},
		{"amd64-memfd-noexec-seal", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_NOEXEC_SEAL, allow},
		{"amd64-memfd-high-bits", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, 0, 1<<32 | unix.MFD_CLOEXEC, allow},
		// The flags in arg0 are not memfd_create's.
		{"amd64-memfd-exec-in-arg0", "amd64", false, unix.AUDIT_ARCH_X86_64, 319, unix.MFD_EXEC, 0, allow},
		{"amd64-x32-memfd-exec", "amd64", false, unix.AUDIT_ARCH_X86_64, 0x40000000 | 319, 0, unix.MFD_EXEC, enosys},
		{"arm64-memfd-exec", "arm64", false, unix.AUDIT_ARCH_AARCH64, 279, 0, unix.MFD_EXEC, eacces},
		{"arm64-memfd-shm", "arm64", false, unix.AUDIT_ARCH_AARCH64, 279, 0, unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING, allow},
		{"ppc64-memfd-exec", "ppc64", false, unix.AUDIT_ARCH_PPC64, 360, 0, unix.MFD_EXEC, eacces},
		{"ppc64-memfd-exec-high-bits", "ppc64", false, unix.AUDIT_ARCH_PPC64, 360, 0, 1<<32 | unix.MFD_EXEC, eacces},
		{"ppc64-memfd-noexec-seal", "ppc64", false, unix.AUDIT_ARCH_PPC64, 360, 0, unix.MFD_NOEXEC_SEAL, allow},
		{"ppc64-memfd-high-bits", "ppc64", false, unix.AUDIT_ARCH_PPC64, 360, 0, 1<<32 | unix.MFD_CLOEXEC, allow},
		{"mips64-memfd-exec", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5314, 0, unix.MFD_EXEC, eacces},
		{"mips64-memfd-none", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5314, 0, 0, allow},
		// With host networking every socket is the host's to give; the
		// rest of the filter holds.
		{"host-amd64-vsock", "amd64", true, unix.AUDIT_ARCH_X86_64, 41, unix.AF_VSOCK, 0, allow},
		{"host-amd64-read", "amd64", true, unix.AUDIT_ARCH_X86_64, 0, 0, 0, allow},
		{"host-amd64-keyctl", "amd64", true, unix.AUDIT_ARCH_X86_64, 250, 0, 0, eperm},
		{"host-amd64-io-uring", "amd64", true, unix.AUDIT_ARCH_X86_64, ioUringSetup, 0, 0, eperm},
		{"host-amd64-userfaultfd", "amd64", true, unix.AUDIT_ARCH_X86_64, 323, 0, 0, eperm},
		{"host-amd64-int80-keyctl", "amd64", true, unix.AUDIT_ARCH_I386, 288, 0, 0, enosys},
		{"host-amd64-x32-keyctl", "amd64", true, unix.AUDIT_ARCH_X86_64, 0x40000000 | 250, 0, 0, enosys},
		{"host-arm64-keyctl", "arm64", true, unix.AUDIT_ARCH_AARCH64, 219, 0, 0, eperm},
		{"host-amd64-memfd-exec", "amd64", true, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_EXEC, eacces},
		{"host-amd64-memfd-shm", "amd64", true, unix.AUDIT_ARCH_X86_64, 319, 0, unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING, allow},
		{"host-ppc64-socketcall", "ppc64", true, unix.AUDIT_ARCH_PPC64, 102, 1, 0, allow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prog := sandboxFilter(tc.goarch, !tc.host)
			if prog == nil {
				t.Fatalf("no filter for %s", tc.goarch)
			}
			if got := runFilter(t, prog, seccompArchs[tc.goarch].bigEndian, tc.arch, tc.nr, tc.arg0, tc.arg1); got != tc.want {
				t.Errorf("got %#x, want %#x", got, tc.want)
			}
		})
	}
	// Netlink sockets by protocol: the kernel's device events reach past
	// a network namespace.
	for _, tc := range []struct {
		name     string
		goarch   string
		host     bool
		nr       int32
		protocol uint64
		want     uint32
	}{
		{"amd64-route", "amd64", false, 41, unix.NETLINK_ROUTE, allow},
		{"amd64-uevent", "amd64", false, 41, unix.NETLINK_KOBJECT_UEVENT, unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)},
		{"amd64-uevent-high-bits", "amd64", false, 41, 1<<32 | unix.NETLINK_KOBJECT_UEVENT, unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)},
		{"ppc64-uevent", "ppc64", false, 326, unix.NETLINK_KOBJECT_UEVENT, unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)},
		{"ppc64-route", "ppc64", false, 326, unix.NETLINK_ROUTE, allow},
		{"host-amd64-uevent", "amd64", true, 41, unix.NETLINK_KOBJECT_UEVENT, allow},
	} {
		t.Run("netlink-"+tc.name, func(t *testing.T) {
			a := seccompArchs[tc.goarch]
			if got := runFilter(t, sandboxFilter(tc.goarch, !tc.host), a.bigEndian, a.audit, tc.nr, unix.AF_NETLINK, unix.SOCK_RAW, tc.protocol); got != tc.want {
				t.Errorf("got %#x, want %#x", got, tc.want)
			}
		})
	}
	// fcntl(F_SETSIG) of any signal but the default: the kernel sends it
	// to any process an effective root names as the descriptor's owner.
	for _, tc := range []struct {
		name     string
		goarch   string
		nr       int32
		cmd, arg uint64
		want     uint32
	}{
		{"amd64-setsig-segv", "amd64", 72, unix.F_SETSIG, uint64(unix.SIGSEGV), eperm},
		{"amd64-setsig-kill-high-bits", "amd64", 72, unix.F_SETSIG, 1<<32 | uint64(unix.SIGKILL), eperm},
		{"amd64-setsig-default", "amd64", 72, unix.F_SETSIG, 0, allow},
		{"amd64-setown", "amd64", 72, unix.F_SETOWN, 1, allow},
		{"amd64-setfl", "amd64", 72, unix.F_SETFL, unix.O_ASYNC, allow},
		{"arm-fcntl64-setsig", "arm", 221, unix.F_SETSIG, uint64(unix.SIGSEGV), eperm},
		{"arm-fcntl-setsig", "arm", 55, unix.F_SETSIG, uint64(unix.SIGSEGV), eperm},
		{"riscv64-setsig", "riscv64", 25, unix.F_SETSIG, uint64(unix.SIGSEGV), eperm},
		{"mips64-setsig", "mips64", 5070, unix.F_SETSIG, uint64(unix.SIGSEGV), eperm},
		{"mips64-setsig-default", "mips64", 5070, unix.F_SETSIG, 0, allow},
	} {
		t.Run("fcntl-"+tc.name, func(t *testing.T) {
			a := seccompArchs[tc.goarch]
			for _, host := range []bool{false, true} {
				if got := runFilter(t, sandboxFilter(tc.goarch, !host), a.bigEndian, a.audit, tc.nr, 3, tc.cmd, tc.arg); got != tc.want {
					t.Errorf("host network %v: got %#x, want %#x", host, got, tc.want)
				}
			}
		})
	}
	// Go opens its sockets with socketcall(2) there, which no filter can
	// read: no filter rather than one that refuses every socket.
	for _, goarch := range []string{"386", "s390x"} {
		if sandboxFilter(goarch, true) != nil || sandboxFilter(goarch, false) != nil {
			t.Errorf("a filter for %s", goarch)
		}
	}
}

// The numbers written out in seccompArchs are those of x/sys/unix for the
// architecture the test runs on.
func TestSeccompArchMatchesThisBuild(t *testing.T) {
	a, ok := seccompArchs[runtime.GOARCH]
	if !ok {
		t.Skipf("no filter on %s", runtime.GOARCH)
	}
	if a.socket != unix.SYS_SOCKET || a.ioUringSetup != unix.SYS_IO_URING_SETUP || a.userfaultfd != unix.SYS_USERFAULTFD || a.memfdCreate != unix.SYS_MEMFD_CREATE {
		t.Errorf("%s: socket %d, io_uring_setup %d, userfaultfd %d, memfd_create %d; x/sys/unix has %d, %d, %d, %d", runtime.GOARCH,
			a.socket, a.ioUringSetup, a.userfaultfd, a.memfdCreate, unix.SYS_SOCKET, unix.SYS_IO_URING_SETUP, unix.SYS_USERFAULTFD, unix.SYS_MEMFD_CREATE)
	}
	if a.syslog != unix.SYS_SYSLOG {
		t.Errorf("%s: syslog %d; x/sys/unix has %d", runtime.GOARCH, a.syslog, unix.SYS_SYSLOG)
	}
	if a.bpf != unix.SYS_BPF {
		t.Errorf("%s: bpf %d; x/sys/unix has %d", runtime.GOARCH, a.bpf, unix.SYS_BPF)
	}
	if a.fanotifyInit != unix.SYS_FANOTIFY_INIT {
		t.Errorf("%s: fanotify_init %d; x/sys/unix has %d", runtime.GOARCH, a.fanotifyInit, unix.SYS_FANOTIFY_INIT)
	}
	if len(a.fcntl) == 0 || a.fcntl[0] != unix.SYS_FCNTL {
		t.Errorf("%s: fcntl %v; x/sys/unix has %d", runtime.GOARCH, a.fcntl, unix.SYS_FCNTL)
	}
	if want := [3]uint32{unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY, unix.SYS_KEYCTL}; a.keys != want {
		t.Errorf("%s: add_key, request_key, keyctl %v; x/sys/unix has %v", runtime.GOARCH, a.keys, want)
	}
}
