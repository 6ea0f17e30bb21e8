package runner

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// A runner that stops gives each instance its stop_timeout, which may be
// long, while NATS still answers (narun up stops its server last): its
// heartbeats go on meanwhile, so that narun ctl app status shows the
// instances stopping, as for any other stop, and not healthy, then
// unknown, as the last heartbeat before the stop had them.
func TestHeartbeatsWhileStopping(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "stubborn", "1.0.0", probeBin, "args = [\"stubborn\"]\nstop_timeout = \"10m\"\n")
	in := tr.wait(t, "stubborn", "healthy", allIn(1, state.Healthy))[0]
	tr.waitLine(t, "stubborn", ignoringTERM)
	// Before the runner's own cleanup, which would wait out the stop.
	t.Cleanup(func() { _ = syscall.Kill(in.PID, syscall.SIGKILL) })
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tr.stop()
	}()
	testutil.Eventually(t, 10*time.Second, "a heartbeat with the instance stopping", func() bool {
		var n state.Node
		e, err := c.nodes.Get(context.Background(), node)
		return err == nil && json.Unmarshal(e.Value(), &n) == nil && len(n.Instances) == 1 && n.Instances[0].State == state.Stopping
	})
	// The process ignores SIGTERM: the kill ends the stop now.
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-stopped
	if _, err := c.nodes.Get(context.Background(), node); err == nil {
		t.Error("heartbeat left behind by the stopped runner")
	}
}
