package runner

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// limitsRunner starts a runner for mode, exec or sandbox, on a node
// whose cgroups hold [resources].
func limitsRunner(t *testing.T, c *cluster, mode string) *testRunner {
	t.Helper()
	if mode == "sandbox" {
		return startSandboxRunner(t, c, nil)
	}
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	tr := startRunner(t, c, nil)
	if tr.caps.CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	return tr
}

// A worker the kernel killed at the memory limit is not the instance: the
// instance's own exit stays its reason, a clean one included, and the
// kill is told after it.
func TestChildOOMKeepsExitStatus(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"exec", "sandbox"} {
		for _, code := range []string{"1", "0"} {
			t.Run(mode+"-exit"+code, func(t *testing.T) {
				t.Parallel()
				c := newCluster(t, nil)
				ev := c.watchEvents(t, "worker")
				limitsRunner(t, c, mode)
				c.deploy(t, "worker", "1.0.0", probeBin, "mode = \""+mode+"\"\nargs = [\"childoom\", \""+code+"\"]\n"+
					"[resources]\nmemory = \"32MiB\"\n[restart]\npolicy = \"on-failure\"\ninitial_backoff = \"10ms\"\n")
				// A clean exit stays one: stopped, not crashed.
				end := state.Crashed
				if code == "0" {
					end = state.Stopped
				}
				want := "exit status " + code + "; a process of the instance was OOM-killed at its memory limit of 32MiB ([resources] memory)"
				testutil.Eventually(t, 20*time.Second, "a "+string(end)+" event with reason "+want, func() bool {
					return slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.State == end && e.Reason == want })
				})
				for _, e := range ev.list() {
					if strings.HasPrefix(e.Reason, "oom") {
						t.Errorf("event %s with reason %q: the instance was not OOM-killed", e.State, e.Reason)
					}
				}
			})
		}
	}
}

// A Go app that cannot start its threads under the pids limit exits 2
// with the runtime's word only in its logs: the reason names the limit.
func TestPidsLimitNamed(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"exec", "sandbox"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, nil)
			ev := c.watchEvents(t, "threads")
			limitsRunner(t, c, mode)
			c.deploy(t, "threads", "1.0.0", probeBin, "mode = \""+mode+"\"\n[resources]\npids = 3\n[restart]\ninitial_backoff = \"10ms\"\n")
			const want = "; hit its pids limit of 3 ([resources] pids)"
			testutil.Eventually(t, 20*time.Second, "an event whose reason ends "+want, func() bool {
				return slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.State == state.Crashed && strings.HasSuffix(e.Reason, want) })
			})
		})
	}
}
