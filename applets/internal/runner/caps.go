package runner

import (
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/sandbox"
)

// probeCapabilities reports the isolation features of this kernel, for the
// heartbeat: operators see which nodes can run sandboxed apps. withSandbox
// says whether this runner has a sandbox command factory at all.
func probeCapabilities(withSandbox bool) state.Capabilities {
	p := sandbox.Probe()
	return state.Capabilities{
		LandlockABI:       p.LandlockABI,
		LandlockEnforced:  p.LandlockEnforced,
		CgroupVersion:     p.CgroupVersion,
		CgroupControllers: p.CgroupControllers,
		Namespaces:        p.Namespaces,
		UserNamespaces:    p.UserNamespaces,
		Sandbox:           p.Sandbox && withSandbox,
	}
}
