package runner

import (
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

// stubbornDaemon is the spec of an app whose daemon ignores SIGTERM: a
// stop kills it once the stop timeout, short here, is over.
const stubbornDaemon = "args = [\"daemon\"]\nstop_timeout = \"200ms\"\n"

// cgroupRunner starts a cluster and a runner on it that makes cgroups for
// its exec instances, or skips the test where it cannot.
func cgroupRunner(t *testing.T) (*cluster, *testRunner) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	if tr.caps.CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	return c, tr
}

// deployDaemon runs the exec app with spec, a probe in mode daemon that
// starts a daemon (setsid and a double fork, so the daemon is in neither
// its process group nor its session), and returns the daemon's pid,
// killed at the end of the test.
func deployDaemon(t *testing.T, c *cluster, tr *testRunner, app, spec string) int {
	t.Helper()
	c.deploy(t, app, "1.0.0", probeBin, spec)
	tr.waitLine(t, app, "probe: ready")
	pid := 0
	for _, l := range tr.lines(app) {
		if f, ok := strings.CutPrefix(l, "daemon "); ok {
			pid, _ = strconv.Atoi(f)
		}
	}
	if pid <= 0 {
		t.Fatalf("no daemon pid in %q", tr.lines(app))
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitDead(t, []int{pid})
	})
	return pid
}

// A node that can make cgroups runs each exec instance in one of its own,
// as systemd runs a service: the daemon the app started, which ignores
// SIGTERM, is killed when the instance's stop timeout is over, and the
// cgroup goes with it.
func TestExecInstanceStopsItsDaemon(t *testing.T) {
	t.Parallel()
	c, tr := cgroupRunner(t)
	pid := deployDaemon(t, c, tr, "daemonic", stubbornDaemon)
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
	pid := deployDaemon(t, c, tr, "daemonic", stubbornDaemon)
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

// A runner killed outright (SIGKILL, a crash) takes its instances' first
// processes along, but not a daemon that left the process group: the next
// runner on the data dir kills it with what is left in its cgroup, before
// it starts anything.
func TestNextRunnerKillsDaemonOfKilledRunner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	if sandbox.Probe().CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	natsDir := t.TempDir()
	srv := natstest.StartConfig(t, embednats.Config{Listen: testutil.FreeAddr(t), DataDir: natsDir})
	c := newCluster(t, srv)
	c.deploy(t, "daemonic", "1.0.0", probeBin, stubbornDaemon)
	data := t.TempDir()
	// Last of the cleanups: whatever a failure left in the runner's
	// cgroups goes, processes and all.
	t.Cleanup(func() {
		if err := sandbox.RemoveScope(cgroupScope(data)); err != nil {
			t.Error(err)
		}
	})
	first := startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	// The daemon is found in its instance's cgroup, the only place that
	// still ties it to the instance once its runner is gone.
	instances := filepath.Join(sandbox.CgroupParent, cgroupScope(data), "daemonic.*", "cgroup.procs")
	var daemon int
	testutil.Eventually(t, 30*time.Second, "the app and its daemon in the instance's cgroup", func() bool {
		files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", instances))
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", instances))
		if files = append(files, v2...); len(files) == 0 {
			return false
		}
		b, _ := os.ReadFile(files[0])
		// Known by its arguments: telling it by its parent races with
		// the session leader's exit, whose pid, once reaped, has no
		// parent to read either.
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			args, _ := os.ReadFile("/proc/" + f + "/cmdline")
			if strings.HasSuffix(string(args), "\x00stubborn\x00") && alive(pid) {
				daemon = pid
			}
		}
		return daemon > 0
	})
	t.Cleanup(func() {
		_ = syscall.Kill(daemon, syscall.SIGKILL)
		waitDead(t, []int{daemon})
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	if !alive(daemon) {
		t.Fatalf("daemon %d died with the runner: the test shows nothing", daemon)
	}
	second := startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	waitDead(t, []int{daemon})
	// Stopped as a service is, it kills the daemon its own instance
	// started, and removes the cgroups.
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the second runner did not stop")
	}
	if left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", sandbox.CgroupParent, cgroupScope(data))); len(left) > 0 {
		t.Errorf("the runner left its cgroups: %q", left)
	}
}

