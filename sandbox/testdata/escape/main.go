// Command escape is the sandbox tests' app: each mode tries one thing a
// sandboxed app must not be able to do, or exercises one behaviour. It
// exits 0 when the attempt succeeded ("ESCAPED") and 10 when it was
// blocked ("BLOCKED: reason"), so tests read the verdict from the code.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const blocked = 10

func verdict(err error) {
	if err != nil {
		fmt.Println("BLOCKED:", err)
		os.Exit(blocked)
	}
	fmt.Println("ESCAPED")
	os.Exit(0)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: escape MODE [ARG]")
		os.Exit(2)
	}
	arg := ""
	if len(os.Args) > 2 {
		arg = os.Args[2]
	}
	switch os.Args[1] {
	case "hello":
		fmt.Println("hello")
	case "read":
		_, err := os.ReadFile(arg)
		verdict(err)
	case "write":
		verdict(os.WriteFile(arg, []byte("x"), 0o644))
	case "readsome":
		// What a file shows, not only whether it opens: a file hidden
		// behind an empty one opens but says nothing, and so does a
		// directory hidden behind an empty one.
		verdict(readSome(arg))
	case "exec":
		verdict(exec.Command(arg).Run())
	case "kill0":
		pid, _ := strconv.Atoi(arg)
		verdict(syscall.Kill(pid, 0))
	case "rawsock":
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		}
		verdict(err)
	case "socket":
		// A socket of the family named: vsock, inet, unix or netlink
		// (route), or uevent, netlink's for the kernel's device events.
		families := map[string][3]int{"vsock": {unix.AF_VSOCK, unix.SOCK_STREAM, 0}, "inet": {unix.AF_INET, unix.SOCK_STREAM, 0},
			"unix": {unix.AF_UNIX, unix.SOCK_STREAM, 0}, "netlink": {unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE},
			"uevent": {unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT}}
		f, ok := families[arg]
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown family", arg)
			os.Exit(2)
		}
		fd, err := unix.Socket(f[0], f[1], f[2])
		if err == nil {
			unix.Close(fd)
		}
		verdict(err)
	case "symlink":
		// Moves the path ARG aside (a directory holding a mount point may
		// be renamed, not removed) and puts a symbolic link to the third
		// argument in its place.
		if err := os.Rename(arg, arg+".moved"); err != nil {
			verdict(err)
		}
		verdict(os.Symlink(os.Args[3], arg))
	case "keyring":
		// A key of the session keyring the app was started with.
		id, err := unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", arg, 0)
		if err != nil {
			verdict(err)
		}
		buf := make([]byte, 256)
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
		if err == nil {
			fmt.Printf("read %q\n", buf[:n])
		}
		verdict(err)
	case "addkey":
		// A key in a keyring of its own: keyrings are not namespaced, so
		// keyctl reaches those its uid shares with the host.
		_, err := unix.AddKey("user", "narun-probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		verdict(err)
	case "iouring":
		// Its IORING_OP_SOCKET would open any socket past a filter of socket(2).
		var params [120]byte
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != 0 {
			verdict(errno)
		}
		unix.Close(int(fd))
		verdict(nil)
	case "memfd":
		// An anonymous file as apps make them for shared memory, with the
		// flags of programs that predate MFD_NOEXEC_SEAL.
		fd, err := unix.MemfdCreate("narun-probe", unix.MFD_CLOEXEC)
		if err == nil {
			_, err = unix.Write(fd, []byte("x"))
			unix.Close(fd)
		}
		verdict(err)
	case "memfdexec":
		// Runs a copy of itself from an anonymous file, which no Landlock
		// rule covers: code fetched at run time past the execute
		// allow-list. ARG is the memfd_create flags ("exec" asks for an
		// executable file) and, after a comma, how it is run: "proc"
		// (execve of /proc/self/fd/N) or "execveat" (AT_EMPTY_PATH).
		flags, how, _ := strings.Cut(arg, ",")
		verdict(memfdExec(flags == "exec", how == "execveat"))
	case "userfaultfd":
		// A common aid of kernel exploits: it stalls the kernel in the
		// middle of a copy from user memory, widening a race. The form
		// for faults in user mode only, which the kernel gives any uid
		// whatever vm.unprivileged_userfaultfd says.
		const userModeOnly = 1 // UFFD_USER_MODE_ONLY
		fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|userModeOnly, 0, 0)
		if errno != 0 {
			verdict(errno)
		}
		unix.Close(int(fd))
		verdict(nil)
	case "mount":
		verdict(unix.Mount("none", arg, "tmpfs", 0, ""))
	case "userns":
		self, err := os.Executable()
		if err != nil {
			verdict(err)
		}
		cmd := exec.Command(self, "hello")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		verdict(cmd.Run())
	case "chmod":
		verdict(os.Chmod(arg, 0o4777))
	case "setuid":
		verdict(unix.Setuid(0))
	case "connect":
		c, err := net.DialTimeout("tcp", arg, 5*time.Second)
		if err == nil {
			c.Close()
		}
		verdict(err)
	case "unixconnect":
		c, err := net.DialTimeout("unix", arg, 5*time.Second)
		if err == nil {
			c.Close()
		}
		verdict(err)
	case "alloc":
		mb, _ := strconv.Atoi(arg)
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Println("ESCAPED", len(keep))
	case "childoom":
		// childoom CODE: a worker grows past the memory limit, and the
		// app, which survives it, exits CODE.
		code, _ := strconv.Atoi(arg)
		err := exec.Command("/proc/self/exe", "alloc", "256").Run()
		fmt.Println("worker:", err)
		os.Exit(code)
	case "hold":
		mb, _ := strconv.Atoi(arg)
		b := make([]byte, mb<<20)
		for j := range b {
			b[j] = 1
		}
		fmt.Println("ready")
		waitStdin()
		fmt.Println(len(b))
	case "forkbomb":
		n, _ := strconv.Atoi(arg)
		for i := 0; i < n; i++ {
			c := exec.Command("/proc/self/exe", "sleep")
			if err := c.Start(); err != nil {
				verdict(fmt.Errorf("child %d: %w", i, err))
			}
		}
		verdict(nil)
	case "sleep":
		time.Sleep(time.Hour)
	case "spin":
		ms, _ := strconv.Atoi(arg)
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		for time.Now().Before(end) {
		}
		fmt.Println("done")
	case "sigterm":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		fmt.Println("got SIGTERM")
	case "ignore":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "zombie":
		zombie()
	case "spawn-exit":
		c := exec.Command("/proc/self/exe", "exit-soon")
		if err := c.Start(); err != nil {
			fmt.Println("start grandchild:", err)
			os.Exit(2)
		}
		fmt.Println(c.Process.Pid)
	case "daemon":
		// A daemon's double fork: a session leader starts it and exits,
		// so the daemon, which ignores SIGTERM, is nobody's child here and
		// in no process group of the app's.
		c := exec.Command("/proc/self/exe", "spawn-ignoring")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := c.Output()
		if err != nil {
			fmt.Println("start the session leader:", err)
			os.Exit(2)
		}
		fmt.Printf("daemon %s", out)
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "spawn-ignoring":
		c := exec.Command("/proc/self/exe", "ignore")
		if err := c.Start(); err != nil {
			fmt.Println("start the daemon:", err)
			os.Exit(2)
		}
		fmt.Println(c.Process.Pid)
	case "bpf":
		// Loads a socket filter of two instructions (r0 = 0; exit), as
		// any uid may where kernel.unprivileged_bpf_disabled is 0.
		insns := []uint64{0xb7, 0x95}
		license := []byte("GPL\x00")
		attr := struct {
			progType, insnCnt uint32
			insns, license    uint64
			rest              [100]byte
		}{progType: 1, insnCnt: 2, insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0])))}
		fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != 0 {
			verdict(errno)
		}
		unix.Close(int(fd))
		verdict(nil)
	case "dmesg":
		// Reads the kernel's log, as any uid may where
		// kernel.dmesg_restrict is 0.
		_, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, make([]byte, 4096))
		verdict(err)
	case "fanotify":
		// Watches the directory ARG, which Landlock may keep it from
		// listing, for the names of the entries made in it.
		fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY)
		if err != nil {
			verdict(err)
		}
		verdict(unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_CREATE|unix.FAN_ONDIR, unix.AT_FDCWD, arg))
	case "tcpbuffers":
		// Fills the kernel's buffers of up to 64 connections to itself on
		// port ARG, reading none, and says how much they took.
		ln, err := net.Listen("tcp4", "127.0.0.1:"+arg)
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		var held []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		total := 0
		buf := make([]byte, 1<<16)
		for range 64 {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				fmt.Println("dial:", err)
				break
			}
			held = append(held, c)
			raw, _ := c.(*net.TCPConn).SyscallConn()
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.SetNonblock(int(fd), true)
				for {
					n, err := syscall.Write(int(fd), buf)
					if n > 0 {
						total += n
					}
					if err != nil {
						return
					}
				}
			})
		}
		fmt.Printf("buffered %d\n", total)
	case "open-for-write":
		// Opens ARG for writing and writes nothing: the open alone is
		// the kernel's permission check, and a write would change a
		// setting of the host.
		fd, err := unix.Open(arg, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		verdict(err)
	case "tiocsti":
		// Types a character into the terminal on stdin, as if its user
		// had: it works on the terminal that controls the caller's
		// session, where the kernel still allows TIOCSTI. tty_nr in
		// /proc/self/stat names that terminal, 0 for none.
		if stat, err := os.ReadFile("/proc/self/stat"); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
				if f := strings.Fields(string(stat)[i+1:]); len(f) > 4 {
					fmt.Println("tty_nr", f[4])
				}
			}
		}
		c := byte('#')
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
		if errno != 0 {
			verdict(errno)
		}
		verdict(nil)
	case "exit-soon":
		time.Sleep(50 * time.Millisecond)
	case "info":
		info()
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hi from the sandbox") })
		ln, err := net.Listen("tcp", "127.0.0.1:"+arg)
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		fmt.Println("ready")
		_ = http.Serve(ln, nil)
	case "conns":
		// Opens N connections to the address in os.Args[3], holding them
		// all, and counts those that got a first line and those closed.
		n, _ := strconv.Atoi(arg)
		served, closed := 0, 0
		var held []net.Conn
		for range n {
			c, err := net.DialTimeout("tcp", os.Args[3], 5*time.Second)
			if err != nil {
				verdict(err)
			}
			held = append(held, c)
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				closed++
			} else {
				served++
			}
		}
		fmt.Printf("served %d closed %d\n", served, closed)
	case "launcher-signal":
		// PID 1 is the launcher. The kernel hands PID 1 of a namespace
		// only the signals it has a handler for, and Go's runtime has one
		// for SIGSEGV, which it takes for a crash when sent.
		verdict(unix.Kill(1, unix.SIGSEGV))
	case "launcher-sigqueue":
		// Not "from user" by its code, so Go's runtime would take it for
		// a fault of its own, whatever signal.Ignore says.
		info := unix.Siginfo{Signo: int32(unix.SIGSEGV), Code: -1 /* SI_QUEUE */}
		_, _, errno := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, 1, uintptr(unix.SIGSEGV), uintptr(unsafe.Pointer(&info)))
		if errno != 0 {
			verdict(errno)
		}
		verdict(nil)
	case "launcher-prlimit":
		// Its own limits written back: the permission is what counts.
		var lim unix.Rlimit
		err := unix.Prlimit(1, unix.RLIMIT_NOFILE, nil, &lim)
		if err == nil {
			err = unix.Prlimit(1, unix.RLIMIT_NOFILE, &lim, nil)
		}
		verdict(err)
	case "launcher-ptrace":
		verdict(unix.PtraceSeize(1))
	case "launcher-mem":
		f, err := os.Open("/proc/1/mem")
		if err == nil {
			f.Close()
		}
		verdict(err)
	case "keeper-sigio", "launcher-sigio":
		// A descriptor's owner gets the signal F_SETSIG names when it is
		// ready, and the kernel lets an effective root name any process
		// as owner, whatever its uids: SIGSEGV crashes a Go runtime.
		pid := 1
		if os.Args[1] == "keeper-sigio" {
			pid, _ = keeperPid()
		}
		var p [2]int
		err := unix.Pipe2(p[:], 0)
		if err == nil {
			_, err = unix.FcntlInt(uintptr(p[0]), unix.F_SETOWN, pid)
		}
		if err == nil {
			_, err = unix.FcntlInt(uintptr(p[0]), unix.F_SETSIG, int(unix.SIGSEGV))
		}
		if err == nil {
			_, err = unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_ASYNC)
		}
		if err != nil {
			verdict(err)
		}
		// The write has the kernel send the signal, as the owner of the
		// descriptor asked: the target dies of it if it got through.
		_, err = unix.Write(p[1], []byte("x"))
		deadline := time.Now().Add(3 * time.Second)
		for err == nil && time.Now().Before(deadline) {
			if _, e := os.Stat(fmt.Sprintf("/proc/%d", pid)); e != nil {
				verdict(nil)
			}
			time.Sleep(10 * time.Millisecond)
		}
		verdict(fmt.Errorf("pid %d still alive after its signal: %v", pid, err))
	case "keeper-prlimit", "keeper-signal":
		// The resolver keeper (dns preset) is a process of the sandbox
		// too, run as root.
		pid, err := keeperPid()
		if err == nil && os.Args[1] == "keeper-signal" {
			err = unix.Kill(pid, unix.SIGSEGV)
		} else if err == nil {
			var lim unix.Rlimit
			if err = unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim); err == nil {
				err = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil)
			}
		}
		verdict(err)
	case "cgroup-escape":
		verdict(cgroupEscape(arg))
	case "cgroup-v2":
		fmt.Println(cgroupV2())
	case "opath-read":
		// Landlock does not check an O_PATH open; reopening the file
		// through /proc/self/fd is an open it checks.
		fd, err := unix.Open(arg, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
		}
		verdict(err)
	case "link":
		// A host file linked into data/ would be the app's to write and
		// chmod there, as root whoever owns it.
		verdict(os.Link(arg, os.Args[3]))
	case "cgroup-limit":
		verdict(raiseLimit(arg))
	case "int80":
		// getpid through the 32-bit entry, which a filter written for
		// the native ABI alone would let anything through.
		if r := int64(int80(20)); r < 0 {
			verdict(syscall.Errno(-r))
		}
		verdict(nil)
	case "natsinfo":
		c, err := net.DialTimeout("tcp", arg, 5*time.Second)
		if err != nil {
			verdict(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			verdict(err)
		}
		fmt.Print(line)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

// keeperPid finds the resolver keeper by its command line; the test fails
// on exit status 2 when there is none.
func keeperPid() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); strings.Contains(string(cmdline), "resolver-keeper") {
			return pid, nil
		}
	}
	fmt.Println("no resolver keeper")
	os.Exit(2)
	return 0, nil
}

