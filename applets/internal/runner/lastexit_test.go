package runner

import (
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An app that crashes and comes back healthy keeps why it ended as its
// reason, also when its health check failed while it started again: a
// status read between two crashes of a loop must not show a healthy
// instance with nothing to say.
func TestLastExitOutlivesStartupChecks(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	// bind listens only after a moment, so the first checks of each
	// process fail.
	c.deploy(t, "late", "1.0.0", probeBin, "args = [\"bind\", \""+addr+"\"]\n[health]\ntype = \"tcp\"\nport = "+port+"\n")
	first := tr.wait(t, "late", "healthy", allIn(1, state.Healthy))[0]
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "late", "healthy again", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Healthy && l[0].PID != first.PID
	})[0]
	if !strings.HasPrefix(again.Reason, "last exit: ") || !strings.Contains(again.Reason, "kill") {
		t.Errorf("healthy again with reason %q, want the last exit", again.Reason)
	}
}
