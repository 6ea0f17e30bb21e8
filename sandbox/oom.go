package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AppOOMScoreAdj is the oom_score_adj of every app process: when the
// whole device runs out of memory, the kernel's OOM killer then ends an
// app before narun, its NATS server and the system's own services, as
// Docker and the kubelet weigh containers against themselves. An app's
// own [resources] memory limit is a cgroup's, whose OOM kills ignore
// this. Raising it needs no privilege.
const AppOOMScoreAdj = 500

func raiseOOMScore(file string) error {
	return os.WriteFile(file, []byte(strconv.Itoa(AppOOMScoreAdj)), 0)
}

// ExecApplet is narun's hidden applet that StartApp starts an app of mode
// "exec" through (ExecAppMain).
const ExecApplet = "exec-app"

// StartApp starts cmd, an app of mode "exec", with AppOOMScoreAdj from
// its first instruction on. start starts cmd (cmd.Start, or a Cgroup's
// Start); StartApp makes it start narun's hidden ExecApplet of
// /proc/self/exe instead, which sets its own score and execs cmd's
// program in its place: the same process, with cmd's cgroup, process
// group, directory, environment and streams. A score set from outside
// once the start returned came after the app's first instructions, and
// whatever it forked then kept the runner's. So the process must be
// narun, or handle ExecApplet as narun does. StartApp returns once the app's exec is done;
// an exec that failed returns the error a direct start would have
// (fork/exec PATH: ERRNO), and the process exits 127.
func StartApp(cmd *exec.Cmd, start func() error) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create the exec status pipe of %s: %w", cmd.Path, err)
	}
	defer r.Close()
	path := cmd.Path
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	var deathSig syscall.Signal
	if cmd.SysProcAttr != nil {
		deathSig = cmd.SysProcAttr.Pdeathsig
	}
	cmd.Args = append([]string{"narun", ExecApplet, strconv.Itoa(fd), strconv.Itoa(int(deathSig)), path}, cmd.Args...)
	cmd.Path = "/proc/self/exe"
	err = start()
	w.Close()
	if err != nil {
		return err
	}
	// The pipe closes at the app's exec (close-on-exec); a failed exec
	// sends its errno first.
	var errno [4]byte
	if n, _ := io.ReadFull(r, errno[:]); n == len(errno) {
		return &os.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(binary.NativeEndian.Uint32(errno[:]))}
	}
	return nil
}

// ExecAppMain is the hidden ExecApplet: with args FD SIG PATH ARG0
// [ARG...] from StartApp, it sets its own oom_score_adj to AppOOMScoreAdj
// and execs PATH in its place with SIG (0 for none) as its parent-death
// signal, or writes the exec's errno to descriptor FD and exits 127. It
// never returns.
func ExecAppMain(args []string) {
	var fd, deathSig int
	var err error
	if len(args) < 4 {
		err = fmt.Errorf("want FD SIG PATH ARG0 [ARG...], got %d arguments", len(args))
	} else if fd, err = strconv.Atoi(args[0]); err == nil && fd < 3 {
		err = fmt.Errorf("descriptor %d is a standard stream", fd)
	} else if err == nil {
		deathSig, err = strconv.Atoi(args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "narun %s: %v (started outside the runner?)\n", ExecApplet, err)
		os.Exit(2)
	}
	// The kernel keeps the parent-death signal per thread, and gives none
	// to the threads a process creates; an exec makes the thread that
	// calls it the whole process. Go may run this on any of its threads,
	// so this one gets the signal the first had, before the exec and on
	// the thread that makes it. Until then the first thread's signal
	// covers the process.
	runtime.LockOSThread()
	if deathSig != 0 {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(deathSig), 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "narun %s: set the parent-death signal: %v\n", ExecApplet, err)
			os.Exit(2)
		}
	}
	// The app must not inherit the status pipe.
	unix.CloseOnExec(fd)
	// Best effort, as before the app's first instruction nothing can be
	// told but a failed exec: only a runner whose own score is above
	// AppOOMScoreAdj makes this a lowering, which needs CAP_SYS_RESOURCE,
	// and the app then keeps the runner's higher score.
	_ = raiseOOMScore("/proc/self/oom_score_adj")
	err = retryBusy(func() error { return syscall.Exec(args[2], args[3:], os.Environ()) })
	errno := syscall.EINVAL
	errors.As(err, &errno)
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(errno))
	_, _ = unix.Write(fd, b[:])
	os.Exit(127)
}

// busyFor bounds how long an exec that fails with ETXTBSY is tried again.
const busyFor = 2 * time.Second

// retryBusy runs exec, a start of a program, again while it fails with
// ETXTBSY, up to busyFor. The kernel refuses to run a file that any
// process holds open for writing: one the runner has just written to its
// binary cache is also open, for a moment, in each child another of its
// goroutines forked meanwhile, until that child's own exec closes it
// (golang.org/issue/22315). The instance then failed its start with
// "text file busy".
func retryBusy(exec func() error) error {
	deadline := time.Now().Add(busyFor)
	for {
		err := exec()
		if !errors.Is(err, syscall.ETXTBSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
