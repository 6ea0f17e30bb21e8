package runner

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestKillEndsWhatInstancesForked cuts a stop short as a second SIGINT
// does, while the stop waits out a stop_timeout of an hour. An exec app
// forked a child that ignores SIGTERM, which the parent-death signal that
// ends the instance's first process when narun exits would not reach. A
// sandboxed app ignores SIGTERM itself (once it ends, its launcher and pid
// namespace end the rest at once, and no stop is left to cut short). Soon
// after Kill returns, nothing of either instance runs.
func TestKillEndsWhatInstancesForked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ mode, args string }{{"exec", "fork"}, {"sandbox", "stubborn"}} {
		mode := tc.mode
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, nil)
			var tr *testRunner
			if mode == "sandbox" {
				tr = startSandboxRunner(t, c, nil)
			} else {
				tr = startRunner(t, c, nil)
			}
			c.deploy(t, "forker", "1.0.0", probeBin, "mode = \""+mode+"\"\nargs = [\""+tc.args+"\"]\nstop_timeout = \"1h\"\n")
			in := tr.wait(t, "forker", "healthy", allIn(1, state.Healthy))[0]
			// The instance's pid is the exec app's or the sandbox
			// launcher's, and its child the forked one or the app.
			pids := []int{in.PID, onlyChild(t, in.PID)}
			// Registered before any wait that may fail the test: the
			// stubborn process would outlive it, and the runner's stop
			// would wait out the hour of stop_timeout. The report, after
			// it, runs first.
			t.Cleanup(func() {
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the instance's processes: %s; %s; its output: %q", procReport(pids[0]), procReport(pids[1]), tr.lines("forker"))
				}
			})
			// Signalled earlier, the stubborn probe would end at once.
			testutil.Eventually(t, 10*time.Second, "SIGTERM ignored", func() bool { return ignoresTERM(pids[1]) })

			go tr.stop()
			tr.wait(t, "forker", "stopping", allIn(1, state.Stopping))
			tr.Kill()
			// SIGKILLed processes leave their cgroup before they finish
			// exiting (a pid namespace's init waits for its children), so
			// they are waited for; without Kill they would run for the
			// hour of stop_timeout.
			for _, pid := range pids {
				testutil.Eventually(t, 10*time.Second, fmt.Sprintf("process %d of the instance ended after Kill", pid), func() bool { return !alive(pid) })
			}
		})
	}
}

// procReport says what the test needs to know of pid when the instance did
// not behave as expected: whether it still runs, what it runs, where it
// waits, and its signal dispositions.
func procReport(pid int) string {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Sprintf("pid %d: %v", pid, err)
	}
	var fields []string
	for l := range strings.Lines(string(status)) {
		for _, name := range []string{"State:", "PPid:", "SigBlk:", "SigIgn:", "SigCgt:"} {
			if v, ok := strings.CutPrefix(l, name); ok {
				fields = append(fields, name+strings.TrimSpace(v))
			}
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	return fmt.Sprintf("pid %d %q waiting in %q: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " "), wchan, strings.Join(fields, " "))
}

// ignoresTERM says whether pid ignores SIGTERM (SigIgn of its status).
func ignoresTERM(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for l := range strings.Lines(string(b)) {
		if mask, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
			return err == nil && m&(1<<(syscall.SIGTERM-1)) != 0
		}
	}
	return false
}
