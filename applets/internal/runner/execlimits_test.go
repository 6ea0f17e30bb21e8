package runner

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An exec instance's cgroup holds the spec's [resources]: the kernel kills
// an app at its memory limit, which its reason names, and its pids limit
// is written where the kernel reads it.
func TestExecLimits(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hog")
	tr := startRunner(t, c, nil)
	if tr.caps.CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	c.deploy(t, "capped", "1.0.0", probeBin, "[resources]\npids = 64\n")
	in := tr.wait(t, "capped", "healthy", allIn(1, state.Healthy))[0]
	cgroup := tr.instanceCgroup(InstanceLaunch{App: "capped", Instance: in.ID})
	files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cgroup, "pids.max"))
	v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", cgroup, "pids.max"))
	if files = append(files, v2...); len(files) != 1 {
		t.Fatalf("pids.max of %s: found %q", cgroup, files)
	}
	if b, err := os.ReadFile(files[0]); err != nil || strings.TrimSpace(string(b)) != "64" {
		t.Errorf("%s = %q (%v), want 64", files[0], b, err)
	}

	c.deploy(t, "hog", "1.0.0", probeBin, "args = [\"alloc\"]\n[resources]\nmemory = \"32MiB\"\n[restart]\ninitial_backoff = \"10ms\"\n")
	const oom = "oom: killed at its memory limit of 32MiB ([resources] memory)"
	testutil.Eventually(t, 20*time.Second, "an oom event", func() bool {
		return slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.State == state.Crashed && e.Reason == oom })
	})
	// An alert on OOM kills needs them in /metrics, not only in events.
	kills := regexp.MustCompile(`narun_runner_instance_oom_kills_total\{app="hog",[^}]*\} ([1-9][0-9]*)\n`)
	if m := scrape(t, tr); !kills.MatchString(m) {
		t.Errorf("/metrics counts no OOM kill of hog:\n%s", m)
	}
}

// A runner that is not root makes neither cgroups nor sandboxes: the
// journal's word on exec instances without a cgroup points at root, not
// at mode = "sandbox", which fails on that node.
func TestNoCgroupWarningWithoutSandbox(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		// A runner that is not root, as it sees itself.
		r.caps.CgroupVersion = 0
		r.caps.Sandbox = false
	})
	c.deploy(t, "plain", "1.0.0", probeBin, "")
	const warning = "exec instances run without a cgroup of their own"
	testutil.Eventually(t, 10*time.Second, "the warning", func() bool { return strings.Contains(tr.logs.String(), warning) })
	logs := tr.logs.String()
	line := logs[strings.Index(logs, warning):]
	line, _, _ = strings.Cut(line, "\n")
	if strings.Contains(line, `mode = \"sandbox\"`) || !strings.Contains(line, "a runner run as root makes the cgroup") {
		t.Errorf("warning %q: want it to point at root, not at the sandbox", line)
	}
}

// A node that cannot make the cgroup fails an exec instance with limits,
// saying why, rather than run it without them.
func TestExecLimitsWithoutCgroupsFail(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		// A node without a cgroup hierarchy, as the runner sees it.
		r.caps.CgroupVersion = 0
	})
	c.deploy(t, "capped", "1.0.0", probeBin, "[resources]\nmemory = \"64MiB\"\n")
	in := tr.wait(t, "capped", "failed", allIn(1, state.Failed))[0]
	if want := "[resources] limits need a cgroup of the instance's own, and this node cannot make one"; !strings.Contains(in.Reason, want) {
		t.Errorf("reason %q, want it to say %q", in.Reason, want)
	}
}
