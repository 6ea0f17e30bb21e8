package runner

import (
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/sandbox"
)

// probeCapabilities reports the isolation features of this kernel, for the
// heartbeat: operators see which nodes can run sandboxed apps. withSandbox
// says whether this runner has a sandbox command factory at all.
func probeCapabilities(withSandbox bool) state.Capabilities {
	c := sandbox.Probe()
	c.Sandbox = c.Sandbox && withSandbox
	return c
}
