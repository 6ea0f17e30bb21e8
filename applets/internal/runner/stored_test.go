package runner

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// putStoredSpec uploads bin and stores the spec as an earlier narun ctl
// did, with no check of today's: the smallest spec for node n1, extra,
// and the [binaries] table ctl deploy appends.
func (c *cluster) putStoredSpec(t *testing.T, app, bin, extra string) {
	t.Helper()
	object := c.upload(t, app, "1.0.0", bin)
	raw := fmt.Sprintf("name = %q\nversion = \"1.0.0\"\nnodes = [%q]\n%s\n[binaries.%s]\nobject = %q\nsha256 = %q\n",
		app, node, extra, runtime.GOARCH, object, fileDigest(t, bin))
	if _, err := c.apps.Put(context.Background(), app, []byte(raw)); err != nil {
		t.Fatal(err)
	}
}

// A spec an earlier ctl stored, which today's deploy refuses (a zero
// stop_timeout, env given as a string), still runs after the node
// upgrades, and the runner says once what a redeploy must fix.
func TestStoredSpecOfEarlierCtlRuns(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.putStoredSpec(t, "legacy", helloBin, "stop_timeout = \"0s\"\nenv = \"A=1\"\n")
	in := tr.wait(t, "legacy", "1 healthy", allIn(1, state.Healthy))[0]
	if !alive(in.PID) {
		t.Fatalf("instance %+v: process not alive", in)
	}
	const warning = "stored spec breaks rules narun ctl deploy now enforces"
	logs := tr.logs.String()
	for _, want := range []string{warning, "app=legacy", `key \"stop_timeout\"`, `key \"env\"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("runner log lacks %s:\n%s", want, logs)
		}
	}

	// Each wake reconciles the same spec again: no new warning. Waiting
	// for the second wake's reconcile line means the first one finished.
	tr.mu.Lock()
	a := tr.apps["legacy"]
	tr.mu.Unlock()
	const reconcile = "msg=reconcile node=" + node + " app=legacy"
	for range 2 {
		before := strings.Count(tr.logs.String(), reconcile)
		a.poke()
		testutil.Eventually(t, 10*time.Second, "a reconcile", func() bool {
			return strings.Count(tr.logs.String(), reconcile) > before
		})
	}
	if n := strings.Count(tr.logs.String(), warning); n != 1 {
		t.Errorf("warning logged %d times, want once per stored spec", n)
	}
}

// A stored spec with group root for another user cannot run any more (the
// sandbox refuses gid 0 without root): its instance fails, saying why in
// the spec's words.
func TestStoredSpecWithGroupRootFails(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	c.putStoredSpec(t, "rootgroup", probeBin, "mode = \"sandbox\"\n[sandbox]\ngroup = \"root\"\n")
	in := tr.wait(t, "rootgroup", "failed", allIn(1, state.Failed))[0]
	if want := `sandbox group "root" is gid 0, root's group, which only user = "root" may run as`; !strings.Contains(in.Reason, want) || in.Restarts != 0 {
		t.Errorf("instance %+v: want failed at once with reason %q", in, want)
	}
}
