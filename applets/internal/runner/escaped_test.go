package runner

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// deployDaemon runs an exec app whose process starts a daemon (setsid and
// a double fork, so the daemon is in neither its process group nor its
// session) and returns the daemon's pid, killed at the end of the test.
func deployDaemon(t *testing.T, c *cluster, tr *testRunner) int {
	t.Helper()
	c.deploy(t, "daemonic", "1.0.0", probeBin, `args = ["daemon"]`)
	tr.waitLine(t, "daemonic", "probe: ready")
	pid := 0
	for _, l := range tr.lines("daemonic") {
		if f, ok := strings.CutPrefix(l, "daemon "); ok {
			pid, _ = strconv.Atoi(f)
		}
	}
	if pid <= 0 {
		t.Fatalf("no daemon pid in %q", tr.lines("daemonic"))
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitDead(t, []int{pid})
	})
	return pid
}

// A node that can make cgroups runs each exec instance in one of its own,
// as systemd runs a service: the daemon the app started, which ignores
// SIGTERM, is killed when the instance stops, and the cgroup goes with it.
func TestExecInstanceStopsItsDaemon(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	if tr.caps.CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	pid := deployDaemon(t, c, tr)
	in := tr.wait(t, "daemonic", "running", allIn(1, state.Healthy))[0]
	cgroup := tr.instanceCgroup(InstanceLaunch{App: "daemonic", Instance: in.ID})
	own, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !strings.Contains(string(own), "/"+cgroup+"\n") {
		t.Fatalf("daemon %d is in the cgroups %q (%v), not in %s", pid, own, err, cgroup)
	}
	c.remove(t, "daemonic")
	waitDead(t, []int{pid})
	testutil.Eventually(t, 10*time.Second, "the instance's cgroup removed", func() bool {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cgroup))
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", cgroup))
		return len(dirs)+len(v2) == 0
	})
	if logs := tr.logs.String(); strings.Contains(logs, "processes left the instance's process group") {
		t.Errorf("the daemon was reported as outliving the instance:\n%s", logs)
	}
}

// Where no cgroup can be made, a process of an exec instance that left its
// process group (a daemon) outlives the instance, as the spec says; the
// node's journal says why, and names the daemon, so that its developer
// learns of it before the node fills with them.
func TestEscapedProcessNamedWithoutCgroups(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		// A node without a cgroup hierarchy, as the runner sees it.
		r.caps.CgroupVersion = 0
	})
	pid := deployDaemon(t, c, tr)
	c.remove(t, "daemonic")
	testutil.Eventually(t, 10*time.Second, "a warning naming the daemon", func() bool {
		logs := tr.logs.String()
		i := strings.Index(logs, "processes left the instance's process group")
		return i >= 0 && strings.Contains(logs[i:], strconv.Itoa(pid))
	})
	if !alive(pid) {
		t.Errorf("daemon %d was stopped without a cgroup", pid)
	}
	if !strings.Contains(tr.logs.String(), "exec instances run without a cgroup of their own") {
		t.Error("the journal does not say that exec instances run without cgroups")
	}
}
