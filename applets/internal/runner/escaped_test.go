package runner

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
)

// A process of an exec instance that left its process group (a daemon)
// outlives the instance, as the spec says; the node's journal names it,
// so that its developer learns of it before the node fills with them.
func TestEscapedProcessNamed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
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
	c.remove(t, "daemonic")
	testutil.Eventually(t, 10*time.Second, "a warning naming the daemon", func() bool {
		logs := tr.logs.String()
		i := strings.Index(logs, "processes left the instance's process group")
		return i >= 0 && strings.Contains(logs[i:], strconv.Itoa(pid))
	})
}
