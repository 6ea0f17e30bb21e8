package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// Instances of an [http] port app in network namespaces of their own
// cannot clash on the port: they roll as any other app, a slot at a time,
// the new instance healthy before the old one stops. Stopped first, as on
// the host network, both replicas were down at once.
func TestSandboxHTTPAppRollsWithoutGap(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "plain")
	tr := startSandboxRunner(t, c, nil)
	const plain = "mode = \"sandbox\"\nreplicas = 2\nargs = [\"--http\", \"127.0.0.1:8080\"]\n" +
		"[sandbox]\nnetwork = \"none\"\n[http]\nport = 8080\n" + takeOverAtOnce
	c.deploy(t, "plain", "1.0.0", helloBin, plain)
	old := tr.wait(t, "plain", "2 healthy", allIn(2, state.Healthy))
	c.deploy(t, "plain", "1.1.0", helloBin, plain)
	tr.wait(t, "plain", "rolled to 1.1.0", func(l []state.Instance) bool {
		return allIn(2, state.Healthy)(l) && l[0].Version == "1.1.0" && l[1].Version == "1.1.0"
	})
	stopped := func(id string) func(state.Event) bool {
		return func(e state.Event) bool { return e.ID == id && e.State == state.Stopped }
	}
	testutil.Eventually(t, 10*time.Second, "the old instances' stop events", func() bool {
		l := ev.list()
		return slices.ContainsFunc(l, stopped(old[0].ID)) && slices.ContainsFunc(l, stopped(old[1].ID))
	})

	// From the moment both old instances are healthy, some instance is
	// healthy after every event.
	healthy := map[string]bool{}
	var seen []string
	both := false
	for _, e := range ev.list() {
		healthy[e.ID] = e.State == state.Healthy
		seen = append(seen, fmt.Sprintf("%s %s %s", e.Version, e.ID, e.State))
		n := 0
		for _, h := range healthy {
			if h {
				n++
			}
		}
		if !both {
			both = n == 2
			continue
		}
		if n == 0 {
			t.Fatalf("no instance healthy after event %d; events:\n%s", len(seen), strings.Join(seen, "\n"))
		}
	}
}

// On the host network an [http] port app's old instance must stop before
// the new one can listen; a new version that never turns healthy must not
// leave the app down for good: the old revision is started again.
func TestHostHTTPAppRollsBackFromFailingVersion(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "plain")
	tr := startRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "plain"})
	bridged, old := serveOnHostPort(t, c, tr, "[[routes]]\npath = \"/hello/\"\n")
	rollbacks := fmt.Sprintf("narun_runner_rollbacks_total{app=\"plain\",node=%q}", node)
	// An app yet to roll back has its series at 0, for increase() to see
	// the first one.
	if m := scrape(t, tr); !strings.Contains(m, rollbacks+" 0\n") {
		t.Errorf("before any rollback, /metrics lacks %s 0:\n%s", rollbacks, m)
	}

	c.deploy(t, "plain", "1.1.0", probeBin, "args = [\"crash\"]\n"+bridged+"[restart]\nmax_failures = 1\n")
	// The stopped 1.1.0 instance is listed too, failed (rolledBack).
	back := running(tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		up := running(l)
		return allIn(1, state.Healthy)(up) && up[0].Version == "1.0.0" && up[0].ID != old.ID
	}))[0]
	if body := postHello(t, gw, "again"); !strings.Contains(body, "Hello, again") {
		t.Errorf("through the gateway after the rollback: %s", body)
	}
	if m := scrape(t, tr); !strings.Contains(m, rollbacks+" 1\n") {
		t.Errorf("after the rollback, /metrics lacks %s 1:\n%s", rollbacks, m)
	}
	if logs := tr.logs.String(); !strings.Contains(logs, "rollout halted") || !strings.Contains(logs, "started again") {
		t.Errorf("log does not say the rollout halted and the old revision started again:\n%s", logs)
	}
	events := ev.list()
	if slices.ContainsFunc(events, func(e state.Event) bool { return e.Version == "1.1.0" && e.State == state.Healthy }) {
		t.Error("the crashing version was healthy, so this tests nothing")
	}
	first := slices.IndexFunc(events, func(e state.Event) bool { return e.ID == back.ID })
	if first < 0 || !strings.Contains(events[first].Reason, "rollout of 1.1.0 halted") {
		t.Errorf("first event of the instance started again does not say why: %+v", events[max(first, 0)])
	}
}

