package sandbox

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter runs a seccomp filter on one system call, as the kernel would:
// only the instructions sandboxFilter uses are known.
func runFilter(t *testing.T, prog []unix.SockFilter, bigEndian bool, arch uint32, nr int32, arg0 uint64) uint32 {
	t.Helper()
	data := make([]byte, 64) // struct seccomp_data
	order := binary.ByteOrder(binary.LittleEndian)
	if bigEndian {
		order = binary.BigEndian
	}
	order.PutUint32(data[0:], uint32(nr))
	order.PutUint32(data[4:], arch)
	order.PutUint64(data[16:], arg0)
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
		ioUringSetup = 425 // the same on every architecture
	)
	tests := []struct {
		name   string
		goarch string
		host   bool
		arch   uint32
		nr     int32
		arg0   uint64
		want   uint32
	}{
		{"amd64-vsock", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_VSOCK, eafnosupport},
		{"amd64-inet", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_INET, allow},
		{"amd64-inet6", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_INET6, allow},
		{"amd64-unix", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_UNIX, allow},
		{"amd64-netlink", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_NETLINK, allow},
		{"amd64-bluetooth", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, unix.AF_BLUETOOTH, eafnosupport},
		// The kernel reads the family as an int: high bits change nothing.
		{"amd64-vsock-high-bits", "amd64", false, unix.AUDIT_ARCH_X86_64, 41, 1<<32 | unix.AF_VSOCK, eafnosupport},
		{"amd64-read", "amd64", false, unix.AUDIT_ARCH_X86_64, 0, 0, allow},
		{"amd64-io-uring", "amd64", false, unix.AUDIT_ARCH_X86_64, ioUringSetup, 0, eperm},
		{"amd64-x32-socket", "amd64", false, unix.AUDIT_ARCH_X86_64, 0x40000000 | 41, unix.AF_VSOCK, enosys},
		{"amd64-int80-socketcall", "amd64", false, unix.AUDIT_ARCH_I386, 102, 1, enosys},
		{"amd64-int80-socket", "amd64", false, unix.AUDIT_ARCH_I386, 359, unix.AF_VSOCK, enosys},
		{"arm64-vsock", "arm64", false, unix.AUDIT_ARCH_AARCH64, 198, unix.AF_VSOCK, eafnosupport},
		{"arm64-inet", "arm64", false, unix.AUDIT_ARCH_AARCH64, 198, unix.AF_INET, allow},
		{"arm64-aarch32", "arm64", false, unix.AUDIT_ARCH_ARM, 281, unix.AF_VSOCK, enosys},
		{"arm-vsock", "arm", false, unix.AUDIT_ARCH_ARM, 281, unix.AF_VSOCK, eafnosupport},
		{"ppc64-vsock", "ppc64", false, unix.AUDIT_ARCH_PPC64, 326, unix.AF_VSOCK, eafnosupport},
		{"ppc64-inet", "ppc64", false, unix.AUDIT_ARCH_PPC64, 326, unix.AF_INET, allow},
		{"ppc64-socketcall", "ppc64", false, unix.AUDIT_ARCH_PPC64, 102, 1, enosys},
		{"amd64-add-key", "amd64", false, unix.AUDIT_ARCH_X86_64, 248, 0, eperm},
		{"amd64-request-key", "amd64", false, unix.AUDIT_ARCH_X86_64, 249, 0, eperm},
		{"amd64-keyctl", "amd64", false, unix.AUDIT_ARCH_X86_64, 250, 0, eperm},
		{"arm64-keyctl", "arm64", false, unix.AUDIT_ARCH_AARCH64, 219, 0, eperm},
		{"riscv64-keyctl", "riscv64", false, unix.AUDIT_ARCH_RISCV64, 219, 0, eperm},
		{"riscv64-io-uring", "riscv64", false, unix.AUDIT_ARCH_RISCV64, ioUringSetup, 0, eperm},
		{"amd64-userfaultfd", "amd64", false, unix.AUDIT_ARCH_X86_64, 323, 0, eperm},
		{"arm64-userfaultfd", "arm64", false, unix.AUDIT_ARCH_AARCH64, 282, 0, eperm},
		{"mips64-userfaultfd", "mips64", false, unix.AUDIT_ARCH_MIPS64, 5317, 0, eperm},
		// With host networking every socket is the host's to give; the
		// rest of the filter holds.
		{"host-amd64-vsock", "amd64", true, unix.AUDIT_ARCH_X86_64, 41, unix.AF_VSOCK, allow},
		{"host-amd64-read", "amd64", true, unix.AUDIT_ARCH_X86_64, 0, 0, allow},
		{"host-amd64-keyctl", "amd64", true, unix.AUDIT_ARCH_X86_64, 250, 0, eperm},
		{"host-amd64-io-uring", "amd64", true, unix.AUDIT_ARCH_X86_64, ioUringSetup, 0, eperm},
		{"host-amd64-userfaultfd", "amd64", true, unix.AUDIT_ARCH_X86_64, 323, 0, eperm},
		{"host-amd64-int80-keyctl", "amd64", true, unix.AUDIT_ARCH_I386, 288, 0, enosys},
		{"host-amd64-x32-keyctl", "amd64", true, unix.AUDIT_ARCH_X86_64, 0x40000000 | 250, 0, enosys},
		{"host-arm64-keyctl", "arm64", true, unix.AUDIT_ARCH_AARCH64, 219, 0, eperm},
		{"host-ppc64-socketcall", "ppc64", true, unix.AUDIT_ARCH_PPC64, 102, 1, allow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prog := sandboxFilter(tc.goarch, !tc.host)
			if prog == nil {
				t.Fatalf("no filter for %s", tc.goarch)
			}
			if got := runFilter(t, prog, seccompArchs[tc.goarch].bigEndian, tc.arch, tc.nr, tc.arg0); got != tc.want {
				t.Errorf("got %#x, want %#x", got, tc.want)
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
	if a.socket != unix.SYS_SOCKET || a.ioUringSetup != unix.SYS_IO_URING_SETUP || a.userfaultfd != unix.SYS_USERFAULTFD {
		t.Errorf("%s: socket %d, io_uring_setup %d, userfaultfd %d; x/sys/unix has %d, %d, %d", runtime.GOARCH,
			a.socket, a.ioUringSetup, a.userfaultfd, unix.SYS_SOCKET, unix.SYS_IO_URING_SETUP, unix.SYS_USERFAULTFD)
	}
	if want := [3]uint32{unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY, unix.SYS_KEYCTL}; a.keys != want {
		t.Errorf("%s: add_key, request_key, keyctl %v; x/sys/unix has %v", runtime.GOARCH, a.keys, want)
	}
}
