package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/runner"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestWithRealRunner drives a real runner with ctl: deploy --wait, status,
// a crash loop reported by the node, delete.
func TestWithRealRunner(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)

	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", hello, "--wait", "--timeout", "30s")
	// --wait follows events; status reads heartbeats, which follow within
	// a heartbeat interval.
	var st appStatusJSON
	testutil.Eventually(t, 20*time.Second, "status to show 2 ready instances", func() bool {
		res := h.ok("", "app", "status", "hello", "--json")
		if err := json.Unmarshal([]byte(res.out), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ready == 2
	})
	var pids []int
	for _, in := range st.Instances {
		if in.Current {
			if err := syscall.Kill(in.PID, 0); err != nil {
				t.Errorf("instance %s pid %d not alive: %v", in.ID, in.PID, err)
			}
			pids = append(pids, in.PID)
		}
	}

	bad := h.file("bad.toml", "name = \"bad\"\nversion = \"1\"\nnodes = [\"node-1\"]\nargs = [\"--no-such-flag\"]\n[restart]\nmax_failures = 2\n")
	res := h.fails(ExitRollout, "", "deploy", bad, "--binary", hello, "--wait", "--timeout", "30s")
	if !strings.Contains(res.err, "gave up") && !strings.Contains(res.err, "exit status") {
		t.Errorf("crash loop not reported with the node's reason: %s", res.err)
	}
	// Why it exited is in what it printed: the error points there.
	if !strings.Contains(res.err, "narun ctl logs bad") {
		t.Errorf("crash loop reported without where its output is: %s", res.err)
	}

	h.ok("", "app", "delete", "hello")
	testutil.Eventually(t, 20*time.Second, "instances of a deleted app to stop", func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	})
}

// Deploying the file of an app whose instances gave up again stores
// nothing, so nothing starts again: --wait says so and names the command
// that does, instead of a bare "rollout failed" the developer would take
// for the new deploy's.
func TestDeployUnchangedOverFailedNamesRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)
	bad := h.file("bad.toml", "name = \"bad\"\nversion = \"1\"\nnodes = [\"node-1\"]\nargs = [\"--no-such-flag\"]\n[restart]\nmax_failures = 2\n")
	h.fails(ExitRollout, "", "deploy", bad, "--binary", hello, "--wait", "--timeout", "30s")
	res := h.fails(ExitRollout, "", "deploy", bad, "--wait", "--timeout", "30s")
	for _, want := range []string{"gave up", "spec unchanged", "narun ctl app restart bad"} {
		if !strings.Contains(res.err, want) {
			t.Errorf("error %q does not contain %q", res.err, want)
		}
	}
}

// A rolling restart replaces each instance with a new one and stops the old
// one once the new one is healthy: --wait returns only when the old ones
// have stopped too, as systemctl restart and kubectl rollout status do, so
// that nothing of the earlier spec answers requests once it returns and
// app status right after shows only the new instances. The app ignores
// SIGTERM, so that each old instance is stopping for its whole
// stop_timeout after the new one turned healthy.
func TestRestartWaitOutlivesTheReplacedInstances(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs real processes")
	}
	probe := buildProbe(t)
	h := newHarness(t)
	startRunner(t, h)
	p := h.file("stubborn.toml", "name = \"stubborn\"\nversion = \"1\"\nnodes = [\"node-1\"]\nreplicas = 2\nargs = [\"stubborn\"]\nstop_timeout = \"1s\"\nhealth = { min_healthy = \"100ms\" }\n")
	h.ok("", "deploy", p, "--binary", probe, "--wait", "--timeout", "30s")
	var before appStatusJSON
	testutil.Eventually(t, 20*time.Second, "status to show the 2 instances deployed", func() bool {
		if err := json.Unmarshal([]byte(h.ok("", "app", "status", "stubborn", "--json").out), &before); err != nil {
			t.Fatal(err)
		}
		return before.Ready == 2 && len(before.Instances) == 2
	})
	h.ok("", "app", "restart", "stubborn", "--wait", "--timeout", "30s")
	for _, in := range before.Instances {
		if syscall.Kill(in.PID, 0) == nil {
			t.Errorf("instance %s (pid %d) of before the restart still runs after restart --wait", in.ID, in.PID)
		}
	}
	var after appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "stubborn", "--json").out), &after); err != nil {
		t.Fatal(err)
	}
	for _, in := range after.Instances {
		if !in.Current && !in.State.Final() {
			t.Errorf("app status right after restart --wait lists instance %s of the earlier spec as %s", in.ID, in.State)
		}
	}
}