// An old instance that did not serve is not started again for a new one
// that fails: the rollout halts on the new one, and says the app is down.
func TestHostHTTPAppHaltsWhenNeitherServes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	_, port, _ := net.SplitHostPort(testutil.FreeAddr(t))
	crash := crashLoop(t, c, tr, "1.0.0", "[http]\nport = "+port+"\n"+fastRestart)
	c.deploy(t, "plain", "1.1.0", probeBin, crash+"max_failures = 1\n")
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted: new instance not healthy, and the old one, stopped first")
	})
	if l := tr.of("plain"); len(l) != 1 || l[0].Version != "1.1.0" {
		t.Errorf("instances after the halt: %+v, want only the 1.1.0 one", l)
	}
}

// A second failing deploy that cuts the first one's health wait short must
// not take the app down: the revision that served before both is the one
// started again, not the first failing one, which never served.
func TestHostHTTPAppSecondBadDeployKeepsServingRevision(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	bridged, _ := serveOnHostPort(t, c, tr, "")

	crash := crashLoop(t, c, tr, "1.1.0", bridged+fastRestart)
	c.deploy(t, "plain", "1.2.0", probeBin, crash+"max_failures = 1\n")
	testutil.Eventually(t, 30*time.Second, "1.2.0's rollout to end", func() bool {
		return strings.Contains(tr.logs.String(), "the app is down") || slices.ContainsFunc(tr.of("plain"), func(in state.Instance) bool {
			return in.Version == "1.0.0" && in.State == state.Healthy
		})
	})
	if logs := tr.logs.String(); strings.Contains(logs, "the app is down") {
		t.Fatalf("rollout of 1.2.0 left the app down; instances: %+v", tr.of("plain"))
	}
	if up := running(tr.of("plain")); len(up) != 1 || up[0].Version != "1.0.0" {
		t.Fatalf("instances running: %+v; want only 1.0.0, which served before both bad deploys", up)
	}
}

// The binary of the revision replace would start again stays cached while
// no instance runs it: NATS may be unreachable when it is needed.
func TestHostHTTPAppKeepsBinaryOfServingRevision(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	bridged, _ := serveOnHostPort(t, c, tr, "")

	// start_grace holds the health wait open while the cache is pruned.
	crashLoop(t, c, tr, "1.1.0", bridged+"[health]\nstart_grace = \"10m\"\n"+fastRestart)
	tr.gc()
	if _, err := os.Stat(tr.cache.path(fileDigest(t, helloBin))); err != nil {
		t.Fatalf("binary of 1.0.0, to start again if 1.1.0 fails: %v", err)
	}
}

// The [[files]] objects and sealed secrets of the revision replace would
// start again stay cached too, though the new spec drops them: NATS may be
// unreachable when the old revision needs them.
func TestHostHTTPAppKeepsFilesAndSecretsOfServingRevision(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "appconf", "greeting=hi")
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	bridged := fmt.Sprintf("[http]\nport = %s\n", port)
	c.deploy(t, "plain", "1.0.0", helloBin, fmt.Sprintf("args = [\"--http\", %q]\n", addr)+bridged+
		"[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n")
	tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))

	// start_grace holds the health wait open while the cache is pruned.
	crashLoop(t, c, tr, "1.1.0", bridged+"[health]\nstart_grace = \"10m\"\n"+fastRestart)
	tr.gc()
	for _, p := range []string{filepath.Join(tr.filesDir(), "appconf"), filepath.Join(tr.fileDigestsDir(), "appconf"), filepath.Join(tr.sealedDir(), "token")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("cache entry of 1.0.0, to start again if 1.1.0 fails: %v", err)
		}
	}
}

