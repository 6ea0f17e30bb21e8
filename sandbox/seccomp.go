package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// namespacedFamilies are the socket address families an app without host
// networking may open: those the kernel keeps per network namespace, so
// that the namespace confines them. Others are not: AF_VSOCK reaches the
// hypervisor and the other VMs of the host (and, with its loopback
// transport, every vsock listener of the machine), AF_BLUETOOTH and
// AF_QIPCRTR the host's radios and modems, whatever namespace the socket
// was made in.
var namespacedFamilies = []uint32{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// seccompArch is what the filter needs to know of the architecture it is
// built for.
type seccompArch struct {
	audit uint32 // AUDIT_ARCH_* of native system calls
	// socket, ioUringSetup, userfaultfd, memfdCreate, fanotifyInit, bpf,
	// syslog and keys (add_key, request_key, keyctl) are the native
	// numbers of those calls, written out since x/sys/unix has only those
	// of the build's GOARCH.
	socket, ioUringSetup, userfaultfd, memfdCreate, fanotifyInit, bpf, syslog uint32
	keys                                                                      [3]uint32
	// fcntl is fcntl(2), and fcntl64 too where the table has both.
	fcntl []uint32
	// socketcall is the multiplexed socket call, -1 where the native table
	// has none. Its family lies in memory, out of a filter's reach: it is
	// refused, and Go and the C libraries of these architectures use the
	// direct calls.
	socketcall int64
	// x32 is set on amd64, where a system call number with bit 30 set is
	// one of the x32 ABI, made with the native AUDIT_ARCH.
	x32       bool
	bigEndian bool
}

// seccompArchs are the architectures the filter is installed on, whose Go
// programs open sockets with the direct socket(2) call; on 386 and s390x
// Go uses socketcall(2), which a filter cannot read, and 32-bit mips
// (mips, mipsle) has no table here: no filter (docs/SECURITY.md, "Known
// limits").
var seccompArchs = map[string]seccompArch{
	"amd64":    {audit: unix.AUDIT_ARCH_X86_64, socket: 41, ioUringSetup: 425, userfaultfd: 323, memfdCreate: 319, fanotifyInit: 300, bpf: 321, syslog: 103, keys: [3]uint32{248, 249, 250}, fcntl: []uint32{72}, socketcall: -1, x32: true},
	"arm64":    {audit: unix.AUDIT_ARCH_AARCH64, socket: 198, ioUringSetup: 425, userfaultfd: 282, memfdCreate: 279, fanotifyInit: 262, bpf: 280, syslog: 116, keys: [3]uint32{217, 218, 219}, fcntl: []uint32{25}, socketcall: -1},
	"arm":      {audit: unix.AUDIT_ARCH_ARM, socket: 281, ioUringSetup: 425, userfaultfd: 388, memfdCreate: 385, fanotifyInit: 367, bpf: 386, syslog: 103, keys: [3]uint32{309, 310, 311}, fcntl: []uint32{55, 221}, socketcall: -1},
	"riscv64":  {audit: unix.AUDIT_ARCH_RISCV64, socket: 198, ioUringSetup: 425, userfaultfd: 282, memfdCreate: 279, fanotifyInit: 262, bpf: 280, syslog: 116, keys: [3]uint32{217, 218, 219}, fcntl: []uint32{25}, socketcall: -1},
	"loong64":  {audit: unix.AUDIT_ARCH_LOONGARCH64, socket: 198, ioUringSetup: 425, userfaultfd: 282, memfdCreate: 279, fanotifyInit: 262, bpf: 280, syslog: 116, keys: [3]uint32{217, 218, 219}, fcntl: []uint32{25}, socketcall: -1},
	"ppc64le":  {audit: unix.AUDIT_ARCH_PPC64LE, socket: 326, ioUringSetup: 425, userfaultfd: 364, memfdCreate: 360, fanotifyInit: 323, bpf: 361, syslog: 103, keys: [3]uint32{269, 270, 271}, fcntl: []uint32{55}, socketcall: 102},
	"ppc64":    {audit: unix.AUDIT_ARCH_PPC64, socket: 326, ioUringSetup: 425, userfaultfd: 364, memfdCreate: 360, fanotifyInit: 323, bpf: 361, syslog: 103, keys: [3]uint32{269, 270, 271}, fcntl: []uint32{55}, socketcall: 102, bigEndian: true},
	"mips64":   {audit: unix.AUDIT_ARCH_MIPS64, socket: 5040, ioUringSetup: 5425, userfaultfd: 5317, memfdCreate: 5314, fanotifyInit: 5295, bpf: 5315, syslog: 5101, keys: [3]uint32{5239, 5240, 5241}, fcntl: []uint32{5070}, socketcall: -1, bigEndian: true},
	"mips64le": {audit: unix.AUDIT_ARCH_MIPSEL64, socket: 5040, ioUringSetup: 5425, userfaultfd: 5317, memfdCreate: 5314, fanotifyInit: 5295, bpf: 5315, syslog: 5101, keys: [3]uint32{5239, 5240, 5241}, fcntl: []uint32{5070}, socketcall: -1},
}

// sandboxFilter is the seccomp filter of every sandboxed app. As Docker's
// default profile, it refuses io_uring (a large attack surface of the
// kernel, whose IORING_OP_SOCKET also opens sockets without socket(2),
// past any filter), userfaultfd (which stalls the kernel in a copy from
// user memory, a common aid to win a kernel race; the kernel refuses only
// its kernel-fault form, and only while vm.unprivileged_userfaultfd is 0)
// fanotify (which, from Linux 5.13, gives every uid the names of the
// entries made in any directory it may look up, past Landlock, which
// does not check fanotify_mark: Docker's profile allows it only with
// CAP_SYS_ADMIN, and apps follow their own files with inotify)
// bpf (the eBPF verifier and JIT, a frequent source of kernel privilege
// escalations, which hosts with kernel.unprivileged_bpf_disabled = 0 open
// to every uid: Docker's profile allows it only with CAP_SYS_ADMIN or
// CAP_BPF, which no app has)
// syslog(2) (the kernel's log, which hosts with kernel.dmesg_restrict =
// 0 give every uid: other containers' OOM kills, the host's devices and
// firewall logs; /proc/kmsg and /dev/kmsg are root's or need a grant;
// the C library's syslog() writes to /dev/log instead)
// and the kernel keyrings, which no namespace confines:
// keyctl reaches the user keyring of the app's uid, root's for an app run
// as root, shared with the host's processes of that uid. It refuses
// fcntl(F_SETSIG) of any signal but the default SIGIO: the kernel lets an
// effective root make any process the owner of a descriptor, whatever its
// uids, and sends the owner the signal F_SETSIG names when the descriptor
// is ready, so a root app crashed its launcher and resolver keeper with a
// SIGSEGV their Go runtime takes for a fault (SIGIO, their runtime
// ignores; few programs name another signal). It refuses
// memfd_create with MFD_EXEC, with the errno of vm.memfd_noexec = 2, so
// that the sandbox can set 1, which seals every other memfd
// non-executable alike on every kernel since 6.3 (noExecMemfds). With its
// own network namespace (confineSockets) the app also gets socket(2) only
// for namespacedFamilies, and no netlink socket of the kernel's device
// events, which no network namespace confines. No system call of another ABI (a 32-bit program's,
// or int 0x80 from a 64-bit one) passes: the filter would need a table of
// each, and could not read socketcall(2) anyway. It returns nil on an
// architecture the filter does not support.
func sandboxFilter(goarch string, confineSockets bool) []unix.SockFilter {
	a, ok := seccompArchs[goarch]
	if !ok {
		return nil
	}
	const (
		offNr   = 0 // struct seccomp_data
		offArch = 4
		offArg0 = 16
		offArg1 = 24
		offArg2 = 32
	)
	// The socket family and protocol are ints and the memfd flags an
	// unsigned int: the low halves of args[0], args[2] and args[1].
	arg0, arg1, arg2 := uint32(offArg0), uint32(offArg1), uint32(offArg2)
	if a.bigEndian {
		arg0 += 4
		arg1 += 4
		arg2 += 4
	}
	// Jumps name their targets; resolved into offsets below.
	const (
		toNext = iota
		toAllow
		toENOSYS
		toEPERM
		toEACCES
		toEAFNOSUPPORT
		toPastMemfd
		toNetlink
		toEPROTONOSUPPORT
		toAllowNetlink
		toFcntl
		toAllowFcntl
	)
	type insn struct {
		code   uint16
		k      uint32
		jt, jf int
	}
	load := func(off uint32) insn { return insn{code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: off} }
	jeq := func(k uint32, jt, jf int) insn {
		return insn{code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: k, jt: jt, jf: jf}
	}
	jset := func(k uint32, jt, jf int) insn {
		return insn{code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, k: k, jt: jt, jf: jf}
	}
	at := map[int]int{}
	prog := []insn{
		load(offArch),
		jeq(a.audit, toNext, toENOSYS),
		load(offNr),
	}
	if a.x32 {
		prog = append(prog, jset(0x40000000, toENOSYS, toNext))
	}
	prog = append(prog, jeq(a.ioUringSetup, toEPERM, toNext), jeq(a.userfaultfd, toEPERM, toNext), jeq(a.fanotifyInit, toEPERM, toNext), jeq(a.bpf, toEPERM, toNext),
		jeq(a.syslog, toEPERM, toNext))
	for _, nr := range a.keys {
		prog = append(prog, jeq(nr, toEPERM, toNext))
	}
	for _, nr := range a.fcntl {
		prog = append(prog, jeq(nr, toFcntl, toNext))
	}
	// Other calls skip the flags' load, so the checks below still find
	// the call's number in the accumulator.
	prog = append(prog,
		jeq(a.memfdCreate, toNext, toPastMemfd),
		load(arg1),
		jset(unix.MFD_EXEC, toEACCES, toAllow),
	)
	at[toPastMemfd] = len(prog)
	if confineSockets {
		if a.socketcall >= 0 {
			prog = append(prog, jeq(uint32(a.socketcall), toENOSYS, toNext))
		}
		prog = append(prog,
			jeq(a.socket, toNext, toAllow),
			load(arg0),
		)
		for _, f := range namespacedFamilies {
			to := toAllow
			if f == unix.AF_NETLINK {
				to = toNetlink
			}
			prog = append(prog, jeq(f, to, toNext))
		}
	}
	// The checks fall through to the first return: a socket of another
	// family when sockets are confined, any call allowed otherwise.
	returns := []int{toEAFNOSUPPORT, toAllow, toENOSYS, toEPERM, toEACCES}
	if !confineSockets {
		returns = returns[1:]
	}
	values := map[int]uint32{
		toEAFNOSUPPORT: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT),
		toAllow:        unix.SECCOMP_RET_ALLOW,
		toENOSYS:       unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS),
		toEPERM:        unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM),
		toEACCES:       unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES),
	}
	for _, r := range returns {
		at[r] = len(prog)
		prog = append(prog, insn{code: unix.BPF_RET | unix.BPF_K, k: values[r]})
	}
	if confineSockets {
		// Netlink's protocols are kept per network namespace but one:
		// the kernel's device events (NETLINK_KOBJECT_UEVENT) reach every
		// namespace of the initial user namespace, and so told the app of
		// each disk, USB device or loop device the host's kernel saw.
		at[toNetlink] = len(prog)
		prog = append(prog,
			load(arg2),
			jeq(unix.NETLINK_KOBJECT_UEVENT, toEPROTONOSUPPORT, toAllowNetlink),
		)
		at[toEPROTONOSUPPORT] = len(prog)
		prog = append(prog, insn{code: unix.BPF_RET | unix.BPF_K, k: unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)})
		at[toAllowNetlink] = len(prog)
		prog = append(prog, insn{code: unix.BPF_RET | unix.BPF_K, k: unix.SECCOMP_RET_ALLOW})
	}
	// The signal of F_SETSIG is an int, the low half of args[2]; so is the
	// command, of args[1].
	at[toFcntl] = len(prog)
	prog = append(prog,
		load(arg1),
		jeq(unix.F_SETSIG, toNext, toAllowFcntl),
		load(arg2),
		jeq(0, toAllowFcntl, toNext),
		insn{code: unix.BPF_RET | unix.BPF_K, k: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	)
	at[toAllowFcntl] = len(prog)
	prog = append(prog, insn{code: unix.BPF_RET | unix.BPF_K, k: unix.SECCOMP_RET_ALLOW})
	rel := func(i, target int) uint8 {
		if target == toNext {
			return 0
		}
		return uint8(at[target] - i - 1)
	}
	out := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		out[i] = unix.SockFilter{Code: in.code, K: in.k, Jt: rel(i, in.jt), Jf: rel(i, in.jf)}
	}
	return out
}

// installFilter installs sandboxFilter on the calling thread, the one
// that forks the app, which inherits it. It needs no_new_privs, which
// dropPrivileges set.
func installFilter(confineSockets bool) error {
	filter := sandboxFilter(runtime.GOARCH, confineSockets)
	if filter == nil {
		return nil
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("install the seccomp filter: %w", err)
	}
	return nil
}