// readSome fails when path shows nothing: it cannot be read, or it is an
// empty file or directory.
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

func waitStdin() {
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// zombie makes a grandchild whose parent exits first, so the grandchild
// is reparented to PID 1, and reports whether PID 1 reaps it.
func zombie() {
	out, err := exec.Command("/proc/self/exe", "spawn-exit").Output()
	if err != nil {
		fmt.Println("spawn:", err)
		os.Exit(2)
	}
	pid, _ := strconv.Atoi(string(out[:len(out)-1]))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			fmt.Println("reaped", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	fmt.Printf("not reaped: %s\n", stat)
	os.Exit(blocked)
}

func info() {
	host, _ := os.Hostname()
	groups, _ := unix.Getgroups()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	_ = unix.Capget(&hdr, &data[0])
	var bounding []int
	for c := 0; c < 64; c++ {
		if ok, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err == nil && ok == 1 {
			bounding = append(bounding, c)
		}
	}
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	wd, _ := os.Getwd()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"hostname": host,
		"pid":      os.Getpid(),
		"ppid":     os.Getppid(),
		"uid":      os.Getuid(),
		"gid":      os.Getgid(),
		"groups":   groups,
		"env":      os.Environ(),
		"cap_eff":  uint64(data[0].Effective) | uint64(data[1].Effective)<<32,
		"cap_prm":  uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32,
		"cap_inh":  uint64(data[0].Inheritable) | uint64(data[1].Inheritable)<<32,
		"bounding": bounding,
		"nnp":      nnp,
		"wd":       wd,
		"fds":      openFDs(),
	})
}