// Moving an app on the host network to another [http] port clashes with
// nothing: the old instance serves until the new one is healthy.
func TestHostHTTPAppChangingPortRollsWithoutGap(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "plain")
	tr := startRunner(t, c, nil)
	serve := func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf("args = [\"--http\", %q]\n[http]\nport = %s\n", addr, port) + takeOverAtOnce
	}
	c.deploy(t, "plain", "1.0.0", helloBin, serve(testutil.FreeAddr(t)))
	old := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
	c.deploy(t, "plain", "1.1.0", helloBin, serve(testutil.FreeAddr(t)))
	tr.wait(t, "plain", "rolled to 1.1.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.1.0"
	})
	testutil.Eventually(t, 10*time.Second, "the old instance's stop event", func() bool {
		return slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.ID == old.ID && e.State == state.Stopped })
	})
	events := ev.list()
	stopping := slices.IndexFunc(events, func(e state.Event) bool { return e.ID == old.ID && e.State == state.Stopping })
	healthy := slices.IndexFunc(events, func(e state.Event) bool { return e.Version == "1.1.0" && e.State == state.Healthy })
	if healthy < 0 || stopping < healthy {
		var seen []string
		for _, e := range events {
			seen = append(seen, fmt.Sprintf("%s %s %s", e.Version, e.ID, e.State))
		}
		t.Fatalf("old instance stopped before the new one was healthy; events:\n%s", strings.Join(seen, "\n"))
	}
}

// running are the instances of l that have not ended.
func running(l []state.Instance) []state.Instance {
	return slices.DeleteFunc(slices.Clone(l), func(in state.Instance) bool { return in.State.Final() })
}

// ctl's --wait forgets an instance that a heartbeat stored after its last
// event no longer lists: the new instance replace stopped, still
// restarting under the default restart policy, must stay in the
// heartbeats as failed, with why, or a deploy --wait would wait for it
// until its --timeout.
func TestHostHTTPAppRollbackReportsNewInstanceFailed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	// Halt as soon as start_grace is over instead of a minute later.
	tr := startTunedRunner(t, c, nil, func(r *Runner) { r.rolloutSlack = 0 })
	bridged, old := serveOnHostPort(t, c, tr, "")

	c.deploy(t, "plain", "1.1.0", probeBin, "args = [\"crash\"]\n"+bridged+
		"[health]\nstart_grace = \"200ms\"\n"+fastRestart)
	back := running(tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		up := running(l)
		return len(up) == 1 && up[0].Version == "1.0.0" && up[0].State == state.Healthy && up[0].ID != old.ID
	}))[0]
	var last state.Node
	testutil.Eventually(t, 10*time.Second, "a heartbeat listing the 1.0.0 started again", func() bool {
		e, err := c.nodes.Get(context.Background(), node)
		var n state.Node
		if err != nil || json.Unmarshal(e.Value(), &n) != nil {
			return false
		}
		last = n
		return slices.ContainsFunc(last.Instances, func(in state.Instance) bool { return in.ID == back.ID && in.State == state.Healthy })
	})
	if !slices.ContainsFunc(last.Instances, func(in state.Instance) bool {
		return in.Version == "1.1.0" && in.State == state.Failed && strings.Contains(in.Reason, "rollout of 1.1.0 halted")
	}) {
		t.Fatalf("heartbeat after the rollback does not list 1.1.0 as failed, saying why: %+v", last.Instances)
	}
}

// fastRestart restarts a crashed instance within 200 ms.
const fastRestart = "[restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n"

// crashLoop deploys app "plain" at version as the probe exiting at once,
// with extra after its args, and waits for its one instance to have
// restarted. It returns the spec, for a later deploy to extend.
func crashLoop(t *testing.T, c *cluster, tr *testRunner, version, extra string) string {
	t.Helper()
	crash := "args = [\"crash\"]\n" + extra
	c.deploy(t, "plain", version, probeBin, crash)
	tr.wait(t, "plain", version+" crash-looping", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == version && l[0].Restarts > 0
	})
	return crash
}

// serveOnHostPort deploys app "plain" 1.0.0, hello serving on a free
// loopback port that its [http] port names, with extra in its spec, and
// waits for it to be healthy. It returns the [http] table (and extra)
// for later specs of the app to bind the same port, and the instance.
func serveOnHostPort(t *testing.T, c *cluster, tr *testRunner, extra string) (string, state.Instance) {
	t.Helper()
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	bridged := fmt.Sprintf("[http]\nport = %s\n", port) + extra
	c.deploy(t, "plain", "1.0.0", helloBin, fmt.Sprintf("args = [\"--http\", %q]\n", addr)+bridged)
	return bridged, tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
}