// startRealRunner runs a runner for node-1 on h's server until the test
// ends, and returns the hello app built for it to run.
func startRealRunner(t *testing.T, h *harness) string {
	t.Helper()
	hello := built(t, helloApp)
	startRunner(t, h)
	return hello
}

// startRunner runs a runner for node-1 on h's server until the test ends.
func startRunner(t *testing.T, h *harness) {
	t.Helper()
	startRunnerWith(t, h, nil)
}

// startRunnerWith is startRunner with mod applied to the runner's
// configuration.
func startRunnerWith(t *testing.T, h *harness, mod func(*config.Runner)) {
	t.Helper()
	nc := natstest.Connect(t, h.srv)
	cfg := config.Runner{
		Client:            config.Client{NATSURL: h.url},
		NodeID:            "node-1",
		HeartbeatInterval: config.Duration(200 * time.Millisecond),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := runner.New(runner.Options{
		Config:  cfg,
		DataDir: t.TempDir(),
		Conn:    nc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
}

// buildProbe builds the runner tests' app of awkward behaviours.
func buildProbe(t *testing.T) string {
	t.Helper()
	return built(t, probeApp)
}

// The apps the tests run, each built once: the tests run in parallel and
// would link them again each time.
var (
	helloApp = sync.OnceValues(func() (string, error) { return goBuild("../../testdata/apps/hello") })
	probeApp = sync.OnceValues(func() (string, error) { return goBuild("../internal/runner/testdata/probe") })
)

// goBuild builds the main package pkg into appsDir.
func goBuild(pkg string) (string, error) {
	p := filepath.Join(appsDir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", p, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
	}
	return p, nil
}

func built(t *testing.T, app func() (string, error)) string {
	t.Helper()
	p, err := app()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// deploy --wait does not pass an app that crashes right after its first
// passed health check: an instance counts once it has stayed healthy for
// min_healthy (the default here), and a crash in that window starts the
// count again. One that crashes once and then stays up passes.
func TestDeployWaitHealthyThenCrash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs real processes")
	}
	probe := buildProbe(t)
	h := newHarness(t)
	startRunner(t, h)
	// The probe exits 3 as it accepts the third check's connection, two
	// intervals after the first made it healthy.
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	spec := func(name, args, extra string) string {
		return h.file(name+".toml", fmt.Sprintf("name = %q\nversion = \"1\"\nnodes = [\"node-1\"]\nargs = %s\n%s[health]\ntype = \"tcp\"\nport = %s\ninterval = \"100ms\"\n",
			name, args, extra, port))
	}
	res := h.fails(ExitRollout, "", "deploy", spec("crashy", fmt.Sprintf("[\"crashafter\", %q, \"3\"]", addr), "[restart]\nmax_failures = 2\n"),
		"--binary", probe, "--wait", "--timeout", "60s")
	for _, want := range []string{"rollout of crashy failed", "gave up after 2 failures in a row: exit status 3", "narun ctl logs crashy"} {
		if !strings.Contains(res.err, want) {
			t.Errorf("deploy --wait of an app that crashes after its first check: error lacks %q: %s", want, res.err)
		}
	}
	// The progress lines name each state an instance reached.
	if !strings.Contains(res.err, ": healthy") {
		t.Errorf("the instance was never reported healthy, so this tests nothing:\n%s", res.err)
	}

	h.ok("", "app", "delete", "crashy")
	h.ok("", "deploy", spec("flaky", fmt.Sprintf("[\"crashafter\", %q, \"3\", \"once\"]", addr), ""), "--binary", probe, "--wait", "--timeout", "60s")
	var st appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "flaky", "--json").out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Instances) != 1 || st.Instances[0].Restarts != 1 || st.Ready != 1 {
		t.Errorf("status after deploy --wait of an app that crashed once: %+v, want 1 ready instance restarted once", st)
	}
}

