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
	if !withSandbox {
		// The probe's note would say why the kernel can or cannot, which
		// is not why this runner does not.
		c.Sandbox, c.SandboxNote = false, ownFactoryNote
	}
	return c
}

// ownFactoryNote is why a runner given Options.Command runs no sandbox.
const ownFactoryNote = "this runner starts instances with a command factory of its own, which runs no sandbox launcher"
