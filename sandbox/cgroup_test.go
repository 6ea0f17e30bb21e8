package sandbox

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cgroupRoots are the hierarchies to test a Cgroup in: those the sandbox
// would use ("detected"), and a v2 hierarchy when one is mounted (on
// hybrid hosts, the one without controllers).
func cgroupRoots() map[string]string {
	roots := map[string]string{"detected": ""}
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if syscall.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			roots["v2"] = p
		}
	}
	return roots
}

// newTestCgroup creates a Cgroup in a scope of its own (as in
// TestCleanStale), removed with the scope when the test ends.
func newTestCgroup(t *testing.T, scope, root string) *Cgroup {
	t.Helper()
	scope += "-" + strconv.Itoa(os.Getpid())
	cg, err := NewCgroup(CgroupParent+"/"+scope+"/app.1", root, Resources{})
	if errors.Is(err, ErrNoCgroups) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Remove(); err != nil {
			t.Error(err)
		}
		for _, d := range cg.plan.dirs() {
			if err := os.Remove(filepath.Dir(d)); err != nil && !os.IsNotExist(err) {
				t.Error(err)
			}
		}
	})
	return cg
}

// startDaemon starts the helper's daemon mode in cg, in a process group
// of its own as the runner starts an exec instance, and returns the app
// and the pid of the daemon it left behind, which ignores SIGTERM.
func startDaemon(t *testing.T, cg *Cgroup) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(helper, "daemon")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	daemon := 0
	for sc := bufio.NewScanner(out); sc.Scan() && sc.Text() != "ready"; {
		if f, ok := strings.CutPrefix(sc.Text(), "daemon "); ok {
			daemon, _ = strconv.Atoi(f)
		}
	}
	if daemon <= 0 {
		t.Fatal("the helper named no daemon")
	}
	if sid, _ := unix.Getsid(daemon); sid == cmd.Process.Pid {
		t.Fatalf("daemon %d is in the app's session", daemon)
	}
	return cmd, daemon
}

// A process started in a Cgroup is there from birth, with everything it
// forks: a daemon that left its process group and session is killed with
// it, and the starting thread is not left behind in the cgroup.
func TestCgroupKeepsWhatLeavesTheGroup(t *testing.T) {
	requireRoot(t)
	for name, root := range cgroupRoots() {
		t.Run(name, func(t *testing.T) {
			cg := newTestCgroup(t, "cgroup-test-"+name, root)
			cmd, daemon := startDaemon(t, cg)
			procs := readProcs(t, cg.plan)
			if !slices.Contains(procs, cmd.Process.Pid) || !slices.Contains(procs, daemon) {
				t.Fatalf("cgroup holds %v; want the app %d and its daemon %d", procs, cmd.Process.Pid, daemon)
			}
			if slices.Contains(procs, os.Getpid()) {
				t.Fatalf("cgroup holds %v, the test process %d among them: the forking thread stayed", procs, os.Getpid())
			}
			if err := cg.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err == nil {
				t.Error("the app was not killed")
			}
			waitFor(t, func() bool { return !running(daemon) })
			if err := cg.Remove(); err != nil {
				t.Fatal(err)
			}
			for _, d := range cg.plan.dirs() {
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("%s still exists", d)
				}
			}
		})
	}
}

// Procs names the daemon with the app, though it is neither the app's
// child nor in its session, and WaitEmpty waits for the last process of
// the cgroup, not the first: the daemon that outlives the app keeps it
// waiting until it ends too. A removed cgroup is empty.
func TestCgroupWaitEmpty(t *testing.T) {
	requireRoot(t)
	for name, root := range cgroupRoots() {
		t.Run(name, func(t *testing.T) {
			cg := newTestCgroup(t, "cgroup-wait-"+name, root)
			cmd, daemon := startDaemon(t, cg)
			procs, err := cg.Procs()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(procs, cmd.Process.Pid) || !slices.Contains(procs, daemon) || slices.Contains(procs, os.Getpid()) {
				t.Fatalf("Procs = %v; want the app %d and its daemon %d, not the test %d", procs, cmd.Process.Pid, daemon, os.Getpid())
			}
			over, cancel := context.WithCancel(context.Background())
			cancel()
			if err := cg.WaitEmpty(over); !errors.Is(err, context.Canceled) {
				t.Fatalf("WaitEmpty with the app running: %v, want context.Canceled", err)
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if err := cg.WaitEmpty(over); !errors.Is(err, context.Canceled) {
				t.Fatalf("WaitEmpty with the daemon running: %v, want context.Canceled", err)
			}
			// On v2 the kernel's event is what WaitEmpty waits for, not a poll.
			if cg.plan.Version == 2 {
				if err := waitUnpopulated(over, cg.plan.Dirs[""]); !errors.Is(err, context.Canceled) {
					t.Fatalf("watching cgroup.events with the daemon running: %v, want context.Canceled", err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- cg.WaitEmpty(context.Background()) }()
			if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("WaitEmpty once the daemon died: %v", err)
			}
			if err := cg.Remove(); err != nil {
				t.Fatal(err)
			}
			if err := cg.WaitEmpty(over); err != nil {
				t.Errorf("WaitEmpty of a removed cgroup: %v", err)
			}
		})
	}
}

// running says whether pid runs: a killed daemon whose parent does not
// reap it stays a zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}

// A path outside CgroupParent is refused: CleanStaleUnder would never
// find what a crashed runner left there.
func TestNewCgroupOnlyUnderParent(t *testing.T) {
	for _, p := range []string{"", "other/app", "/narun/app", CgroupParent + "/../x"} {
		if _, err := NewCgroup(p, "", Resources{}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewCgroup(%q): %v, want ErrInvalidConfig", p, err)
		}
	}
}

// Go starts a process in a cgroup v2 with clone3's CLONE_INTO_CGROUP,
// which Linux 5.7 brought: NewCgroup refuses v2 on older kernels.
func TestKernelAtLeast(t *testing.T) {
	for release, want := range map[string]bool{
		"5.7.0": true, "5.10.0-28-arm64": true, "6.18.44-fc-v1045": true, "5.6.19-300.fc32.x86_64": false,
		"4.19.0-26-amd64\n": false, "10.0": true, "garbage": true,
	} {
		if got := kernelAtLeast(release, 5, 7); got != want {
			t.Errorf("kernelAtLeast(%q, 5, 7) = %v, want %v", release, got, want)
		}
	}
}