// deploy --wait of fewer replicas, and of none, returns once the instances
// that go away have stopped. These ignore their stop signal, so each stops
// only when killed after its stop_timeout.
func TestDeployWaitForRemovedInstances(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs real processes")
	}
	// The probe of the runner's tests ignores SIGTERM and listens on the
	// health check's port, which its replicas share: the check wants the
	// instance's own listener, so an instance is ready as soon as it
	// listens, and --wait has no reason to wait but the ones stopping.
	probe := buildProbe(t)
	h := newHarness(t)
	startRunner(t, h)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	deploy := func(replicas int) {
		t.Helper()
		p := h.file("stubborn.toml", fmt.Sprintf("name = \"stubborn\"\nversion = \"1\"\nnodes = [\"node-1\"]\nreplicas = %d\n"+
			"args = [\"stubborn\", %q]\nstop_timeout = \"1s\"\n[health]\ntype = \"tcp\"\nport = %s\nmin_healthy = \"100ms\"\n",
			replicas, addr, port))
		h.ok("", "deploy", p, "--binary", probe, "--wait", "--timeout", "30s")
	}
	deploy(2)
	var st appStatusJSON
	testutil.Eventually(t, 20*time.Second, "status to show 2 ready instances", func() bool {
		if err := json.Unmarshal([]byte(h.ok("", "app", "status", "stubborn", "--json").out), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ready == 2 && len(st.Instances) == 2
	})
	pids := map[string]int{}
	for _, in := range st.Instances {
		pids[in.ID[:1]] = in.PID
	}
	alive := func(slot string) bool { return syscall.Kill(pids[slot], 0) == nil }
	if !alive("0") || !alive("1") {
		t.Fatalf("instances not running: %+v", st.Instances)
	}

	deploy(1)
	if !alive("0") || alive("1") {
		t.Errorf("after deploy --wait of 1 replica: slot 0 alive %v (want true), slot 1 alive %v (want false)", alive("0"), alive("1"))
	}
	deploy(0)
	if alive("0") {
		t.Error("after deploy --wait of 0 replicas: the last instance is still alive")
	}
	// --wait also waited for the heartbeats to agree: they list the
	// instance as stopped, or no longer list it.
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "stubborn", "--json").out), &st); err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if in.State != state.Stopped {
			t.Errorf("status after scaling to 0 lists %s as %s", in.ID, in.State)
		}
	}
}

// A spec an earlier ctl stored, valid then but refused by today's deploy
// (a zero stop_timeout, env given as a string), keeps running after
// an upgrade: status shows it with what a redeploy must fix, its binary
// stays protected, a restart works, and deploying the file again is
// refused, naming the keys.
func TestStoredSpecOfEarlierCtl(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)
	obs, err := store.Objects(context.Background(), h.js, names.BinariesBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(hello)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	object := "legacy/1.0.0/linux-" + runtime.GOARCH
	info, err := obs.Put(context.Background(), jetstream.ObjectMeta{Name: object}, f)
	if err != nil {
		t.Fatal(err)
	}
	src := "name = \"legacy\"\nversion = \"1.0.0\"\nnodes = [\"node-1\"]\nstop_timeout = \"0s\"\nenv = \"A=1\"\n"
	stored := src + "\n# Written by narun ctl deploy: the exact binaries this spec runs.\n[binaries." + runtime.GOARCH + "]\nobject = \"" + object + "\"\nsha256 = \"" + store.DigestHex(info) + "\"\n"
	if _, err := h.kv(names.AppsBucket).Create(context.Background(), "legacy", []byte(stored)); err != nil {
		t.Fatal(err)
	}

	var st appStatusJSON
	testutil.Eventually(t, 20*time.Second, "status to show the instance ready", func() bool {
		res := h.ok("", "app", "status", "legacy", "--json")
		if err := json.Unmarshal([]byte(res.out), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ready == 1
	})
	if st.Error != "" || st.Version != "1.0.0" || !strings.Contains(st.Outdated, `key "stop_timeout"`) || !strings.Contains(st.Outdated, `key "env"`) {
		t.Errorf("status: error %q, version %q, outdated %q", st.Error, st.Version, st.Outdated)
	}
	res := h.ok("", "app", "status", "legacy")
	if !strings.Contains(res.out, "legacy 1.0.0 (exec)") || !strings.Contains(res.err, "deploying it again is refused") {
		t.Errorf("status table:\n%s\nstderr:\n%s", res.out, res.err)
	}
	res = h.ok("", "app", "list")
	if strings.Contains(res.out, "invalid") {
		t.Errorf("app list:\n%s", res.out)
	}

	res = h.fails(ExitInUse, "", "image", "delete", object)
	if !strings.Contains(res.err, "used by legacy") {
		t.Errorf("image delete: %s", res.err)
	}
	h.ok("", "app", "restart", "legacy")

	res = h.fails(1, "", "deploy", h.file("legacy.toml", src), "--binary", hello)
	for _, want := range []string{`legacy.toml:4: key "stop_timeout"`, `legacy.toml:5: key "env"`} {
		if !strings.Contains(res.err, want) {
			t.Errorf("deploy error lacks %s: %s", want, res.err)
		}
	}
	if now, _ := h.get(names.AppsBucket, "legacy"); !strings.Contains(string(now), "restarted_at") || !strings.Contains(string(now), `stop_timeout = "0s"`) {
		t.Errorf("stored spec after the refused deploy:\n%s", now)
	}
}
