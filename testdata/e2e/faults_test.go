package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runnerRestart: scenario 6. With 20 apps on every node, each runner in
// turn is stopped and started again; all 20 are back within 5 s and no app
// ever has two processes on a node.
func (e *edge) runnerRestart(t *testing.T) {
	const apps = 20
	names := make([]string, apps)
	var wg sync.WaitGroup
	errs := make(chan error, apps)
	sem := make(chan struct{}, 4)
	binary := narunBinary(t)
	for i := range names {
		names[i] = fmt.Sprintf("app%02d", i+1)
		spec := writeSpec(t, fmt.Sprintf(`name = %q
version = "1.0.0"
args = ["--service", %q]
labels = { role = "edge" }
[health]
type = "none"
%s`, names[i], names[i], e.pin()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if r, err := runCtl(binary, e.urls, "", "deploy", spec); err != nil {
				errs <- err
			} else if r.Code != 0 {
				errs <- fmt.Errorf("deploy %s: exit %d: %s", spec, r.Code, r.Out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, h := range e.members {
		eventually(t, 60*time.Second, h.Name+" runs the 20 apps", func() error { return e.allUp(h, names) })
	}
	var worst time.Duration
	var times []string
	for _, h := range e.members {
		before := map[string][]int{}
		for _, a := range names {
			before[a] = h.appProcs("--service", a)
		}
		e.runners[h].Stop(t)
		start := time.Now()
		e.runners[h] = startRunner(t, h)
		took := eventually(t, 30*time.Second, h.Name+" runner back with the 20 apps", func() error {
			hb, err := e.heartbeat(h.Name)
			if err != nil {
				return err
			}
			if hb.Started.Before(start.Add(-time.Second)) {
				return fmt.Errorf("heartbeat from the old runner (started %s)", hb.Started)
			}
			return e.allUp(h, names)
		})
		if took > worst {
			worst = took
		}
		kept := 0
		for _, a := range names {
			if now := h.appProcs("--service", a); len(now) == 1 && len(before[a]) == 1 && now[0] == before[a][0] {
				kept++
			}
		}
		times = append(times, fmt.Sprintf("%s %s (%d of 20 processes kept)", h.Name, took.Round(10*time.Millisecond), kept))
		// A second look after a few heartbeats catches a late duplicate.
		if err := waitStable(h, names); err != nil {
			t.Error(err)
		}
	}
	for _, a := range names {
		eventually(t, 10*time.Second, a+" has one healthy instance per node in ctl app status", func() error {
			s, err := status(t, e.urls, a)
			if err != nil {
				return err
			}
			on := s.healthyOn("")
			if len(s.Instances) != len(e.members) || len(on) != len(e.members) {
				return fmt.Errorf("%d instances, healthy per node %v", len(s.Instances), on)
			}
			return nil
		})
	}
	if worst > 5*time.Second {
		t.Errorf("slowest runner took %s to have its 20 apps back, want at most 5s", worst)
	}
	record(t, "scenario", "6. runner restart on each node with 20 apps deployed",
		"all 20 apps back on every node, one process each: "+strings.Join(times, ", "), "0 instances duplicated", worst.Round(10*time.Millisecond).String())
}

// allUp checks that node h reports each app healthy exactly once and runs
// exactly one process of it.
func (e *edge) allUp(h *Host, names []string) error {
	hb, err := e.heartbeat(h.Name)
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, in := range hb.Instances {
		if in.Healthy {
			count[in.App]++
		}
	}
	for _, a := range names {
		if count[a] != 1 {
			return fmt.Errorf("%s reports %d healthy instances of %s", h.Name, count[a], a)
		}
		if p := h.appProcs("--service", a); len(p) != 1 {
			return fmt.Errorf("%s runs %d processes of %s: %v", h.Name, len(p), a, p)
		}
	}
	return nil
}

// waitStable checks over two seconds that no app gains a second process.
func waitStable(h *Host, names []string) error {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, a := range names {
			if p := h.appProcs("--service", a); len(p) > 1 {
				return fmt.Errorf("%s runs %d processes of %s after the runner restart: %v", h.Name, len(p), a, p)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// freshHello checks that a runner started after since reports one healthy
// hello on h and that exactly one hello process runs there.
func (e *edge) freshHello(h *Host, since time.Time) error {
	hb, err := e.heartbeat(h.Name)
	if err != nil {
		return err
	}
	if hb.Started.Before(since.Add(-time.Second)) {
		return fmt.Errorf("heartbeat from the runner started %s", hb.Started)
	}
	n := 0
	for _, in := range hb.Instances {
		if in.App == "hello" && in.Healthy {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s reports %d healthy hello instances", h.Name, n)
	}
	if p := h.appProcs("--service", "hello"); len(p) != 1 {
		return fmt.Errorf("%s runs %d hello processes", h.Name, len(p))
	}
	return nil
}

// restartHost starts nats and the runner again on a member.
func (e *edge) restartHost(t *testing.T, h *Host) {
	t.Helper()
	e.nats[h] = startNATS(t, h)
	waitJetStream(t, h, 60*time.Second)
	e.runners[h] = startRunner(t, h)
}

// steadyLoad starts the suite's load on the gateway and returns once it is
// being served, so that failures afterwards belong to the fault.
func (e *edge) steadyLoad(t *testing.T) *load {
	t.Helper()
	l := startLoad(e.gwURL, workers)
	if err := l.waitOK(50, 20*time.Second); err != nil {
		l.Stop()
		t.Fatal(err)
	}
	return l
}

// killHost: scenario 2. A power cut of one member under steady load: only
// the requests in flight fail, and the member rejoins by itself.
func (e *edge) killHost(t *testing.T) {
	h := e.members[2]
	l := e.steadyLoad(t)
	defer l.Stop()
	killed := time.Now()
	h.Kill()
	if err := l.waitOK(100, 30*time.Second); err != nil {
		t.Fatalf("after killing %s: %v", h.Name, err)
	}
	served := time.Now()
	restarted := time.Now()
	e.restartHost(t, h)
	eventually(t, 60*time.Second, "hello back on "+h.Name, func() error { return e.freshHello(h, restarted) })
	back := time.Since(restarted)
	if err := l.waitOK(50, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ok, fails := l.Stop()
	t.Logf("kill %s: %d requests ok; failures: %s", h.Name, ok, summary(fails))
	if len(fails) > workers {
		t.Errorf("%d requests failed, more than the %d in flight when the host died: %s", len(fails), workers, summary(fails))
	}
	record(t, "scenario", "2. power cut of one member (nats, runner and apps killed) under load",
		fmt.Sprintf("the two others kept serving (%d requests ok, next 100 served %s after the cut); after nats and runner were started again hello was healthy on it again without operator action", ok, served.Sub(killed).Round(10*time.Millisecond)),
		fmt.Sprintf("%d (at most %d in flight)", len(fails), workers), back.Round(100*time.Millisecond).String()+" from starting nats and runner again to hello healthy on it")
}

// partitionDetect is how long the majority may keep routing requests to the
// subscribers of a member that vanished without closing its connections.
const partitionDetect = 15 * time.Second

// partition: scenario 3. One member loses its link for 30 s: its app keeps
// running, the majority serves and takes a deploy, and the member applies
// the new version once healed.
func (e *edge) partition(t *testing.T) {
	h := e.members[2]
	majority := clusterURLs(e.members[:2])
	pids := h.appProcs("--service", "hello")
	if len(pids) != 1 {
		t.Fatalf("%s runs %d hello processes before the partition, want 1", h.Name, len(pids))
	}
	l := e.steadyLoad(t)
	defer l.Stop()
	cut := time.Now()
	h.Cut()
	healed := false
	defer func() {
		if !healed {
			h.Heal()
		}
	}()
	// Until the majority has elected leaders for what the cut member led,
	// JetStream cannot take writes; an operator would retry, so does this.
	spec := writeSpec(t, e.helloSpec("2.0.0", true))
	attempts := 0
	eventually(t, 40*time.Second, "deploy accepted by the majority", func() error {
		attempts++
		if r := ctl(t, majority, "", "deploy", spec); r.Code != 0 {
			return fmt.Errorf("exit %d: %s", r.Code, strings.TrimSpace(r.Out))
		}
		return nil
	})
	deployed := time.Since(cut)
	eventually(t, 90*time.Second, "majority runs hello 2.0.0", func() error {
		s, err := status(t, majority, "hello")
		if err != nil {
			return err
		}
		on := s.healthyOn("2.0.0")
		for _, m := range e.members[:2] {
			if on[m.Name] != 1 {
				return fmt.Errorf("%s has %d healthy hello 2.0.0", m.Name, on[m.Name])
			}
		}
		return nil
	})
	for time.Since(cut) < 30*time.Second {
		if p := h.appProcs("--service", "hello"); len(p) != 1 || p[0] != pids[0] {
			t.Fatalf("hello on the cut-off %s: processes %v, want %v still running", h.Name, p, pids)
		}
		time.Sleep(500 * time.Millisecond)
	}
	h.Heal()
	healed = true
	back := e.waitVersion(t, "hello", "2.0.0", 90*time.Second, e.members...)
	ok, fails := l.Stop()
	t.Logf("partition of %s: deploy accepted %s after the cut (attempt %d); %d requests ok; failures: %s", h.Name, deployed.Round(10*time.Millisecond), attempts, ok, summary(fails))
	var late []failure
	var lastFail time.Duration
	for i, f := range fails {
		if i < 12 {
			t.Logf("failed request started %s after the cut, ended %s: %s", f.start.Sub(cut).Round(10*time.Millisecond), f.end.Sub(cut).Round(10*time.Millisecond), f.err)
		}
		if d := f.start.Sub(cut); d > lastFail {
			lastFail = d
		}
		if f.start.Sub(cut) > partitionDetect {
			late = append(late, f)
		}
	}
	serving := fmt.Sprintf("the majority kept serving (%d requests ok)", ok)
	if len(late) > 0 {
		t.Errorf("%d requests started more than %s after the cut still failed: the majority did not route around the cut-off member: %s", len(late), partitionDetect, summary(late))
		serving = fmt.Sprintf("requests through the gateway kept failing until %s after the cut (%d requests ok)", lastFail.Round(100*time.Millisecond), ok)
	}
	record(t, "scenario", "3. one member partitioned for 30 s",
		fmt.Sprintf("its hello kept running (same pid); %s and accepted a deploy of 2.0.0 %s after the cut (attempt %d); after healing the member ran 2.0.0", serving, deployed.Round(100*time.Millisecond), attempts),
		fmt.Sprintf("%d (last failed request started %s after the cut)", len(fails), lastFail.Round(100*time.Millisecond)), back.Round(100*time.Millisecond).String()+" after healing")
}

// rollingNATS: scenario 4 with the whole stack. Each nats server is
// restarted in turn under load: only requests in flight may fail, and the
// specs in narun-apps survive.
func (e *edge) rollingNATS(t *testing.T) {
	l := e.steadyLoad(t)
	defer l.Stop()
	var worst time.Duration
	for _, h := range e.members {
		start := time.Now()
		e.nats[h].Stop(t)
		e.nats[h] = startNATS(t, h)
		waitJetStream(t, h, 60*time.Second)
		if d := time.Since(start); d > worst {
			worst = d
		}
		if err := l.waitOK(50, 20*time.Second); err != nil {
			t.Fatalf("after restarting nats on %s: %v", h.Name, err)
		}
	}
	ok, fails := l.Stop()
	t.Logf("rolling nats restart: %d requests ok; failures: %s", ok, summary(fails))
	if len(fails) > 3*workers {
		t.Errorf("%d requests failed, more than the %d in flight at the three restarts: %s", len(fails), 3*workers, summary(fails))
	}
	// JetStream may still be electing leaders for the buckets right after
	// the last restart; a client retries, and so does this.
	readable := eventually(t, 30*time.Second, "specs readable after the rolling restart", func() error {
		r := ctl(t, e.urls, "", "app", "list", "--json")
		if r.Code != 0 {
			return fmt.Errorf("exit %d: %s", r.Code, oneLine(r.Out))
		}
		for i := range 21 {
			a := `"hello"`
			if i > 0 {
				a = fmt.Sprintf(`"app%02d"`, i)
			}
			if !strings.Contains(r.Out, a) {
				t.Fatalf("app %s missing from narun-apps after the rolling restart: %s", a, r.Out)
			}
		}
		return nil
	})
	record(t, "scenario", "4. rolling restart of the three nats servers under load (runners, gateway, apps running)",
		fmt.Sprintf("%d requests ok; the 21 specs in narun-apps intact and readable %s after the last restart", ok, readable.Round(100*time.Millisecond)),
		fmt.Sprint(len(fails)), worst.Round(100*time.Millisecond).String()+" per server (stop to JetStream healthy)")
}

// leafCutOff: scenario 7. A leaf device (`narun up` with its own
// JetStream domain) keeps serving through its own gateway while its link
// to the hub is down, and is reachable from the hub again once it is back.
func (e *edge) leafCutOff(t *testing.T) {
	h := e.leaf
	var remotes []string
	for _, m := range e.members {
		remotes = append(remotes, fmt.Sprintf("%q", "nats-leaf://"+m.Addr+":7422"))
	}
	cfg := h.WriteFile("narun.toml", fmt.Sprintf(`data_dir = %q
[nats]
listen = "0.0.0.0:4222"
server_name = "leaf"
http_listen = "0.0.0.0:8222"
[nats.jetstream]
domain = "leaf"
[[nats.leafnodes.remotes]]
urls = [%s]
[gateway]
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9090"
[runner]
node_id = "leaf"
admin_listen = "0.0.0.0:9101"
heartbeat_interval = "1s"
[runner.labels]
role = "leaf"
`, h.DataDir, strings.Join(remotes, ", ")))
	h.Start("up", "up", "--config", cfg)
	leafURL := "nats://" + h.Addr + ":4222"
	// The leaf is a narun up that trusts its own node key: its operator
	// signs with a copy, here the file itself.
	signingKeys.Store(leafURL, filepath.Join(h.DataDir, "signing.key"))
	defer signingKeys.Delete(leafURL)
	eventually(t, 30*time.Second, "leaf gateway ready", func() error { return httpOK("http://" + h.Addr + ":9090/readyz") })
	mustCtl(t, leafURL, "deploy", writeSpec(t, leafSpec("1.0.0", "")), "--binary", hello(t), "--wait", "--timeout", "60s")
	leafGW := "http://" + h.Addr + ":8080/hello/"
	eventually(t, 15*time.Second, "leaf route served", func() error {
		return helloRequest(context.Background(), httpClient, leafGW, "leaf")
	})
	hub := natsConn(t, e.urls)
	ping := func() error {
		_, err := hub.Request("$SRV.PING.leafhello", nil, time.Second)
		return err
	}
	eventually(t, 30*time.Second, "hub reaches the leaf's service", ping)

	// Each side's object stores stay its own while the link is up: a
	// file put on either side never lands in the other's narun-files. The
	// ping after the puts crosses the link behind any message they sent.
	probe := writeSpec(t, "probe")
	mustCtl(t, e.urls, "files", "put", "from-hub", probe)
	mustCtl(t, leafURL, "files", "put", "from-leaf", probe)
	if err := ping(); err != nil {
		t.Fatalf("ping the leaf after the puts: %v", err)
	}
	if out := mustCtl(t, leafURL, "files", "list"); strings.Contains(out, "from-hub") {
		t.Errorf("a file put on the hub reached the leaf's store:\n%s", out)
	}
	if out := mustCtl(t, e.urls, "files", "list"); strings.Contains(out, "from-leaf") {
		t.Errorf("a file put on the leaf reached the hub's store:\n%s", out)
	}
	mustCtl(t, e.urls, "files", "delete", "from-hub")

	// The leaf loses its routes to the hub but stays reachable from the
	// test, which plays a local client of the leaf's gateway.
	for _, m := range e.members {
		mustIP(t, "-n", h.NS, "route", "add", "blackhole", m.Addr+"/32")
	}
	cutAt := time.Now()
	restored := false
	restore := func() {
		for _, m := range e.members {
			mustIP(t, "-n", h.NS, "route", "del", "blackhole", m.Addr+"/32")
		}
		restored = true
	}
	defer func() {
		if !restored {
			restore()
		}
	}()
	eventually(t, 30*time.Second, "hub no longer reaches the leaf", func() error {
		if ping() == nil {
			return fmt.Errorf("hub still reaches leafhello")
		}
		return nil
	})
	l := startLoad(leafGW, 2)
	// The leaf's control plane is its own: a rollout works while cut off.
	deployStart := time.Now()
	// The new version reuses the binary already in the leaf's own store.
	pinned := fmt.Sprintf("[binaries.amd64]\nobject = \"leafhello/1.0.0/linux-amd64-%s\"\nsha256 = %q\n", e.helloSum[:12], e.helloSum)
	mustCtl(t, leafURL, "deploy", writeSpec(t, leafSpec("1.0.1", pinned)), "--wait", "--timeout", "30s")
	rollout := time.Since(deployStart)
	for time.Since(cutAt) < 15*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	ok, fails := l.Stop()
	restore()
	resync := eventually(t, 90*time.Second, "hub reaches the leaf again", ping)
	t.Logf("leaf cut off 15s: %d local requests ok; failures: %s", ok, summary(fails))
	if len(fails) > 0 || ok == 0 {
		t.Errorf("leaf gateway while cut off from the hub: %d ok, %s", ok, summary(fails))
	}
	record(t, "scenario", "7. leaf device (`narun up`, own JetStream domain) cut off from the hub for 15 s",
		fmt.Sprintf("its gateway and app kept serving local requests (%d ok) and a local rolling update to 1.0.1 completed in %s; the hub reached its service again after the link returned; while linked, a file put on either side stayed out of the other's store", ok, rollout.Round(100*time.Millisecond)),
		fmt.Sprint(len(fails)), resync.Round(100*time.Millisecond).String()+" after the link returned")
}

// diskFull: scenario 5. A node whose data dir is a tiny tmpfs cannot store
// the binary: the instance reports why, nothing partial runs, and it starts
// once there is room.
func (e *edge) diskFull(t *testing.T) {
	h := e.gwHost
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	// A tmpfs's root is 1777 unless told otherwise, and narun refuses a
	// data dir others may write.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "narun-e2e", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	runner := h.Start("runner", "runner", "--nats-url", e.urls, "--node-id", "disk", "--label", "role=disk", "--data-dir", dir, "--admin-listen", "")
	defer runner.Stop(t)
	eventually(t, 30*time.Second, "disk runner heartbeating", func() error {
		if runner.Exited() {
			t.Fatalf("runner on the tmpfs data dir ended: %s", runner.Output())
		}
		_, err := e.heartbeat("disk")
		return err
	})
	mustCtl(t, e.urls, "deploy", writeSpec(t, `name = "diskapp"
version = "1.0.0"
args = ["--service", "diskapp"]
nodes = ["disk"]
[health]
type = "none"
[restart]
initial_backoff = "200ms"
max_backoff = "1s"
`+e.pin()))
	var reason string
	eventually(t, 30*time.Second, "disk node reports the failed download", func() error {
		hb, err := e.heartbeat("disk")
		if err != nil {
			return err
		}
		for _, in := range hb.Instances {
			if in.App == "diskapp" && strings.Contains(in.Reason, "no space left") {
				reason = strings.ReplaceAll(in.Reason, dir, "DATA")
				return nil
			}
		}
		return fmt.Errorf("no instance of diskapp with a no-space reason: %+v", hb.Instances)
	})
	if p := h.appProcs("--service", "diskapp"); len(p) != 0 {
		t.Errorf("diskapp runs (%v) although its binary could not be stored", p)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "binaries"))
	partial := 0
	for _, en := range entries {
		if !strings.HasPrefix(en.Name(), ".tmp-") {
			t.Errorf("binaries/%s exists although no download completed", en.Name())
			continue
		}
		partial++
	}
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v: %s", err, out)
	}
	back := eventually(t, 30*time.Second, "diskapp running once there is room", func() error {
		hb, err := e.heartbeat("disk")
		if err != nil {
			return err
		}
		for _, in := range hb.Instances {
			if in.App == "diskapp" && in.Healthy {
				if p := h.appProcs("--service", "diskapp"); len(p) != 1 {
					return fmt.Errorf("%d diskapp processes", len(p))
				}
				return nil
			}
		}
		return fmt.Errorf("diskapp not healthy: %+v", hb.Instances)
	})
	mustCtl(t, e.urls, "app", "delete", "diskapp")
	record(t, "scenario", "5. disk full (2 MiB tmpfs data dir) while the node downloads a 10 MB binary",
		fmt.Sprintf("instance reason %q; no process started; the cache held no binary (%d partial download files); started once the tmpfs grew to 64 MiB", reason, partial),
		"0 (nothing half-written ran)", back.Round(100*time.Millisecond).String()+" after space returned")
}

// leafSpec is the leaf device's app at version v, with extra appended.
func leafSpec(v, extra string) string {
	return fmt.Sprintf(`name = "leafhello"
version = %q
args = ["--service", "leafhello"]
labels = { role = "leaf" }
[health]
interval = "1s"
[[routes]]
path = "/hello/"
service = "leafhello"
`, v) + extra
}
