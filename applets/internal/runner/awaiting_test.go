package runner

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// A runner's heartbeats say it is awaiting the app specs until it has read
// them once, and stop saying so then: ctl shows such a node as starting,
// not as one that runs none of the app.
func TestHeartbeatSaysWhenTheSpecsAreRead(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	var before state.Node
	tr := startTunedRunner(t, c, nil, func(r *Runner) { before = r.nodeState() })
	if !before.AwaitingSpecs {
		t.Error("a runner that has not run says it has read the app specs")
	}
	tr.wait(t, "hello", "1 healthy", allIn(1, state.Healthy))
	// The instance may start before the listing ends (the watch applies
	// each spec as it comes): only a later heartbeat has it read.
	testutil.Eventually(t, 10*time.Second, "a heartbeat with the specs read", func() bool {
		var n state.Node
		e, err := c.nodes.Get(context.Background(), node)
		return err == nil && json.Unmarshal(e.Value(), &n) == nil && !n.AwaitingSpecs && len(n.Instances) == 1
	})
}
