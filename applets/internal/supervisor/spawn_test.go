package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
	"golang.org/x/sys/unix"
)

// A start whose error says its thread must not start anything again (one
// left in an app's cgroup) retires that thread: it ends, taking along by
// the parent-death signal what it forked, and the next start runs on
// another.
func TestTaintedSpawnThreadEnds(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := func() *exec.Cmd {
		cmd := exec.Command(exe)
		cmd.Env = []string{childEnv + "=stubborn"}
		return cmd
	}
	cmd := child()
	tainted := 0
	err = spawn(cmd, func() error {
		tainted = unix.Gettid()
		if err := cmd.Start(); err != nil {
			return err
		}
		return fmt.Errorf("left in a cgroup: %w", ErrThreadTainted)
	})
	if !errors.Is(err, ErrThreadTainted) {
		t.Fatalf("spawn: %v, want the start's error", err)
	}
	task := "/proc/self/task/" + strconv.Itoa(tainted)
	testutil.Eventually(t, 10*time.Second, "the tainted thread to end", func() bool {
		_, err := os.Stat(task)
		return os.IsNotExist(err)
	})
	if err := cmd.Wait(); err == nil || cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the child of the ended thread: %v, want killed by its parent-death signal", err)
	}

	next := child()
	again := 0
	if err := spawn(next, func() error {
		again = unix.Gettid()
		return next.Start()
	}); err != nil {
		t.Fatal(err)
	}
	_ = next.Process.Kill()
	_ = next.Wait()
	if again == tainted {
		t.Errorf("the next start ran on the tainted thread %d", tainted)
	}
}
