package runner

import (
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
)

// A runner given a command factory of its own runs no sandbox, whatever
// the kernel could: its heartbeat says why, not what the probe found, and
// a sandbox app's failure names that reason.
func TestOwnCommandFactoryNamesWhyNoSandbox(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Command = supervisor.Exec })
	if tr.caps.Sandbox || tr.caps.SandboxNote != ownFactoryNote {
		t.Errorf("capabilities: sandbox %v, note %q; want false, %q", tr.caps.Sandbox, tr.caps.SandboxNote, ownFactoryNote)
	}
	c.deploy(t, "boxed", "1.0.0", probeBin, "mode = \"sandbox\"\n")
	in := tr.wait(t, "boxed", "failed", allIn(1, state.Failed))[0]
	if want := "sandbox mode not available on this node (it needs root and the pid, mount, ipc, uts and net namespaces): " + ownFactoryNote; !strings.Contains(in.Reason, want) {
		t.Errorf("reason %q, want it to say %q", in.Reason, want)
	}
}
