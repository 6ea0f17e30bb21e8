package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// otherNode is a node the specs of storedSpec do not select.
const otherNode = "edge-3"

// applied tells whether the runner read app's spec and, for one it runs,
// got as far as its instances.
func (tr *testRunner) applied(app string) bool {
	tr.mu.Lock()
	a := tr.apps[app]
	tr.mu.Unlock()
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current != nil
}

// A node an app's spec does not select keeps no cached spec of it: a
// restart that cannot read narun-apps (JetStream electing a leader) would
// count it among the apps it starts from the cache, and, were the store
// to lose it, say that it runs it from there. A node whose spec stops
// selecting it (replicas = 0 here) drops its cached spec too, as the last
// spec it ran is no longer one to start.
func TestSpecNotSelectingNodeNotCached(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	other := startRunner(t, c, func(o *Options) { o.Config.NodeID = otherNode })
	here := startRunner(t, c, nil)
	here.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 30*time.Second, "hello read on "+otherNode, func() bool { return other.applied("hello") })
	// A runner stops once each app's goroutine finished what it applied.
	other.stop()
	if _, err := os.Stat(filepath.Join(other.dir, "specs", "hello.toml")); !os.IsNotExist(err) {
		t.Errorf("cached spec of an app that does not select %s: %v, want none", otherNode, err)
	}

	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 0\n")
	here.wait(t, "hello", "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	here.stop()
	if _, err := os.Stat(filepath.Join(here.dir, "specs", "hello.toml")); !os.IsNotExist(err) {
		t.Errorf("cached spec of an app with no replica here: %v, want none", err)
	}
}

// A data dir that an earlier release left a cached spec in of an app
// that does not select this node: a start that cannot read narun-apps
// counts only the apps it will start.
func TestCachedSpecNotSelectingNodeNotCounted(t *testing.T) {
	t.Parallel()
	nc := natstest.StartWithoutJetStream(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "specs"), 0o750); err != nil {
		t.Fatal(err)
	}
	raw := storedSpec(t, "hello", "1.0.0", "hello/1.0.0/linux", strings.Repeat("ab", 32), "")
	if err := os.WriteFile(filepath.Join(dir, "specs", "hello.toml"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := runWithoutJetStream(t, nc, otherNode, dir)
	testutil.Eventually(t, 20*time.Second, "a warning that narun-apps was not read", func() bool {
		return strings.Contains(logs.String(), "narun-apps not read in time")
	})
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "narun-apps not read in time") && !strings.Contains(l, "no app specs cached for this node") {
			t.Errorf("warning counts an app that does not select %s: %s", otherNode, l)
		}
	}
}

// A node that ran nothing of an app, and cached nothing of it, does not
// say that it deleted it: the deletion of one app would be logged by
// every node of the cluster.
func TestDeletionOfAppNotRunHereNotLogged(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	other := startRunner(t, c, func(o *Options) { o.Config.NodeID = otherNode })
	testutil.Eventually(t, 30*time.Second, "hello read on "+otherNode, func() bool { return other.applied("hello") })
	c.remove(t, "hello")
	testutil.Eventually(t, 30*time.Second, "hello forgotten on "+otherNode, func() bool {
		other.mu.Lock()
		defer other.mu.Unlock()
		return other.apps["hello"] == nil
	})
	if strings.Contains(other.logs.String(), `level=INFO msg="app deleted"`) {
		t.Errorf("%s logs the deletion of an app it never ran:\n%s", otherNode, other.logs.String())
	}
}

// A narun-apps that lost its entries has no record of an app: a node that
// runs it says that it runs it from its cached spec, and one that runs
// nothing of it, with no cached spec of it, says nothing of the kind.
func TestAppLostByStoreNotClaimedWhereNotRun(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	src := fmt.Sprintf("name = \"probe\"\nversion = \"1.0.0\"\nnodes = [%q]\n", otherNode)
	probe, err := spec.WithBinaries("probe.toml", []byte(src), map[string]spec.Binary{
		runtime.GOARCH: {Object: c.upload(t, "probe", "1.0.0", probeBin), SHA256: fileDigest(t, probeBin)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.apps.Put(context.Background(), "probe", probe); err != nil {
		t.Fatal(err)
	}
	other := startRunner(t, c, func(o *Options) {
		o.Config.NodeID = otherNode
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	other.wait(t, "probe", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 30*time.Second, "hello read on "+otherNode, func() bool { return other.applied("hello") })
	c.recreateApps(t)
	// Both apps are judged in one pass, hello first.
	testutil.Eventually(t, 30*time.Second, "probe said to run from its cached spec", func() bool {
		return strings.Contains(other.logs.String(), `narun-apps has no record of this app, neither its spec nor its deletion: the NATS store lost it (a damaged or replaced JetStream directory); it runs from its cached spec. Deploy it again to store it, or delete it with narun ctl app delete" node=edge-3 app=probe`)
	})
	for l := range strings.Lines(other.logs.String()) {
		if strings.Contains(l, "narun-apps has no record of this app") && strings.Contains(l, "app=hello") {
			t.Errorf("%s says it runs an app it never ran from its cached spec: %s", otherNode, l)
		}
	}
}

// A spec refused as narun-apps stored it (here: stored under another
// app's name) left nothing running and nothing cached: once the store
// loses its entries, the node does not say that a cached spec of it is
// damaged, which every node of the cluster would say, naming a file it
// does not have.
func TestStoreRefusedSpecNotCalledDamagedCache(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	junk := storedSpec(t, "hello", "1.0.0", c.upload(t, "hello", "1.0.0", helloBin), fileDigest(t, helloBin), "")
	if _, err := c.apps.Put(context.Background(), "junk", junk); err != nil {
		t.Fatal(err)
	}
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(50 * time.Millisecond) })
	tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 30*time.Second, "junk refused", func() bool {
		return strings.Contains(tr.logs.String(), `msg="spec not applied; instances left as they are" node=n1 app=junk`)
	})
	c.recreateApps(t)
	// Both apps are judged in one pass, junk first.
	testutil.Eventually(t, 30*time.Second, "probe said to run from its cached spec", func() bool {
		return strings.Contains(tr.logs.String(), `it runs from its cached spec. Deploy it again to store it, or delete it with narun ctl app delete" node=n1 app=probe`)
	})
	for l := range strings.Lines(tr.logs.String()) {
		if strings.Contains(l, "cached spec is damaged") && strings.Contains(l, "app=junk") {
			t.Errorf("a spec refused from narun-apps is said to be a damaged cached spec: %s", l)
		}
	}
}