func openFDs() []string {
	var fds []string
	for fd := 0; fd < 64; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			fds = append(fds, strconv.Itoa(fd)+"="+target)
		}
	}
	return fds
}

// memfdExec copies the running binary into a new anonymous file, makes it
// executable if it can, and runs it in "hello" mode: nil means it ran.
func memfdExec(execFlag, execveat bool) error {
	flags := unix.MFD_CLOEXEC
	if execFlag {
		flags |= unix.MFD_EXEC
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return err
	}
	fd, err := unix.MemfdCreate("narun-probe", flags)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	if _, err := unix.Write(fd, self); err != nil {
		return err
	}
	// What an attacker would try on a file made without the execute bit;
	// its failure shows in the exec.
	_ = unix.Fchmod(fd, 0o755)
	if !execveat {
		// Without close-on-exec, or the path would vanish in the exec.
		dup, err := unix.Dup(fd)
		if err != nil {
			return err
		}
		return exec.Command(fmt.Sprintf("/proc/self/fd/%d", dup), "hello").Run()
	}
	// Replaces this process: "hello" and exit 0 if it ran.
	path, _ := unix.BytePtrFromString("")
	argv, _ := syscall.SlicePtrFromStrings([]string{"escape", "hello"})
	envv, _ := syscall.SlicePtrFromStrings(os.Environ())
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(path)),
		uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])), unix.AT_EMPTY_PATH, 0)
	return fmt.Errorf("execveat: %w", errno)
}

