package runner

import (
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An app with routes but no [http] port is checked by a NATS Micro ping;
// one that serves plain HTTP never answers it, and its developer must learn
// why from the reason rather than from a bare "context deadline exceeded".
func TestMicroCheckOfPlainHTTPAppNamesHTTPPort(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	c.deploy(t, "plain", "1.0.0", probeBin, "args = [\"listen\", \""+addr+"\"]\n[health]\nstart_grace = \"1s\"\n[[routes]]\npath = \"/plain/\"\n")
	tr.wait(t, "plain", "a reason naming [http] port", func(l []state.Instance) bool {
		return len(l) == 1 && strings.Contains(l[0].Reason, `NATS Micro service "plain"`) && strings.Contains(l[0].Reason, "[http] port")
	})
}