// A stop gives the stop timeout to every process of the instance's cgroup,
// as systemd does, not only to its first: a daemon that takes a while to
// flush once told to stop is not killed as the app that started it exits
// at the stop signal.
func TestExecStopGraceCoversDaemon(t *testing.T) {
	t.Parallel()
	c, tr := cgroupRunner(t)
	dir := t.TempDir()
	// An hour: the daemon's grace ends when it does, not with the timeout.
	pid := deployDaemon(t, c, tr, "flusher", fmt.Sprintf("args = [\"daemon\", \"flush\", %q]\nstop_timeout = \"1h\"\n", dir))
	tr.wait(t, "flusher", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 10*time.Second, "the daemon ready for SIGTERM", func() bool {
		_, err := os.Stat(filepath.Join(dir, "ready"))
		return err == nil
	})
	c.remove(t, "flusher")
	tr.wait(t, "flusher", "gone", func(l []state.Instance) bool { return len(l) == 0 })
	for _, f := range []string{"term", "flushed"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the daemon did not get to write %s before it was killed: %v", f, err)
		}
	}
	waitDead(t, []int{pid})
	if logs := tr.logs.String(); strings.Contains(logs, "stop timeout") {
		t.Errorf("the stop timed out:\n%s", logs)
	}
}

// An exec instance whose process ends on its own (a crash) leaves its
// daemon the stop signal and the stop timeout, as systemd stops what a
// service's main process left, before the instance is started again.
func TestExecExitGraceCoversDaemon(t *testing.T) {
	t.Parallel()
	c, tr := cgroupRunner(t)
	dir := t.TempDir()
	pid := deployDaemon(t, c, tr, "crasher", fmt.Sprintf("args = [\"daemon\", \"flush\", %q]\nstop_timeout = \"1h\"\n", dir))
	first := tr.wait(t, "crasher", "healthy", allIn(1, state.Healthy))[0]
	testutil.Eventually(t, 10*time.Second, "the daemon ready for SIGTERM", func() bool {
		_, err := os.Stat(filepath.Join(dir, "ready"))
		return err == nil
	})
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDead(t, []int{first.PID})
	testutil.Eventually(t, 30*time.Second, "the daemon to flush", func() bool {
		_, err := os.Stat(filepath.Join(dir, "flushed"))
		return err == nil
	})
	waitDead(t, []int{pid})
	tr.wait(t, "crasher", "restarted", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Healthy && l[0].PID != first.PID
	})
	// The instance started again starts a daemon of its own, which must
	// handle SIGTERM before the runner stops at the end of the test: one
	// started after the stop signal went out would wait for the hour.
	testutil.Eventually(t, 10*time.Second, "the new daemon ready for SIGTERM", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "ready"))
		return len(b) > 0 && string(b) != strconv.Itoa(pid)
	})
	if logs := tr.logs.String(); strings.Contains(logs, "stop timeout") {
		t.Errorf("the daemon was killed, not given its grace:\n%s", logs)
	}
}

// A health check's port held by a daemon of the instance, outside its
// process tree and group but in its cgroup, is the instance's.
func TestHealthCheckPortHeldByDaemon(t *testing.T) {
	t.Parallel()
	c, tr := cgroupRunner(t)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	deployDaemon(t, c, tr, "served", fmt.Sprintf("args = [\"daemon\", \"stubborn\", %q]\nstop_timeout = \"200ms\"\n[http]\nport = %s\n", addr, port))
	tr.wait(t, "served", "healthy", allIn(1, state.Healthy))
	if strings.Contains(tr.logs.String(), "cannot tell") {
		t.Errorf("the check did not find the listener's owner:\n%s", tr.logs.String())
	}
}

// The memory an exec instance reports is its cgroup's, as a sandboxed
// one's: a daemon it started counts.
func TestExecMetricsCountDaemon(t *testing.T) {
	t.Parallel()
	c, tr := cgroupRunner(t)
	const held = 64 << 20
	deployDaemon(t, c, tr, "hoarder", "args = [\"daemon\", \"hold\", \"64\"]\nstop_timeout = \"200ms\"\n")
	in := tr.wait(t, "hoarder", "healthy", allIn(1, state.Healthy))[0]
	if own, err := procUsage(in.PID); err != nil || own.rss >= held {
		t.Fatalf("the app's own resident memory is %d (%v): the test shows nothing", own.rss, err)
	}
	srv := httptest.NewServer(tr.AdminHandler())
	defer srv.Close()
	prefix := fmt.Sprintf(`narun_runner_instance_resident_memory_bytes{app="hoarder",instance="%s",node="%s"} `, in.ID, node)
	testutil.Eventually(t, 20*time.Second, "the daemon's memory in the instance's", func() bool {
		metrics := get(t, srv.URL+"/metrics")
		i := strings.Index(metrics, prefix)
		if i < 0 {
			t.Fatalf("metrics lack the memory of %s:\n%s", in.ID, metrics)
		}
		rss, _ := strconv.ParseFloat(strings.Fields(metrics[i+len(prefix):])[0], 64)
		return rss >= held
	})
}