// cgroupV2 is the process's cgroup v2 line of /proc/self/cgroup.
func cgroupV2() string {
	b, _ := os.ReadFile("/proc/self/cgroup")
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, "0::") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// cgroupEscape starts a child with clone3's CLONE_INTO_CGROUP in the
// cgroup v2 directory dir, named by an O_PATH descriptor, which Landlock
// does not check: nil means the child ran in another cgroup than this
// process's.
func cgroupEscape(dir string) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	child := &exec.Cmd{Path: "/proc/self/exe", Args: []string{"escape", "cgroup-v2"},
		SysProcAttr: &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}}
	out, err := child.Output()
	if err != nil {
		return err
	}
	got := strings.TrimSpace(string(out))
	if got == cgroupV2() {
		return fmt.Errorf("the child stayed in %s", got)
	}
	fmt.Printf("in %s, the child in %s\n", cgroupV2(), got)
	return nil
}

// raiseLimit writes "max" into file, a limit of the app's own cgroup:
// the v1 hierarchy of its controller (pids.max: pids), else the v2 one.
func raiseLimit(file string) error {
	controller, _, _ := strings.Cut(file, ".")
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	path := ""
	for l := range strings.Lines(string(b)) {
		f := strings.SplitN(strings.TrimSpace(l), ":", 3)
		switch {
		case len(f) != 3:
		case f[1] == controller:
			path = "/sys/fs/cgroup/" + controller + f[2] + "/" + file
		case f[1] == "" && path == "":
			path = "/sys/fs/cgroup" + f[2] + "/" + file
		}
	}
	if _, err := os.Stat(path); err != nil {
		fmt.Println("no", file, "of the app's own:", err)
		os.Exit(2)
	}
	return os.WriteFile(path, []byte("max"), 0)
}