// A newer spec of the same fingerprint (only [restart] changed, which
// instances follow as they run) that cuts short the health wait of a
// rollout on the host network leaves that rollout unfinished, not done:
// when its new instance gives up, the revision that served before is
// started again, as it would have been without the second spec.
func TestHostHTTPAppSameFingerprintSpecKeepsRollback(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	bridged, old := serveOnHostPort(t, c, tr, "")

	crash := crashLoop(t, c, tr, "1.1.0", bridged+fastRestart)
	c.deploy(t, "plain", "1.1.0", probeBin, crash+"max_failures = 1\n")
	tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		up := running(l)
		return len(up) == 1 && up[0].Version == "1.0.0" && up[0].State == state.Healthy && up[0].ID != old.ID
	})
}

// A spec that changes only [restart] applies to the running instance,
// and so to the copy a failed replace starts again: the revision that
// served is its spec with the [restart] it ran under, not the one it was
// started with.
func TestHostHTTPAppRollbackKeepsLaterRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	serve := fmt.Sprintf("args = [\"--http\", %q]\n[http]\nport = %s\n", addr, port)
	c.deploy(t, "plain", "1.0.0", helloBin, serve+"[restart]\npolicy = \"never\"\n")
	old := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
	c.deploy(t, "plain", "1.0.0", helloBin, serve+"[restart]\npolicy = \"on-failure\"\ninitial_backoff = \"100ms\"\n")
	// The runner caches a spec just before it applies it: once cached,
	// it is applied before the next spec is read.
	testutil.Eventually(t, 10*time.Second, "the new [restart] cached", func() bool {
		data, err := os.ReadFile(filepath.Join(tr.dir, "specs", "plain.toml"))
		return err == nil && strings.Contains(string(data), `"on-failure"`)
	})
	if now := tr.of("plain"); len(now) != 1 || now[0].ID != old.ID {
		t.Fatalf("instances %+v, want %s kept: the spec changed nothing it runs", now, old.ID)
	}

	c.deploy(t, "plain", "1.1.0", probeBin, "args = [\"crash\"]\n"+fmt.Sprintf("[http]\nport = %s\n", port)+fastRestart+"max_failures = 1\n")
	back := running(tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		up := running(l)
		return allIn(1, state.Healthy)(up) && up[0].Version == "1.0.0" && up[0].ID != old.ID
	}))[0]
	waitRestarted(t, tr, "plain", back)
}

// A spec of the revision that served (its fingerprint) that changes only
// [restart], deployed while a replace on the host network stopped that
// revision's instance, is the revision that served from then on: when the
// rollout that follows fails, the copy started again restarts as it says.
func TestHostHTTPAppRollbackKeepsRestartDeployedDuringReplace(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	serve := fmt.Sprintf("args = [\"--http\", %q]\n[http]\nport = %s\n", addr, port)
	c.deploy(t, "plain", "1.0.0", helloBin, serve+"[restart]\npolicy = \"never\"\n")
	old := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
	bridged := fmt.Sprintf("[http]\nport = %s\n", port)
	crashLoop(t, c, tr, "1.1.0", bridged+fastRestart)

	// 1.0.0 again, with another [restart]: replace starts it, and it
	// cannot bind the port the test holds, so it never turns healthy.
	held, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	c.deploy(t, "plain", "1.0.0", helloBin, serve+"[restart]\npolicy = \"on-failure\"\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n")
	tr.wait(t, "plain", "1.0.0 with its new [restart] crash-looping", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == "1.0.0" && l[0].ID != old.ID && l[0].Restarts > 0
	})
	c.deploy(t, "plain", "1.2.0", probeBin, "args = [\"crash\"]\n"+bridged+fastRestart+"max_failures = 1\n")
	tr.wait(t, "plain", "1.2.0 started", func(l []state.Instance) bool {
		return slices.ContainsFunc(l, func(in state.Instance) bool { return in.Version == "1.2.0" })
	})
	held.Close()
	back := running(tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		up := running(l)
		return allIn(1, state.Healthy)(up) && up[0].Version == "1.0.0" && up[0].ID != old.ID
	}))[0]
	waitRestarted(t, tr, "plain", back)
}
