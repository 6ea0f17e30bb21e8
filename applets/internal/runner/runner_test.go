package runner

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

const node = "n1"

// Binaries built once for all tests.
var helloBin, probeBin string

// childEnv makes the test binary a runner process of its own, so a test
// can kill a runner with SIGKILL.
const childEnv = "NARUN_RUNNER_TEST_CHILD"

func TestMain(m *testing.M) {
	// Sandboxed instances re-exec /proc/self/exe as the launcher, exec
	// ones as the exec-app applet: this test binary plays narun's part.
	if len(os.Args) > 1 && os.Args[1] == "launcher" {
		sandbox.LauncherMain()
	}
	if len(os.Args) > 1 && os.Args[1] == sandbox.ExecApplet {
		sandbox.ExecAppMain(os.Args[2:])
	}
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "runner child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "narun-runner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helloBin, probeBin = filepath.Join(dir, "hello"), filepath.Join(dir, "probe")
	for out, pkg := range map[string]string{helloBin: "../../../testdata/apps/hello", probeBin: "./testdata/probe"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(os.Getenv("NARUN_TEST_NATS_URL"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	r, err := New(Options{
		Config: config.Runner{
			Client:            config.Client{NATSURL: os.Getenv("NARUN_TEST_NATS_URL")},
			NodeID:            node,
			HeartbeatInterval: config.Duration(100 * time.Millisecond),
		},
		DataDir: os.Getenv("NARUN_TEST_DATA"),
		Conn:    nc,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", os.Getenv("NARUN_TEST_ADMIN"))
	if err != nil {
		return err
	}
	go http.Serve(ln, r.AdminHandler())
	return r.Run(ctx)
}

// cluster is an embedded NATS server with the narun buckets.
type cluster struct {
	srv      *embednats.Server
	nc       *nats.Conn
	apps     jetstream.KeyValue
	nodes    jetstream.KeyValue
	secrets  jetstream.KeyValue
	binaries jetstream.ObjectStore
	files    jetstream.ObjectStore
}

func newCluster(t testing.TB, srv *embednats.Server) *cluster {
	t.Helper()
	if srv == nil {
		srv = natstest.Start(t)
	}
	c := &cluster{srv: srv, nc: natstest.Connect(t, srv)}
	c.open(t)
	return c
}

func (c *cluster) open(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []struct {
		bucket string
		dst    *jetstream.KeyValue
	}{{names.AppsBucket, &c.apps}, {names.NodesBucket, &c.nodes}, {names.SecretsBucket, &c.secrets}} {
		if *kv.dst, err = store.KV(ctx, js, kv.bucket, nil); err != nil {
			t.Fatal(err)
		}
	}
	if c.binaries, err = store.Objects(ctx, js, names.BinariesBucket, nil); err != nil {
		t.Fatal(err)
	}
	if c.files, err = store.Objects(ctx, js, names.FilesBucket, nil); err != nil {
		t.Fatal(err)
	}
}

// recreateApps deletes narun-apps and creates it again, empty, as kv rm
// and the next deploy do.
func (c *cluster) recreateApps(t testing.TB) {
	t.Helper()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(context.Background(), names.AppsBucket); err != nil {
		t.Fatal(err)
	}
	c.open(t)
}

// deploy uploads bin and stores the spec: the smallest spec for node n1
// followed by extra.
func (c *cluster) deploy(t testing.TB, app, version, bin, extra string) {
	t.Helper()
	c.deployDigest(t, app, version, bin, fileDigest(t, bin), extra)
}

func fileDigest(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func (c *cluster) deployDigest(t testing.TB, app, version, bin, digest, extra string) {
	t.Helper()
	c.putSpec(t, app, version, c.upload(t, app, version, bin), digest, extra)
}

// upload puts bin into narun-binaries as an object of app and version and
// returns its name.
func (c *cluster) upload(t testing.TB, app, version, bin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	object := fmt.Sprintf("%s/%s/linux-%s", app, version, runtime.GOARCH)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := c.binaries.Put(ctx, jetstream.ObjectMeta{Name: object}, f); err != nil {
		t.Fatalf("upload %s: %v", object, err)
	}
	return object
}

// restart writes what narun ctl app restart writes for app.
func (c *cluster) restart(t *testing.T, app string) {
	t.Helper()
	e, err := c.apps.Get(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := spec.SetRestartedAt(app+".toml", e.Value(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.apps.Put(context.Background(), app, restarted); err != nil {
		t.Fatal(err)
	}
}

// putSpec stores a spec that runs an uploaded object.
func (c *cluster) putSpec(t testing.TB, app, version, object, digest, extra string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.apps.Put(ctx, app, storedSpec(t, app, version, object, digest, extra)); err != nil {
		t.Fatal(err)
	}
}

// storedSpec is the spec putSpec stores.
func storedSpec(t testing.TB, app, version, object, digest, extra string) []byte {
	t.Helper()
	src := fmt.Sprintf("name = %q\nversion = %q\nnodes = [%q]\n%s\n", app, version, node, extra)
	stored, err := spec.WithBinaries(app+".toml", []byte(src), map[string]spec.Binary{runtime.GOARCH: {Object: object, SHA256: digest}})
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	return stored
}

func (c *cluster) remove(t *testing.T, app string) {
	t.Helper()
	if err := c.apps.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
}

// events collects the instance events of an app.
type events struct {
	mu  sync.Mutex
	all []state.Event
}

func (c *cluster) watchEvents(t *testing.T, app string) *events {
	t.Helper()
	ev := &events{}
	sub, err := c.nc.Subscribe(names.EventSubject(app, node), func(m *nats.Msg) {
		var e state.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Errorf("bad event %q: %v", m.Data, err)
			return
		}
		ev.mu.Lock()
		ev.all = append(ev.all, e)
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (ev *events) list() []state.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return slices.Clone(ev.all)
}

type testRunner struct {
	*Runner
	dir  string
	logs *testutil.LogBuffer
	// stop stops the runner and waits for it; also called at cleanup.
	stop func()
}

// startRunner runs a runner in this process until the test ends.
// ranUntilHealthy starts a runner of c, waits for one healthy instance of
// each of apps, and stops it: a data dir as a node leaves it when it
// stops, for a test of what the next start makes of it.
func ranUntilHealthy(t *testing.T, c *cluster, apps ...string) *testRunner {
	t.Helper()
	r := startRunner(t, c, nil)
	for _, app := range apps {
		r.wait(t, app, "healthy", allIn(1, state.Healthy))
	}
	r.stop()
	return r
}

func startRunner(t testing.TB, c *cluster, mod func(*Options)) *testRunner {
	t.Helper()
	return startTunedRunner(t, c, mod, nil)
}

// startTunedRunner is startRunner with tune applied to the runner before
// it runs.
func startTunedRunner(t testing.TB, c *cluster, mod func(*Options), tune func(*Runner)) *testRunner {
	t.Helper()
	tr := &testRunner{dir: t.TempDir(), logs: &testutil.LogBuffer{}}
	opts := Options{
		Config:     config.Runner{NodeID: node, HeartbeatInterval: config.Duration(100 * time.Millisecond)},
		DataDir:    tr.dir,
		Conn:       c.nc,
		AppNATSURL: c.srv.ClientURL(),
		Logger:     slog.New(slog.NewTextHandler(tr.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&opts)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(r)
	}
	tr.Runner = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var once sync.Once
	tr.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("runner did not stop")
			}
			if t.Failed() || os.Getenv("NARUN_TEST_RUNNER_LOG") != "" {
				t.Logf("runner log:\n%s", tr.logs.String())
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *testRunner) of(app string) []state.Instance {
	var list []state.Instance
	for _, in := range tr.instances() {
		if in.App == app {
			list = append(list, in)
		}
	}
	slices.SortFunc(list, func(a, b state.Instance) int { return a.Slot - b.Slot })
	return list
}

// wait polls the instances of app until ok holds.
func (tr *testRunner) wait(t *testing.T, app, what string, ok func([]state.Instance) bool) []state.Instance {
	t.Helper()
	var last []state.Instance
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = tr.of(app)
		if ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s of %s; instances: %+v", what, app, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allIn(n int, st state.State) func([]state.Instance) bool {
	return func(list []state.Instance) bool {
		if len(list) != n {
			return false
		}
		for _, in := range list {
			if in.State != st {
				return false
			}
		}
		return true
	}
}

// takeOverAtOnce lets a new instance replace the old one of its slot at its
// first passed check, for tests of something else than [health]
// min_healthy, which would only make them slower.
const takeOverAtOnce = "[health]\nmin_healthy = 0\n"

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(b)
	return err == nil && f[0] != "Z"
}

func TestDeployReplicas(t *testing.T) {
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hello")
	t.Setenv("RUNNER_ONLY_SECRET", "must-not-reach-apps")
	tr := startRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "hello"})
	deployed := time.Now()
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n[[routes]]\npath = \"/hello/\"\n")
	if body := postHello(t, gw, "narun"); !strings.Contains(body, "Hello, narun") {
		t.Errorf("through the gateway: %s", body)
	}
	if st, err := os.Stat(helloBin); err == nil {
		t.Logf("deploy (upload of %d MB included) to first 200 through the gateway: %v", st.Size()>>20, time.Since(deployed))
	}
	list := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))

	for _, in := range list {
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", in.PID))
		if err != nil {
			t.Fatal(err)
		}
		env := strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
		slices.Sort(env)
		// PATH is systemd's, not the runner's; HOME, USER and LOGNAME
		// are the instance's and the runner's user, as systemd's User=
		// gives them, never the runner's own.
		want := []string{"HOME=" + filepath.Join(tr.dir, "instances", "hello", in.ID), "NARUN_APP=hello", "NARUN_APP_VERSION=1.0.0", "NARUN_INSTANCE=" + in.ID, "NARUN_NATS_URL=" + c.srv.ClientURL(), "NARUN_NODE=" + node, "PATH=" + defaultPATH}
		if me, err := user.Current(); err == nil {
			want = append(want, "LOGNAME="+me.Username, "USER="+me.Username)
		}
		slices.Sort(want)
		if !slices.Equal(env, want) {
			t.Errorf("instance %s environment %q, want exactly %q", in.ID, env, want)
		}
	}

	t.Run("events", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, "healthy events", func() bool {
			n := 0
			for _, e := range ev.list() {
				if e.State == state.Healthy {
					n++
				}
			}
			return n >= 2
		})
		var seq []state.State
		for _, e := range ev.list() {
			if e.ID == list[0].ID && (len(seq) == 0 || seq[len(seq)-1] != e.State) {
				seq = append(seq, e.State)
			}
		}
		want := []state.State{state.Pending, state.Fetching, state.Starting, state.Running, state.Healthy}
		if !slices.Equal(seq, want) {
			t.Errorf("events of %s: %v, want %v", list[0].ID, seq, want)
		}
	})

	t.Run("heartbeat", func(t *testing.T) {
		testutil.Eventually(t, 10*time.Second, "heartbeat with 2 healthy instances", func() bool {
			e, err := c.nodes.Get(context.Background(), node)
			if err != nil {
				return false
			}
			var n state.Node
			if err := json.Unmarshal(e.Value(), &n); err != nil {
				t.Fatalf("heartbeat %q: %v", e.Value(), err)
			}
			healthy := 0
			for _, in := range n.Instances {
				if in.App == "hello" && in.State == state.Healthy {
					healthy++
				}
			}
			caps := n.Capabilities
			return n.ID == node && n.Arch == runtime.GOARCH && healthy == 2 && len(caps.Namespaces) > 0 && caps.Sandbox == sandbox.Probe().Sandbox
		})
	})

	t.Run("admin", func(t *testing.T) {
		srv := httptest.NewServer(tr.AdminHandler())
		defer srv.Close()
		page := get(t, srv.URL+"/")
		for _, in := range list {
			if !strings.Contains(page, fmt.Sprintf(`data-instance="%s" data-state="healthy"`, in.ID)) {
				t.Errorf("admin page lacks healthy instance %s:\n%s", in.ID, page)
			}
		}
		metrics := get(t, srv.URL+"/metrics")
		for _, in := range list {
			for _, m := range []string{"narun_runner_instance_up", "narun_runner_instance_healthy"} {
				line := fmt.Sprintf(`%s{app="hello",instance="%s",node="%s"} 1`, m, in.ID, node)
				if !strings.Contains(metrics, line) {
					t.Errorf("metrics lack %s:\n%s", line, metrics)
				}
			}
			if !strings.Contains(metrics, fmt.Sprintf(`narun_runner_instance_resident_memory_bytes{app="hello",instance="%s"`, in.ID)) {
				t.Errorf("metrics lack the RSS of %s", in.ID)
			}
		}
		if got := get(t, srv.URL+"/healthz"); got != "ok\n" {
			t.Errorf("healthz = %q", got)
		}
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", url, resp.Status, err)
	}
	return string(b)
}

func TestKilledInstanceRestarts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]
	killed := time.Now()
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "hello", "restart", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Healthy && l[0].PID != first.PID
	})[0]
	t.Logf("kill -9 to restarted process: %v", again.Started.Sub(killed))
	if again.ID != first.ID || again.Restarts != 1 {
		t.Errorf("after kill: %+v, want instance %s with 1 restart", again, first.ID)
	}
}

func TestCrashLoopFails(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "crashy", "1.0.0", probeBin, "args = [\"crash\"]\n[restart]\ninitial_backoff = \"10ms\"\nmax_backoff = \"40ms\"\nmax_failures = 4\n")
	in := tr.wait(t, "crashy", "failed", allIn(1, state.Failed))[0]
	if in.Restarts != 3 || !strings.Contains(in.Reason, "exit status 3") {
		t.Errorf("failed instance %+v, want 3 restarts and exit status 3 in the reason", in)
	}
	// A fixed spec replaces the failed instance.
	c.deploy(t, "crashy", "1.0.1", probeBin, "")
	fixed := tr.wait(t, "crashy", "healthy", allIn(1, state.Healthy))[0]
	if fixed.ID == in.ID {
		t.Errorf("failed instance %s was not replaced", in.ID)
	}
}

// TestRestartFollowsTheSpec gives a crash-looping instance a max_failures
// with a spec that restarts nothing ([restart] is not in the
// fingerprint): the instance gives up at its next exit instead of looping
// on under the policy it started with, which retries for ever.
func TestRestartFollowsTheSpec(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	loop := "args = [\"crash\"]\n[restart]\ninitial_backoff = \"10ms\"\nmax_backoff = \"40ms\"\n"
	c.deploy(t, "crashy", "1.0.0", probeBin, loop)
	looping := tr.wait(t, "crashy", "restarts", func(l []state.Instance) bool { return len(l) == 1 && l[0].Restarts >= 3 })[0]
	c.deploy(t, "crashy", "1.0.0", probeBin, loop+"max_failures = 2\n")
	in := tr.wait(t, "crashy", "failed", allIn(1, state.Failed))[0]
	if in.ID != looping.ID || !strings.Contains(in.Reason, "gave up after") {
		t.Errorf("instance %+v, want %s given up", in, looping.ID)
	}
}

func TestStopAndDelete(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	evPolite := c.watchEvents(t, "polite")
	evStubborn := c.watchEvents(t, "stubborn")
	tr := startRunner(t, c, nil)
	// A stop timeout beyond the test's deadline shows the polite app was
	// not waited for; the stubborn one must be killed after 200ms.
	c.deploy(t, "polite", "1.0.0", probeBin, "replicas = 2\nstop_timeout = \"1h\"\n")
	c.deploy(t, "stubborn", "1.0.0", probeBin, "args = [\"stubborn\"]\nstop_timeout = \"200ms\"\n")
	var pids []int
	for _, app := range []string{"polite", "stubborn"} {
		for _, in := range tr.wait(t, app, "running", func(l []state.Instance) bool {
			return len(l) > 0 && allIn(len(l), state.Healthy)(l)
		}) {
			pids = append(pids, in.PID)
		}
	}
	tr.waitLine(t, "stubborn", ignoringTERM)
	// Healthy means started here (no health check): a SIGTERM before the
	// probe's handler is in place would kill it, not stop it cleanly, as
	// happened on a loaded machine.
	testutil.Eventually(t, 10*time.Second, "both polite instances ready for SIGTERM", func() bool {
		n := 0
		for _, l := range tr.lines("polite") {
			if l == "probe: ready" {
				n++
			}
		}
		return n == 2
	})
	if _, err := os.Stat(filepath.Join(tr.dir, "instances", "polite")); err != nil {
		t.Fatalf("instance directory: %v", err)
	}
	c.remove(t, "polite")
	c.remove(t, "stubborn")
	for _, app := range []string{"polite", "stubborn"} {
		tr.wait(t, app, "no instance", func(l []state.Instance) bool { return len(l) == 0 })
		// The app's files go after its last instance has been reported gone.
		for _, p := range []string{filepath.Join(tr.dir, "instances", app), filepath.Join(tr.dir, "specs", app+".toml")} {
			testutil.Eventually(t, 10*time.Second, p+" removed", func() bool {
				_, err := os.Stat(p)
				return os.IsNotExist(err)
			})
		}
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived the delete", pid)
		}
	}
	exitCodes := func(ev *events) []int {
		var codes []int
		for _, e := range ev.list() {
			if e.State == state.Stopped && e.ExitCode != nil {
				codes = append(codes, *e.ExitCode)
			}
		}
		return codes
	}
	testutil.Eventually(t, 10*time.Second, "stopped events", func() bool {
		return len(exitCodes(evPolite)) == 2 && len(exitCodes(evStubborn)) == 1
	})
	if got := exitCodes(evPolite); !slices.Equal(got, []int{0, 0}) {
		t.Errorf("polite exit codes %v, want clean exits on SIGTERM", got)
	}
	if got := exitCodes(evStubborn); !slices.Equal(got, []int{-1}) {
		t.Errorf("stubborn exit codes %v, want killed", got)
	}
}

func TestCorruptBinaryNeverRuns(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hello")
	tr := startRunner(t, c, nil)
	bogus := strings.Repeat("ab", 32)
	c.deployDigest(t, "hello", "1.0.0", helloBin, bogus, "")
	in := tr.wait(t, "hello", "failed", allIn(1, state.Failed))[0]
	if !strings.Contains(in.Reason, "sha256 mismatch") {
		t.Errorf("reason %q does not name the mismatch", in.Reason)
	}
	for _, e := range ev.list() {
		if e.State == state.Starting || e.State == state.Running || e.PID != 0 {
			t.Errorf("a corrupted binary was started: %+v", e)
		}
	}
	entries, err := os.ReadDir(filepath.Join(tr.dir, "binaries"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("binary cache holds %v after a mismatch", entries)
	}
}

// A cached binary replaced on disk after it was verified is not run when
// the runner starts again: the node fetches the deployed one instead. The
// stand-in leaves a mark when it runs, which a runner that trusts its
// cache without checking would show.
func TestDamagedCachedBinaryFetchedAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := ranUntilHealthy(t, c, "hello")

	digest := fileDigest(t, helloBin)
	cached := filepath.Join(first.dir, "binaries", digest)
	mark := filepath.Join(t.TempDir(), "ran")
	if err := os.Chmod(cached, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, []byte("#!/bin/sh\ntouch "+mark+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	second := startRunner(t, c, func(o *Options) { o.DataDir = first.dir })
	second.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	if _, err := os.Stat(mark); err == nil {
		t.Error("the damaged cached binary ran")
	}
	if got := fileDigest(t, cached); got != digest {
		t.Errorf("cached binary has sha256 %s, want the deployed %s", got, digest)
	}
	if logs := second.logs.String(); !strings.Contains(logs, "cached binary does not match its digest") || !strings.Contains(logs, cached) {
		t.Errorf("the log does not name the damaged file:\n%s", logs)
	}
}

// The same holds for a restart of an instance whose process ended: the
// binary is checked before every exec, not only the first.
func TestDamagedCachedBinaryNotRunAtRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]

	digest := fileDigest(t, helloBin)
	cached := filepath.Join(tr.dir, "binaries", digest)
	mark := filepath.Join(t.TempDir(), "ran")
	stand := cached + ".stand-in"
	if err := os.WriteFile(stand, []byte("#!/bin/sh\ntouch "+mark+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(stand, cached); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "hello", "restarted", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Restarts >= 1 && l[0].State == state.Healthy
	})
	if got := fileDigest(t, cached); got != digest {
		t.Errorf("cached binary has sha256 %s, want the deployed %s", got, digest)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Error("the damaged cached binary ran")
	}
}

func TestSandboxModeUnavailable(t *testing.T) {
	t.Parallel()
	if sandbox.Probe().Sandbox {
		t.Skip("this node can run sandboxes (see TestSandbox*)")
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "boxed", "1.0.0", probeBin, "mode = \"sandbox\"\n")
	in := tr.wait(t, "boxed", "failed", allIn(1, state.Failed))[0]
	if !strings.Contains(in.Reason, "sandbox mode not available on this node") {
		t.Errorf("reason %q", in.Reason)
	}
}

func TestSpecChanges(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hello")
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n")
	before := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))

	// Routes, health and replicas are not part of an instance: nothing
	// restarts, one instance is added.
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 3\n[[routes]]\npath = \"/hello/\"\n")
	after := tr.wait(t, "hello", "3 healthy", allIn(3, state.Healthy))
	for i, in := range before {
		if after[i].ID != in.ID || after[i].PID != in.PID || after[i].Restarts != 0 {
			t.Errorf("slot %d changed on a routes-only edit: %+v -> %+v", i, in, after[i])
		}
	}

	// A new version rolls: each new instance is healthy before the old one
	// of its slot stops.
	c.deploy(t, "hello", "1.1.0", helloBin, "replicas = 3\n[[routes]]\npath = \"/hello/\"\n"+takeOverAtOnce)
	rolled := tr.wait(t, "hello", "3 healthy on 1.1.0", func(l []state.Instance) bool {
		if !allIn(3, state.Healthy)(l) {
			return false
		}
		for _, in := range l {
			if in.Version != "1.1.0" {
				return false
			}
		}
		return true
	})
	events := ev.list()
	at := func(id string, st state.State) int {
		return slices.IndexFunc(events, func(e state.Event) bool { return e.ID == id && e.State == st })
	}
	for i, old := range after {
		newHealthy, oldStopping := at(rolled[i].ID, state.Healthy), at(old.ID, state.Stopping)
		if newHealthy < 0 || oldStopping < 0 || newHealthy > oldStopping {
			t.Errorf("slot %d: new %s healthy at event %d, old %s stopping at event %d", i, rolled[i].ID, newHealthy, old.ID, oldStopping)
		}
		if alive(old.PID) {
			t.Errorf("old process %d of slot %d still alive", old.PID, i)
		}
	}
}

// sealSecret stores value as secret name under a new key and returns the
// key file's contents, not yet written anywhere.
func sealSecret(t *testing.T, c *cluster, name, value string) []byte {
	t.Helper()
	return sealSecrets(t, c, map[string]string{name: value})
}

// sealSecrets stores each of values as the secret it is keyed by, all
// under one new key, and returns the key file's contents, not yet written
// anywhere.
func sealSecrets(t *testing.T, c *cluster, values map[string]string) []byte {
	t.Helper()
	key, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := secrets.ParseRing([]byte(key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range values {
		if err := secrets.Put(context.Background(), c.secrets, ring, name, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	return []byte(key + "\n")
}

// writeKeyFile writes key to a 0600 file of the test and returns its path.
func writeKeyFile(t *testing.T, key []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secretRunner is a runner that has not started, with the key to the
// secret "token" ("v1") that c's narun-secrets holds, and online, the
// store as r.secret reads it while NATS answers.
func secretRunner(t *testing.T) (c *cluster, r *Runner, online *resources) {
	t.Helper()
	c = newCluster(t, nil)
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	r, err := New(Options{Config: config.Runner{NodeID: node, MasterKeyFile: keyFile}, DataDir: t.TempDir(), Conn: c.nc})
	if err != nil {
		t.Fatal(err)
	}
	return c, r, &resources{secrets: c.secrets}
}

// A cached sealed secret that does not open while NATS is away (a damaged
// file) is not a permanent failure: the instance waits, and the store's
// copy serves once NATS answers.
func TestDamagedCachedSecretWaitsForStore(t *testing.T) {
	t.Parallel()
	_, r, online := secretRunner(t)
	ctx := context.Background()
	if v, err := r.secret(ctx, online, "token"); err != nil || string(v) != "v1" {
		t.Fatalf("online: %q %v", v, err)
	}
	cached := filepath.Join(r.sealedDir(), "token")
	for _, damage := range []string{"", "{\"v\":1,", `{"v":1,"alg":"x"}`} {
		if err := os.WriteFile(cached, []byte(damage), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := r.secret(ctx, nil, "token")
		if !errors.Is(err, errOffline) || errors.Is(err, supervisor.ErrPermanent) || !strings.Contains(err.Error(), cached) {
			t.Errorf("cached %q offline: %v; want a retryable error naming the file", damage, err)
		}
		if _, err := os.Lstat(cached); !os.IsNotExist(err) {
			t.Errorf("cached %q kept: %v", damage, err)
		}
	}
	if v, err := r.secret(ctx, online, "token"); err != nil || string(v) != "v1" {
		t.Fatalf("online again: %q %v", v, err)
	}
}

// A secret deleted from the store (secret delete --force, a revocation)
// does not come back from the runner's cached copy once NATS is away.
func TestDeletedSecretNotServedFromCache(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	ctx := context.Background()
	if v, err := r.secret(ctx, online, "token"); err != nil || string(v) != "v1" {
		t.Fatalf("online: %q %v", v, err)
	}
	if err := c.secrets.Purge(ctx, "token"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.secret(ctx, online, "token"); err == nil || !strings.Contains(err.Error(), "is not set") {
		t.Fatalf("online after the delete: %v, want not set", err)
	}
	if v, err := r.secret(ctx, nil, "token"); !errors.Is(err, errOffline) {
		t.Fatalf("offline after the delete: %q, %v; want no cached copy", v, err)
	}
}

// lagging is a replica of narun-secrets behind its leader: it has not the
// secrets set since it went down.
type lagging struct{ jetstream.KeyValue }

func (lagging) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

// A replica behind its leader says "not found" of a secret the leader
// holds: its cached copy stays, for a start while NATS is away.
func TestLaggingReplicaKeepsTheCopyOfASecret(t *testing.T) {
	t.Parallel()
	_, r, online := secretRunner(t)
	ctx := context.Background()
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	behind := &resources{secrets: lagging{online.secrets}}
	if _, err := r.secret(ctx, behind, "token"); err == nil {
		t.Fatal("a replica without the secret: no error")
	}
	r.dropDeletedSecrets(ctx, behind)
	if v, err := r.secret(ctx, nil, "token"); err != nil || string(v) != "v1" {
		t.Fatalf("offline after a lagging replica's answers: %q, %v; want the cached copy", v, err)
	}
}

// A secret deleted while its app runs loses its cached copy at the next
// resync, though the spec still names it: a restart while NATS is away
// must not bring the revoked value back.
func TestResyncDropsTheCopyOfADeletedSecret(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	tr := startRunner(t, c, func(o *Options) {
		o.Config.MasterKeyFile = keyFile
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	c.deploy(t, "vault", "1.0.0", probeBin, "[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n")
	tr.wait(t, "vault", "healthy", allIn(1, state.Healthy))
	cached := filepath.Join(tr.sealedDir(), "token")
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("no cached copy while the secret exists: %v", err)
	}
	if err := c.secrets.Purge(context.Background(), "token"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the cached copy of the deleted secret removed", func() bool {
		_, err := os.Stat(cached)
		return os.IsNotExist(err)
	})
}

func TestSecretDelivery(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	const value = "s3cr3t-value-for-the-test"
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", value))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	c.deploy(t, "vault", "1.0.0", probeBin, "args = [\"secret\"]\n"+
		"[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n"+
		"[[secrets]]\nname = \"token\"\nfile = \"conf/token\"\n")
	in := tr.wait(t, "vault", "healthy", allIn(1, state.Healthy))[0]

	sum := sha256.Sum256([]byte(value))
	want := []string{fmt.Sprintf("env digest %x", sum), fmt.Sprintf("file digest %x mode 400", sum)}
	testutil.Eventually(t, 10*time.Second, "digest lines", func() bool {
		lines := tr.lines("vault")
		return slices.Contains(lines, want[0]) && slices.Contains(lines, want[1])
	})

	// Every line published to NARUN_LOGS, the runner's own log and the
	// process's argv: none holds the value.
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), names.LogsStream)
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	testutil.Eventually(t, 10*time.Second, "lines in NARUN_LOGS", func() bool {
		logged = logged[:0]
		info, err := stream.Info(context.Background())
		if err != nil {
			return false
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			m, err := stream.GetMsg(context.Background(), seq)
			if err == nil {
				logged = append(logged, string(m.Data))
			}
		}
		return slices.ContainsFunc(logged, func(s string) bool { return strings.Contains(s, want[1]) })
	})
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", in.PID))
	for what, text := range map[string]string{"NARUN_LOGS": strings.Join(logged, "\n"), "runner log": tr.logs.String(), "argv": string(cmdline)} {
		if strings.Contains(text, value) {
			t.Errorf("the secret appears in the %s", what)
		}
	}
}

// ignoringTERM is what the probe's stubborn mode prints once SIGTERM is
// ignored: health "none" makes it healthy before that, and a stop sent
// earlier would end it at once.
const ignoringTERM = "probe: ignoring SIGTERM"

// waitLine waits until an instance of app has printed line.
func (tr *testRunner) waitLine(t *testing.T, app, line string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, app+" printing "+line, func() bool {
		return slices.Contains(tr.lines(app), line)
	})
}

// lines returns the kept output lines of an app's instances.
func (tr *testRunner) lines(app string) []string {
	var out []string
	for _, a := range tr.appList() {
		if a.name != app {
			continue
		}
		for _, in := range a.instanceList() {
			for _, l := range in.sup.Lines() {
				out = append(out, l.Line)
			}
		}
	}
	return out
}

func TestHTTPBridge(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "plain"})
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	c.deploy(t, "plain", "1.0.0", helloBin, fmt.Sprintf("args = [\"--http\", %q]\n[http]\nport = %s\n[[routes]]\npath = \"/hello/\"\n", addr, port))
	tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))
	body := postHello(t, gw, "bridge")
	if !strings.Contains(body, "Hello, bridge") {
		t.Errorf("body %s", body)
	}
}

// startGateway runs a gateway with static routes until the test ends and
// returns its base URL.
func startGateway(t testing.TB, c *cluster, routes ...config.Route) string {
	t.Helper()
	cfg := config.Defaults().Gateway
	cfg.Listen, cfg.AdminListen, cfg.TLS, cfg.Routes = "127.0.0.1:0", "", config.GatewayTLS{}, routes
	addrs := make(chan string, 1)
	g, err := gateway.New(gateway.Options{Config: cfg, Conn: c.nc, OnListen: func(name, addr string) {
		if name == "http" {
			addrs <- addr
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Run(ctx); err != nil {
			t.Errorf("gateway: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case a := <-addrs:
		return "http://" + a
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not listen")
		return ""
	}
}

// postHello greets name through the gateway, retrying until a 200.
func postHello(t *testing.T, base, name string) string {
	t.Helper()
	var body string
	testutil.Eventually(t, 10*time.Second, "200 from POST /hello/", func() bool {
		resp, err := http.Post(base+"/hello/", "application/json", strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	return body
}

// startChild runs a runner as a separate process (this test binary), so
// that it can be killed with SIGKILL.
type child struct {
	*exec.Cmd
	// exited is closed once the process was waited for.
	exited chan struct{}
}

func startChild(t *testing.T, natsURL, dataDir, admin string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NARUN_TEST_NATS_URL="+natsURL, "NARUN_TEST_DATA="+dataDir, "NARUN_TEST_ADMIN="+admin)
	// A file, not a pipe: Wait must not depend on who else holds it.
	out, err := os.CreateTemp(t.TempDir(), "runner-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{Cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
		// A runner killed outright leaves its cgroups to the next runner
		// of the data dir, and a test's data dir has none.
		if err := sandbox.RemoveScope(cgroupScope(dataDir)); err != nil {
			t.Errorf("remove the killed runner's cgroups: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("runner child output:\n%s", b)
		}
	})
	return c
}

// healthyPIDs reads the pids of the healthy instances from a heartbeat.
func healthyPIDs(t *testing.T, c *cluster) []int {
	t.Helper()
	e, err := c.nodes.Get(context.Background(), node)
	if err != nil {
		return nil
	}
	var n state.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	var pids []int
	for _, in := range n.Instances {
		if in.State == state.Healthy {
			pids = append(pids, in.PID)
		}
	}
	slices.Sort(pids)
	return pids
}

// healthyOnAdmin counts the healthy instances in a runner's /metrics.
func healthyOnAdmin(admin string) int {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "narun_runner_instance_healthy{") && strings.HasSuffix(l, " 1") {
			n++
		}
	}
	return n
}

func waitDead(t *testing.T, pids []int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("processes %v to die", pids), func() bool {
		return !slices.ContainsFunc(pids, alive)
	})
}

func TestRunnerKilled(t *testing.T) {
	t.Parallel()
	natsDir := t.TempDir()
	srv := natstest.StartConfig(t, embednats.Config{Listen: testutil.FreeAddr(t), DataDir: natsDir})
	// Taken now: once the server is shut down it has no address, and an
	// empty URL would mean nats.go's default, which may be a real server.
	url := srv.ClientURL()
	c := newCluster(t, srv)
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n")
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	data := t.TempDir()

	admin := testutil.FreeAddr(t)
	first := startChild(t, url, data, admin)
	var pids []int
	testutil.Eventually(t, 30*time.Second, "3 healthy instances in the heartbeat", func() bool {
		pids = healthyPIDs(t, c)
		return len(pids) == 3
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The kernel sends the instances their parent-death signal only at
	// the end of the runner's exit, after it has torn down its memory,
	// which under load (a -race build's) can take much of waitDead's
	// bound: that bound counts from the runner's end. The next runner
	// also takes the same admin address, which this one holds until then.
	<-first.exited
	waitDead(t, pids)

	// The leftover heartbeat still lists the old pids until it is replaced.
	restarted := time.Now()
	second := startChild(t, url, data, admin)
	var again []int
	testutil.Eventually(t, 5*time.Second, "3 new healthy instances after the runner restarted", func() bool {
		again = healthyPIDs(t, c)
		return len(again) == 3 && !slices.ContainsFunc(again, func(p int) bool { return slices.Contains(pids, p) })
	})
	t.Logf("runner restart to 3 healthy instances: %v", time.Since(restarted))

	// Killed again, and restarted while NATS is down: the cached specs and
	// binaries bring the apps back.
	if err := second.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-second.exited
	waitDead(t, again)
	srv.Shutdown()
	admin = testutil.FreeAddr(t)
	offline := time.Now()
	startChild(t, url, data, admin)
	testutil.Eventually(t, 5*time.Second, "3 healthy instances with NATS down", func() bool {
		return healthyOnAdmin(admin) == 3
	})
	t.Logf("runner restart with NATS down to 3 healthy instances: %v", time.Since(offline))
}

// A runner that starts while NATS is up runs what narun-apps holds now, not
// the specs it cached before: neither the version replaced nor the app
// deleted while it was down starts, even for a moment.
func TestStartFollowsAppsNotCache(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	first := ranUntilHealthy(t, c, "hello", "probe")

	c.deploy(t, "hello", "2.0.0", helloBin, "")
	c.remove(t, "probe")
	hello, probe := c.watchEvents(t, "hello"), c.watchEvents(t, "probe")
	second := startRunner(t, c, func(o *Options) { o.DataDir = first.dir })
	// One publisher, so the events of anything started before arrive first.
	testutil.Eventually(t, 30*time.Second, "hello 2.0.0 healthy", func() bool {
		return slices.ContainsFunc(hello.list(), func(e state.Event) bool {
			return e.Version == "2.0.0" && e.State == state.Healthy
		})
	})
	for _, e := range hello.list() {
		if e.Version != "2.0.0" {
			t.Errorf("cached spec ran: %+v", e)
		}
	}
	if l := probe.list(); len(l) > 0 {
		t.Errorf("app deleted while the runner was down started: %+v", l)
	}
	testutil.Eventually(t, 10*time.Second, "cached spec of the deleted app removed", func() bool {
		_, err := os.Stat(filepath.Join(first.dir, "specs", "probe.toml"))
		return os.IsNotExist(err)
	})
	if logs := second.logs.String(); strings.Contains(logs, "version=1.0.0") || strings.Contains(logs, "app=probe") {
		t.Errorf("the cached specs were acted on:\n%s", logs)
	}
}

// A narun-apps that lost its entries (a damaged JetStream directory
// restores none of them, as one whose block file a power cut truncated
// does) holds no record of an app, not even its deletion: the node keeps
// running it from its cached spec, across resyncs, and says so, rather
// than erasing the last copy of the spec. An app deleted while the node
// was away, whose delete marker is there, still goes.
func TestAppLostByStoreRunsFromCache(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	first := ranUntilHealthy(t, c, "hello", "probe")

	c.recreateApps(t)
	c.remove(t, "probe")
	second := startRunner(t, c, func(o *Options) {
		o.DataDir = first.dir
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	hello := second.wait(t, "hello", "healthy from the cached spec", allIn(1, state.Healthy))[0]
	lost := "narun-apps has no record of this app"
	testutil.Eventually(t, 10*time.Second, "a resync to pass", func() bool {
		return strings.Count(second.logs.String(), lost) >= 3
	})
	if now := second.of("hello"); len(now) != 1 || now[0].PID != hello.PID {
		t.Errorf("a resync stopped the app the store lost: %+v", now)
	}
	if !strings.Contains(second.logs.String(), filepath.Join(first.dir, "specs", "hello.toml")) {
		t.Errorf("the log does not name the cached spec:\n%s", second.logs.String())
	}
	if l := second.of("probe"); len(l) > 0 {
		t.Errorf("app deleted while the runner was down started: %+v", l)
	}
	if _, err := os.Stat(filepath.Join(first.dir, "specs", "probe.toml")); !os.IsNotExist(err) {
		t.Errorf("cached spec of the deleted app kept: %v", err)
	}

	// What narun ctl app delete stores stops it.
	c.remove(t, "hello")
	second.wait(t, "hello", "gone", func(l []state.Instance) bool { return len(l) == 0 })
	testutil.Eventually(t, 10*time.Second, "cached spec of the deleted app removed", func() bool {
		_, err := os.Stat(filepath.Join(first.dir, "specs", "hello.toml"))
		return os.IsNotExist(err)
	})
}

// An app narun-apps has no record of whose cached spec is damaged too
// (zeros where a power cut left its blocks unwritten) has nothing left to
// run from: the runner says that it cannot start, naming the file and
// what is wrong with it, and to deploy it again; not that it runs from
// its cached spec, and then that the spec is refused.
func TestAppLostByStoreWithDamagedCacheSaysSo(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := ranUntilHealthy(t, c, "hello")
	cached := filepath.Join(first.dir, "specs", "hello.toml")
	raw, err := os.ReadFile(cached)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, make([]byte, len(raw)), 0o600); err != nil {
		t.Fatal(err)
	}

	c.recreateApps(t)
	second := startRunner(t, c, func(o *Options) {
		o.DataDir = first.dir
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	testutil.Eventually(t, 10*time.Second, "resyncs to pass", func() bool {
		return strings.Count(second.logs.String(), cached) >= 3
	})
	logs := second.logs.String()
	for _, want := range []string{"cannot start", "cached spec is damaged", "invalid spec", "deploy it again"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
	for _, not := range []string{"it runs from its cached spec", "instances left as they are"} {
		if strings.Contains(logs, not) {
			t.Errorf("the log says %q:\n%s", not, logs)
		}
	}
	if l := second.of("hello"); len(l) > 0 {
		t.Errorf("an instance started: %+v", l)
	}
}

// The temporary files of a download, or of a write of a spec or of the
// sequences, that a power cut interrupted are removed when the runner
// starts again; the files it keeps, and another's, are not.
func TestInterruptedWritesCleanedAtStart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := ranUntilHealthy(t, c, "hello")

	left := []string{
		filepath.Join(first.dir, "binaries", ".tmp-123456"),
		filepath.Join(first.dir, "specs", ".hello.toml.tmp-654321"),
		filepath.Join(first.dir, "files", ".tmp-42"),
		filepath.Join(first.dir, "secrets", ".db.tmp-7"),
		filepath.Join(first.dir, "."+sequencesFile+".tmp-99"),
		filepath.Join(first.dir, "."+nodeIDFile+".tmp-98"),
	}
	// Another's temporary beside them is not the runner's to remove.
	other := filepath.Join(first.dir, ".routes.json.tmp-97")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	second := startRunner(t, c, func(o *Options) { o.DataDir = first.dir })
	second.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	for _, p := range left {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("another's temporary file removed: %v", err)
	}
	if got := fileDigest(t, filepath.Join(first.dir, "binaries", fileDigest(t, helloBin))); got != fileDigest(t, helloBin) {
		t.Errorf("cached binary changed: %s", got)
	}
	if _, err := os.Stat(filepath.Join(first.dir, "specs", "hello.toml")); err != nil {
		t.Errorf("cached spec: %v", err)
	}
}

// A data dir started under another node id (a host name changed by DHCP
// or a re-image, with no [runner] node_id) says so: the apps that named
// the old id stop here, and nothing else would tell why.
func TestNodeIDChangeWarned(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	dir := t.TempDir()
	changed := "node id changed since this data dir last ran"
	for _, step := range []struct {
		id   string
		warn bool
	}{{"n1", false}, {"n1", false}, {"n2", true}, {"n2", false}} {
		tr := startRunner(t, c, func(o *Options) {
			o.DataDir = dir
			o.Config.NodeID = step.id
		})
		tr.stop()
		logs := tr.logs.String()
		if got := strings.Contains(logs, changed); got != step.warn {
			t.Errorf("start as %s: warned %v, want %v:\n%s", step.id, got, step.warn, logs)
		}
		if step.warn && !strings.Contains(logs, "old=n1 new=n2") {
			t.Errorf("the warning does not name both ids:\n%s", logs)
		}
	}
}

// A data dir is free once Run returns, though other goroutines start
// processes meanwhile: each holds a copy of the lock's descriptor until it
// execs, and a runner started right after was refused as if another one
// ran there (TestNodeIDChangeWarned failed so under load).
func TestDataDirFreeOnceRunReturns(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var starters sync.WaitGroup
	defer starters.Wait()
	defer cancel()
	for range 2 {
		starters.Go(func() {
			for ctx.Err() == nil {
				_ = exec.Command("/bin/true").Run()
			}
		})
	}
	stopped, stop := context.WithCancel(context.Background())
	stop()
	for i := range 20 {
		r, err := New(Options{Config: config.Runner{NodeID: node}, DataDir: dir, Conn: c.nc, AppNATSURL: c.srv.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(stopped); err != nil {
			t.Fatalf("run %d on the data dir the one before returned from: %v", i+1, err)
		}
	}
}

// A cached spec damaged on disk, read while NATS is away, is refused, and
// the log names the file: it reads as an unsigned spec, which would
// otherwise send the operator after signing keys.
func TestDamagedCachedSpecNamed(t *testing.T) {
	t.Parallel()
	natsCfg := embednats.Config{Listen: testutil.FreeAddr(t), DataDir: t.TempDir()}
	srv := natstest.StartConfig(t, natsCfg)
	c := newCluster(t, srv)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := startRunner(t, c, func(o *Options) { o.Conn = nc })
	first.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	first.stop()
	srv.Shutdown()
	testutil.Eventually(t, 10*time.Second, "NATS gone", func() bool { return !nc.IsConnected() })

	cached := filepath.Join(first.dir, "specs", "hello.toml")
	raw, err := os.ReadFile(cached)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	second := startRunner(t, c, func(o *Options) {
		o.Conn = nc
		o.DataDir = first.dir
	})
	testutil.Eventually(t, 10*time.Second, "the damaged cached spec refused", func() bool {
		return strings.Contains(second.logs.String(), "spec not applied")
	})
	if logs := second.logs.String(); !strings.Contains(logs, "cached_spec="+cached) {
		t.Errorf("the refusal does not name the cached file:\n%s", logs)
	}
	if l := second.of("hello"); len(l) > 0 && l[0].PID != 0 {
		t.Errorf("the damaged spec ran: %+v", l)
	}
}

func TestNATSOutage(t *testing.T) {
	t.Parallel()
	natsCfg := embednats.Config{Listen: testutil.FreeAddr(t), DataDir: t.TempDir()}
	srv := natstest.StartConfig(t, natsCfg)
	c := newCluster(t, srv)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tr := startRunner(t, c, func(o *Options) { o.Conn = nc })
	c.deploy(t, "hello", "1.0.0", helloBin, "[[routes]]\npath = \"/hello/\"\n")
	before := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]

	srv.Shutdown()
	testutil.Eventually(t, 10*time.Second, "runner to notice NATS is gone", func() bool { return !nc.IsConnected() })
	// A crash while NATS is away restarts from the cached binary.
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	during := tr.wait(t, "hello", "restart without NATS", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].PID != before.PID && l[0].State.Up()
	})[0]

	srv2, err := embednats.Start(natsCfg)
	if err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	t.Cleanup(srv2.Shutdown)
	c2 := newCluster(t, srv2)
	testutil.Eventually(t, 30*time.Second, "runner to reconnect", nc.IsConnected)
	// The watch resumed: a new replica count arrives without touching the
	// instance that ran through the outage.
	c2.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n[[routes]]\npath = \"/hello/\"\n")
	after := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))
	if after[0].ID != during.ID || after[0].PID != during.PID {
		t.Errorf("instance replaced after the outage: %+v -> %+v", during, after[0])
	}
	testutil.Eventually(t, 10*time.Second, "heartbeat on the restarted server", func() bool {
		return len(healthyPIDs(t, c2)) == 2
	})
	start := time.Now()
	tr.stop()
	t.Logf("runner stopped in %v", time.Since(start))
}

// An instance whose binary could not be fetched while NATS was away backs
// off, up to max_backoff after a long outage; once NATS is back it is
// fetched again at once, not at the end of that wait. The spec's first
// backoff of an hour stands for the wait a long outage builds up.
func TestFetchRetriedOnceNATSIsBack(t *testing.T) {
	t.Parallel()
	natsCfg := embednats.Config{Listen: testutil.FreeAddr(t), DataDir: t.TempDir()}
	srv := natstest.StartConfig(t, natsCfg)
	c := newCluster(t, srv)
	first := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "[restart]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\n")
	first.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	first.stop()
	if err := os.RemoveAll(filepath.Join(first.dir, "binaries")); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()

	nc, err := nats.Connect("nats://"+natsCfg.Listen, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	second := startRunner(t, c, func(o *Options) {
		o.Conn = nc
		o.DataDir = first.dir
	})
	second.wait(t, "hello", "backing off without its binary", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Backoff
	})
	srv2, err := embednats.Start(natsCfg)
	if err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	t.Cleanup(srv2.Shutdown)
	second.wait(t, "hello", "healthy once NATS is back", allIn(1, state.Healthy))
}

func TestOldBinariesCollected(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(50 * time.Millisecond) })
	c.deploy(t, "app", "1.0.0", probeBin, "")
	tr.wait(t, "app", "healthy", allIn(1, state.Healthy))
	c.deploy(t, "app", "2.0.0", helloBin, takeOverAtOnce)
	tr.wait(t, "app", "healthy on 2.0.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "2.0.0"
	})
	hello, err := os.ReadFile(helloBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(hello)
	testutil.Eventually(t, 10*time.Second, "only the binary in use cached", func() bool {
		entries, _ := os.ReadDir(filepath.Join(tr.dir, "binaries"))
		return len(entries) == 1 && entries[0].Name() == hex.EncodeToString(sum[:])
	})
	// Left over from a deleted app: collected too.
	for _, p := range []string{filepath.Join(tr.dir, "files", "gone"), filepath.Join(tr.dir, "secrets", "gone")} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "unused "+p+" removed", func() bool {
			_, err := os.Stat(p)
			return os.IsNotExist(err)
		})
	}
}

func TestRollingUpdateUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	const routes = "[[routes]]\npath = \"/hello/\"\n"
	c.deploy(t, "hello", "1.0.0", helloBin, routes)
	old := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "hello"})
	postHello(t, gw, "warm-up")

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var slowest time.Duration
	// sent is when the request in flight left, zero between requests: a
	// timeout below says whether one request hung or all were slow.
	var sent atomic.Int64
	fail := func(why string) {
		failed.Add(1)
		mu.Lock()
		failures = append(failures, why)
		mu.Unlock()
	}
	// A request that hangs fails at clientTimeout and is counted below.
	const clientTimeout = 10 * time.Second
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: clientTimeout}
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			sent.Store(start.UnixNano())
			resp, err := client.Post(gw+"/hello/", "application/json", strings.NewReader(`{"name":"load"}`))
			var b []byte
			if err == nil {
				b, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			took := time.Since(start)
			sent.Store(0)
			mu.Lock()
			slowest = max(slowest, took)
			mu.Unlock()
			if err != nil {
				fail(fmt.Sprintf("after %s: %v", took, err))
				continue
			}
			if resp.StatusCode != http.StatusOK {
				fail(fmt.Sprintf("after %s: %s: %s", took, resp.Status, b))
				continue
			}
			ok.Add(1)
		}
	}()
	// A Fatal below must not leave the loop posting for the rest of the run.
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		<-done
	})
	defer stopLoad()
	defer func() {
		if !t.Failed() {
			return
		}
		inFlight := "none"
		if at := sent.Load(); at != 0 {
			// The time of day lines it up with the runner log below.
			at := time.Unix(0, at)
			inFlight = fmt.Sprintf("%s (sent %s)", time.Since(at), at.UTC().Format("15:04:05.000"))
		}
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%d requests served, %d failed %q, slowest %s, the one in flight for %s",
			ok.Load(), failed.Load(), failures, slowest, inFlight)
	}()
	c.deploy(t, "hello", "1.1.0", helloBin, routes+takeOverAtOnce)
	tr.wait(t, "hello", "rolled to 1.1.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.1.0"
	})
	waitDead(t, []int{old.PID})
	// Keep the load on the new instance for a moment, counted in requests.
	// The wait outlasts the client's timeout: a request that hung on the
	// old instance as it drained then ends as a failure, named below,
	// rather than in a timeout here that says nothing of it, and a
	// saturated CPU that only slows every request does not fail the test.
	n := ok.Load()
	testutil.Eventually(t, 3*clientTimeout, "50 more requests", func() bool { return ok.Load() >= n+50 })
	stopLoad()
	t.Logf("%d requests served during the rollout, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed during the rollout: %q", failed.Load(), failures[:min(len(failures), 5)])
	}
}

func TestFilesPlacedReadOnly(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	if _, err := c.files.PutBytes(context.Background(), "appconf", []byte("greeting=hi")); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"etc/app.conf\"]\n[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n")
	tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))
	want := `cat "greeting=hi" mode 444`
	testutil.Eventually(t, 10*time.Second, "the file as the app sees it", func() bool {
		return slices.Contains(tr.lines("reader"), want)
	})

	// A file missing from the store is a reason, not a start.
	c.deploy(t, "lost", "1.0.0", probeBin, "[[files]]\nobject = \"nothere\"\npath = \"x\"\n")
	lost := tr.wait(t, "lost", "backoff", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Backoff
	})[0]
	if !strings.Contains(lost.Reason, `file "nothere" not found`) {
		t.Errorf("reason %q", lost.Reason)
	}
}

func TestRestartRequestRolls(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n"+takeOverAtOnce)
	before := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))
	c.restart(t, "hello")
	after := tr.wait(t, "hello", "2 new healthy instances", func(l []state.Instance) bool {
		return allIn(2, state.Healthy)(l) && l[0].ID != before[0].ID && l[1].ID != before[1].ID
	})
	waitDead(t, []int{before[0].PID, before[1].PID})
	if after[0].Version != "1.0.0" {
		t.Errorf("restart changed the version: %+v", after[0])
	}
}

// deployStuck deploys the app stuck, which ignores SIGTERM and has an
// hour to stop, and returns its instance once it ignores the signal; the
// process is killed at the end of the test.
func deployStuck(t *testing.T, c *cluster, tr *testRunner) state.Instance {
	t.Helper()
	c.deploy(t, "stuck", "1.0.0", probeBin, "args = [\"stubborn\"]\nstop_timeout = \"1h\"\n")
	in := tr.wait(t, "stuck", "healthy", allIn(1, state.Healthy))[0]
	t.Cleanup(func() { syscall.Kill(in.PID, syscall.SIGKILL) })
	tr.waitLine(t, "stuck", ignoringTERM)
	return in
}

// TestStopFollowsTheSpec lowers the stop timeout of a running instance
// with a spec that restarts nothing (stop_timeout is not in the
// fingerprint): the delete that follows kills it once the new 200ms are
// over, not after the hour it was started with.
func TestStopFollowsTheSpec(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	in := deployStuck(t, c, tr)
	c.deploy(t, "stuck", "1.0.0", probeBin, "args = [\"stubborn\"]\nstop_timeout = \"200ms\"\n")
	// The runner caches a spec just before it applies it, and applies
	// the deletion only after: once the cache has the new timeout, the
	// delete is the next thing it reads.
	cached := filepath.Join(tr.dir, "specs", "stuck.toml")
	testutil.Eventually(t, 10*time.Second, "the new spec cached", func() bool {
		data, err := os.ReadFile(cached)
		return err == nil && strings.Contains(string(data), `stop_timeout = "200ms"`)
	})
	if now := tr.of("stuck"); len(now) != 1 || now[0].ID != in.ID {
		t.Fatalf("instances %+v, want %s kept: the spec changed nothing it runs", now, in.ID)
	}
	c.remove(t, "stuck")
	tr.wait(t, "stuck", "gone once the new stop timeout is over", func(l []state.Instance) bool { return len(l) == 0 })
	waitDead(t, []int{in.PID})
}

// TestReplacedInstanceStopsAsItsSpecSays rolls out a new version whose
// stop_signal or stop_timeout would cut short the old one's stop: the old
// build was started under its own spec, which is the one that knows what
// it needs to stop (Kubernetes gives an old pod its own grace period, Nomad
// an old allocation its own kill_timeout). Each old instance takes a
// second to flush at SIGTERM, with a minute to do so, and must exit
// cleanly, whether its slot is rolled over or dropped by a scale-down.
func TestReplacedInstanceStopsAsItsSpecSays(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	for _, tc := range []struct {
		name, app string
		replicas  int
		newSpec   string
	}{
		{"shorter stop_timeout", "shorter", 1, "stop_timeout = \"100ms\"\n"},
		{"stop_signal the old build does not handle", "signal", 1, "stop_signal = \"SIGINT\"\n"},
		{"scale-down", "fewer", 2, "replicas = 1\nstop_timeout = \"100ms\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := c.watchEvents(t, tc.app)
			// The probe flushes in its instance's directory.
			c.deploy(t, tc.app, "1.0.0", probeBin, fmt.Sprintf("replicas = %d\nargs = [\"flush\", \".\"]\nstop_timeout = \"1m\"\n", tc.replicas))
			var old []string
			for _, in := range tr.wait(t, tc.app, "healthy", allIn(tc.replicas, state.Healthy)) {
				old = append(old, in.ID)
			}
			testutil.Eventually(t, 10*time.Second, "the old instances ready for SIGTERM", func() bool {
				ready, _ := filepath.Glob(filepath.Join(tr.dir, "instances", tc.app, "*", "ready"))
				return len(ready) == tc.replicas
			})
			c.deploy(t, tc.app, "2.0.0", probeBin, tc.newSpec+takeOverAtOnce)
			tr.wait(t, tc.app, "only 2.0.0", func(l []state.Instance) bool {
				return allIn(1, state.Healthy)(l) && l[0].Version == "2.0.0"
			})
			exits := func() map[string]int {
				codes := map[string]int{}
				for _, e := range ev.list() {
					if e.State == state.Stopped && e.ExitCode != nil && slices.Contains(old, e.ID) {
						codes[e.ID] = *e.ExitCode
					}
				}
				return codes
			}
			testutil.Eventually(t, 10*time.Second, "the old instances' stopped events", func() bool { return len(exits()) == len(old) })
			for id, code := range exits() {
				if code != 0 {
					t.Errorf("old instance %s exit code %d, want a clean exit after its flush: it was stopped as the new spec says, not as its own does", id, code)
				}
			}
		})
	}
}

// TestLongestStopCountsReplacedInstances halts a rollout, which keeps the
// old instance beside the new one: the runner's own stop asks the service
// manager for the old one's stop_timeout, which it still stops with, not
// for the shorter one of the spec it now applies.
func TestLongestStopCountsReplacedInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startTunedRunner(t, c, nil, func(r *Runner) { r.rolloutSlack = 0 })
	c.deploy(t, "probe", "1.0.0", probeBin, "stop_timeout = \"1m\"\n")
	tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))
	_, check := checkedProbe(t, false)
	c.deploy(t, "probe", "1.1.0", probeBin, "stop_timeout = \"100ms\"\n"+check+"start_grace = \"100ms\"\nmin_healthy = 0\n")
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	if got := tr.longestStop(); got != time.Minute {
		t.Errorf("longest stop %v, want the old instance's 1m", got)
	}
}

// TestReplacedInstanceRestartsAsItsSpecSays rolls out a new version that
// says never to restart, while its instance, not yet healthy, holds the
// rollout with the old one serving: the old build, killed meanwhile, is
// restarted by the [restart] of the spec it was started with, written for
// it, not given up by the new build's.
func TestReplacedInstanceRestartsAsItsSpecSays(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "probe", "1.0.0", probeBin, "[restart]\npolicy = \"on-failure\"\ninitial_backoff = \"100ms\"\n")
	old := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]
	_, check := checkedProbe(t, false)
	// The check never passes, and start_grace keeps the rollout waiting
	// for it: the old instance serves on meanwhile.
	c.deploy(t, "probe", "2.0.0", probeBin, check+"start_grace = \"1h\"\n[restart]\npolicy = \"never\"\n")
	tr.wait(t, "probe", "2.0.0 started beside 1.0.0", func(l []state.Instance) bool {
		return len(l) == 2 && slices.ContainsFunc(l, func(in state.Instance) bool { return in.Version == "2.0.0" })
	})
	waitRestarted(t, tr, "probe", old)
}

// waitRestarted kills in's process and waits for its supervisor to start
// it again; it fails the test if the instance ends instead.
func waitRestarted(t *testing.T, tr *testRunner, app string, in state.Instance) {
	t.Helper()
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill instance %s: %v", in.ID, err)
	}
	after := tr.wait(t, app, "instance "+in.ID+" restarted or ended", func(l []state.Instance) bool {
		i := slices.IndexFunc(l, func(e state.Instance) bool { return e.ID == in.ID })
		return i >= 0 && (l[i].State.Final() || l[i].Restarts > in.Restarts && l[i].State.Up() && l[i].PID != in.PID)
	})
	if i := slices.IndexFunc(after, func(e state.Instance) bool { return e.ID == in.ID }); after[i].State.Final() {
		t.Errorf("instance %s (%s) %s after its crash, not restarted: its own spec's [restart] restarts it", in.ID, in.Version, after[i].State)
	}
}

// TestAppsIndependent holds one app in a stop that cannot finish and shows
// that another app still deploys and the heartbeat goes on.
func TestAppsIndependent(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	stuck := deployStuck(t, c, tr)
	c.remove(t, "stuck")
	tr.wait(t, "stuck", "stopping", allIn(1, state.Stopping))

	c.deploy(t, "other", "1.0.0", probeBin, "")
	tr.wait(t, "other", "healthy while another app is stuck stopping", allIn(1, state.Healthy))
	since := time.Now()
	testutil.Eventually(t, 10*time.Second, "a fresh heartbeat", func() bool {
		e, err := c.nodes.Get(context.Background(), node)
		if err != nil {
			return false
		}
		var n state.Node
		return json.Unmarshal(e.Value(), &n) == nil && n.Time.After(since)
	})
	if err := syscall.Kill(stuck.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "stuck", "gone once killed", func(l []state.Instance) bool { return len(l) == 0 })
}

// TestHeartbeatFollowsStateChanges uses a heartbeat interval longer than
// the test: the heartbeat that shows the instance healthy comes from the
// state change itself.
func TestHeartbeatFollowsStateChanges(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	startRunner(t, c, func(o *Options) { o.Config.HeartbeatInterval = config.Duration(time.Hour) })
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	testutil.Eventually(t, 10*time.Second, "a heartbeat with the healthy instance", func() bool {
		return len(healthyPIDs(t, c)) == 1
	})
}

// TestStaleGroupKilled kills a runner whose app forked: the parent-death
// signal ends the app but not its child, which the next runner kills as
// part of the stale process group before starting anything.
func TestStaleGroupKilled(t *testing.T) {
	t.Parallel()
	srv := natstest.StartConfig(t, embednats.Config{Listen: testutil.FreeAddr(t)})
	c := newCluster(t, srv)
	c.deploy(t, "forker", "1.0.0", probeBin, "args = [\"fork\"]\n")
	data := t.TempDir()
	first := startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	var grandchild int
	testutil.Eventually(t, 30*time.Second, "the forked child's pid in NARUN_LOGS", func() bool {
		grandchild = forkedPID(t, c)
		return grandchild > 0
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	if !alive(grandchild) {
		t.Fatalf("the forked child %d died with the runner; this test needs it to outlive it", grandchild)
	}
	startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	waitDead(t, []int{grandchild})
}

// forkedPID finds the "forked PID" line of the forker app in NARUN_LOGS.
func forkedPID(t *testing.T, c *cluster) int {
	t.Helper()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), names.LogsStream)
	if err != nil {
		return 0
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		return 0
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := stream.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		var l state.LogLine
		if json.Unmarshal(m.Data, &l) != nil || l.App != "forker" {
			continue
		}
		if f, ok := strings.CutPrefix(l.Line, "forked "); ok {
			pid, _ := strconv.Atoi(f)
			return pid
		}
	}
	return 0
}

// A key file put in place after the runner started is picked up at the
// next start attempt; no runner restart.
func TestSecretKeyArrivesLater(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	key := sealSecret(t, c, "token", "late")
	keyFile := filepath.Join(t.TempDir(), "keys")
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	c.deploy(t, "late", "1.0.0", probeBin, "args = [\"secret\"]\n[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n")
	tr.wait(t, "late", "a start refused for the missing key", func(ins []state.Instance) bool {
		return len(ins) == 1 && strings.Contains(ins[0].Reason, "secret key") && !ins[0].Healthy
	})
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "late", "healthy once the key exists", allIn(1, state.Healthy))
}

// A rollout that halted because its new instance was not healthy in time
// resumes when that instance turns healthy later: the old one stops.
func TestHaltedRolloutResumes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	// Halt as soon as start_grace is over instead of a minute later.
	tr := startTunedRunner(t, c, nil, func(r *Runner) { r.rolloutSlack = 0 })
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	old := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]

	// The new version's health check fails until the rollout has halted:
	// the new probe listens on the check's port (the check wants the
	// instance's own listener) and forwards to a server that answers as
	// told.
	healthy, check := checkedProbe(t, false)
	c.deploy(t, "probe", "1.1.0", probeBin, check+"start_grace = \"100ms\"\nmin_healthy = 0\n")
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	if !alive(old.PID) {
		t.Fatal("halted rollout stopped the old instance")
	}

	healthy.Store(true)
	tr.wait(t, "probe", "rolled to 1.1.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.1.0"
	})
	waitDead(t, []int{old.PID})
}

// A replica added while a rollout is halted starts at once: the halt holds
// back only the replacement of the instance serving in the slot before.
func TestReplicasAddedWhileRolloutHalted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startTunedRunner(t, c, nil, func(r *Runner) { r.rolloutSlack = 0 })
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	old := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]

	_, check := checkedProbe(t, false)
	unhealthy := check + "start_grace = \"100ms\"\nmin_healthy = 0\n"
	c.deploy(t, "probe", "1.1.0", probeBin, unhealthy)
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	c.deploy(t, "probe", "1.1.0", probeBin, "replicas = 2\n"+unhealthy)
	tr.wait(t, "probe", "slot 1 started", func(l []state.Instance) bool {
		return slices.ContainsFunc(l, func(in state.Instance) bool { return in.Slot == 1 && in.Version == "1.1.0" })
	})
	if !alive(old.PID) {
		t.Fatal("the halted rollout's old instance was stopped")
	}
}

// A rollout that does not finish (its new instance never turns healthy) is
// replaced by the next one, not kept beside it: each deploy of a version
// that crash-loops added one more instance to the slot, all restarting for
// ever, while the old one served. The slot keeps the instance serving and
// the newest one.
func TestNewRolloutReplacesUnfinishedOne(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	old := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]

	crash := "args = [\"crash\"]\n[restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n"
	c.deploy(t, "probe", "1.1.0", probeBin, crash)
	tr.wait(t, "probe", "1.1.0 crash-looping beside 1.0.0", func(l []state.Instance) bool {
		return len(l) == 2 && slices.ContainsFunc(l, func(in state.Instance) bool { return in.Version == "1.1.0" && in.Restarts > 0 })
	})
	c.deploy(t, "probe", "1.2.0", probeBin, crash)
	tr.wait(t, "probe", "1.2.0 beside 1.0.0, and 1.1.0 gone", func(l []state.Instance) bool {
		var versions []string
		for _, in := range l {
			versions = append(versions, in.Version)
		}
		slices.Sort(versions)
		return slices.Equal(versions, []string{"1.0.0", "1.2.0"})
	})
	if !alive(old.PID) {
		t.Fatal("the new rollout stopped the instance serving")
	}
}

// A new instance that passes its first health check and crashes a moment
// later does not take its slot: the old instance serves on, and the
// rollout halts once the new one gives up. One that crashes once and then
// stays up takes over only after min_healthy counted from its new process.
func TestRolloutWaitsMinHealthy(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	ev := c.watchEvents(t, "probe")
	c.deploy(t, "probe", "1.0.0", probeBin, "")
	old := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]

	// The probe exits as it accepts the second check's connection, one
	// interval after the first made it healthy: well within the default
	// min_healthy, as an app that fails right after its start does.
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	health := "[health]\ntype = \"tcp\"\nport = " + port + "\ninterval = \"100ms\"\n"
	c.deploy(t, "probe", "1.1.0", probeBin, fmt.Sprintf("args = [\"crashafter\", %q, \"2\"]\n[restart]\nmax_failures = 2\n", addr)+health)
	failed := tr.wait(t, "probe", "the new instance to give up", func(l []state.Instance) bool {
		return slices.ContainsFunc(l, func(in state.Instance) bool { return in.Version == "1.1.0" && in.State == state.Failed })
	})
	if !slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.Version == "1.1.0" && e.State == state.Healthy }) {
		t.Fatalf("the new instance was never healthy, so this tests nothing: %+v", failed)
	}
	testutil.Eventually(t, 10*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	if !alive(old.PID) {
		t.Fatal("the rollout stopped the old instance for one that crashed right after its first passed check")
	}

	c.deploy(t, "probe", "1.2.0", probeBin, fmt.Sprintf("args = [\"crashafter\", %q, \"2\", \"once\"]\n", addr)+health)
	rolled := tr.wait(t, "probe", "rolled to 1.2.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.2.0"
	})[0]
	waitDead(t, []int{old.PID})
	if rolled.Restarts != 1 {
		t.Errorf("new instance %+v: want it restarted once", rolled)
	}
	// The process is gone before its stopping event, published just
	// before the stop, need have reached this watcher.
	oldStopping := func(e state.Event) bool { return e.ID == old.ID && e.State == state.Stopping }
	testutil.Eventually(t, 10*time.Second, "the old instance's stopping event", func() bool {
		return slices.ContainsFunc(ev.list(), oldStopping)
	})
	events := ev.list()
	stopping := slices.IndexFunc(events, oldStopping)
	again := slices.IndexFunc(events, func(e state.Event) bool { return e.ID == rolled.ID && e.State == state.Healthy && e.Restarts == 1 })
	if stopping < 0 || again < 0 || stopping < again {
		t.Errorf("old instance stopping at event %d, new one healthy after its restart at event %d: want the old one stopped after", stopping, again)
	}
}

// [health] restart_after reaches the supervisor: an instance whose check
// fails after it was healthy is stopped and started again, and its events
// say it was unhealthy.
func TestUnhealthyInstanceRestarted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	ev := c.watchEvents(t, "probe")
	// The probe listens on the check's port and forwards to a server
	// that stands for the app's handler, failing while told to.
	healthy, check := checkedProbe(t, true)
	c.deploy(t, "probe", "1.0.0", probeBin, check+"failures = 1\nrestart_after = 2\n")
	first := tr.wait(t, "probe", "healthy", allIn(1, state.Healthy))[0]

	healthy.Store(false)
	const why = "unhealthy after 2 failed health checks in a row: GET /: 503 Service Unavailable"
	testutil.Eventually(t, 30*time.Second, "an event of the stop as unhealthy", func() bool {
		return slices.ContainsFunc(ev.list(), func(e state.Event) bool {
			return e.ID == first.ID && e.State == state.Stopping && e.Reason == why
		})
	})
	healthy.Store(true)
	again := tr.wait(t, "probe", "healthy in a new process", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].PID != first.PID
	})[0]
	if again.ID != first.ID || again.Restarts == 0 {
		t.Errorf("after the stop as unhealthy: %+v, want instance %s restarted", again, first.ID)
	}
	waitDead(t, []int{first.PID})
	if !strings.Contains(tr.logs.String(), `msg="instance unhealthy, stopping it"`) {
		t.Errorf("the journal does not say the instance was stopped as unhealthy:\n%s", tr.logs.String())
	}
	for _, e := range ev.list() {
		if e.State == state.Crashed {
			t.Errorf("a stop as unhealthy was published as a crash: %+v", e)
		}
	}
}

// A NATS Micro check that fails because the runner lost NATS says nothing
// of the app: it is inconclusive, so restart_after does not count it. A
// check that finds no instance while connected does count.
func TestMicroCheckOfflineIsInconclusive(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	nc, err := nats.Connect(c.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sp, err := spec.Parse("mute.toml", []byte("name = \"mute\"\nversion = \"1\"\nnodes = [\""+node+"\"]\n[[routes]]\npath = \"/mute/\"\n[health]\nrestart_after = 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{opts: Options{Conn: nc}}
	check := r.healthCheck(sp, "0-mute", &microResponders{})
	run := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return check(ctx, supervisor.Target{})
	}
	if err := run(); err == nil || errors.Is(err, supervisor.ErrInconclusive) {
		t.Errorf("connected, no instance answering: %v, want a failure that counts", err)
	}
	nc.Close()
	if err := run(); !errors.Is(err, supervisor.ErrInconclusive) {
		t.Errorf("runner offline: %v, want an inconclusive failure", err)
	}
}

// A cached file whose copy is gone while its digest stays (the node lost
// power between the two removals, or someone deleted the copy) is fetched
// again from narun-files, not taken for NATS being away.
func TestMissingCachedFileFetchedAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	if _, err := c.files.PutBytes(context.Background(), "appconf", []byte("greeting=hi")); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"etc/app.conf\"]\n[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n"+takeOverAtOnce)
	first := tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	if err := os.Remove(filepath.Join(tr.dir, "files", "appconf")); err != nil {
		t.Fatal(err)
	}
	c.restart(t, "reader")
	tr.wait(t, "reader", "a new instance healthy", func(l []state.Instance) bool {
		return slices.ContainsFunc(l, func(in state.Instance) bool { return in.ID != first.ID && in.State == state.Healthy })
	})
	if b, err := os.ReadFile(filepath.Join(tr.dir, "files", "appconf")); err != nil || string(b) != "greeting=hi" {
		t.Errorf("cached copy %q, %v; want it fetched again", b, err)
	}
}

// A cached copy of a file damaged on disk (an SD card, a power cut) is
// never placed: the runner fetches it again when NATS answers, and places
// nothing when it does not, pinned or not.
func TestDamagedCachedFileNotPlaced(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "conf", "greeting=hi")
	tr := startRunner(t, c, nil)
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n[[files]]\nobject = \"conf\"\npath = \"x\"\n"+takeOverAtOnce)
	first := tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	tr.waitLine(t, "reader", `cat "greeting=hi" mode 444`)
	cached := filepath.Join(tr.filesDir(), "conf")
	damage := func() {
		t.Helper()
		// Written through the file, as the medium changes it: same inode.
		if err := os.Chmod(cached, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cached, []byte("greeting"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	damage()

	c.restart(t, "reader")
	second := tr.wait(t, "reader", "a new instance healthy", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].ID != first.ID
	})[0]
	if b, err := os.ReadFile(filepath.Join(tr.dir, "instances", "reader", second.ID, "x")); err != nil || string(b) != "greeting=hi" {
		t.Errorf("placed %q, %v; want the object's content fetched again", b, err)
	}
	if b, err := os.ReadFile(cached); err != nil || string(b) != "greeting=hi" {
		t.Errorf("cached copy %q, %v; want it fetched again", b, err)
	}

	// Without NATS, a damaged copy is not placed either.
	damage()
	dir := t.TempDir()
	err := tr.placeFile(context.Background(), nil, spec.File{Object: "conf", Path: "x"}, "", dir)
	if !errors.Is(err, errOffline) {
		t.Errorf("damaged copy without NATS: %v, want an error saying NATS is needed", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("damaged copy placed without NATS: %q, %v", b, err)
	}
}

// A damaged copy of a pinned file is fetched again at once while NATS
// answers, not taken for a node that cannot reach it.
func TestDamagedCachedPinnedFileFetchedAtOnce(t *testing.T) {
	t.Parallel()
	c, tr, first := pinnedReader(t)
	cached := filepath.Join(tr.filesDir(), "conf")
	if err := os.Chmod(cached, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, []byte("on"), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := c.watchEvents(t, "reader")
	c.restart(t, "reader")
	var second state.Instance
	testutil.Eventually(t, 10*time.Second, "a new instance healthy", func() bool {
		for _, e := range ev.list() {
			if e.ID != first.ID && e.State == state.Healthy {
				second = e.Instance
				return true
			}
		}
		return false
	})
	for _, e := range ev.list() {
		if e.ID == second.ID && e.State == state.Backoff {
			t.Errorf("new instance backed off with NATS there: %s", e.Reason)
		}
	}
	if b, err := os.ReadFile(filepath.Join(tr.dir, "instances", "reader", second.ID, "x")); err != nil || string(b) != "one" {
		t.Errorf("placed %q, %v; want the pinned content", b, err)
	}
	// The kept content was the damaged copy, by a hard link: it is
	// replaced too, or a later rollback to it would find it damaged.
	if b, err := os.ReadFile(filepath.Join(tr.filesPinnedDir(), sha256Hex("one"))); err != nil || string(b) != "one" {
		t.Errorf("kept pinned content %q, %v; want %q", b, err, "one")
	}
}

func TestFileCacheKeepsDigestsApart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	for name, content := range map[string]string{"a.conf": "plain", "a.conf.digest": "payload"} {
		if _, err := c.files.PutBytes(context.Background(), name, []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n[[files]]\nobject = \"a.conf.digest\"\npath = \"x\"\n[[files]]\nobject = \"a.conf\"\npath = \"y\"\n"+takeOverAtOnce)
	want := `cat "payload" mode 444`
	first := tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	testutil.Eventually(t, 10*time.Second, "the file as the first instance sees it", func() bool {
		return slices.Contains(tr.lines("reader"), want)
	})

	// A new instance, as narun ctl app restart makes, places the files
	// from the cache.
	c.restart(t, "reader")
	tr.wait(t, "reader", "a new healthy instance", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].ID != first.ID
	})
	var cat string
	testutil.Eventually(t, 10*time.Second, "the new instance to print the file", func() bool {
		for _, l := range tr.lines("reader") {
			if strings.HasPrefix(l, "cat ") {
				cat = l
			}
		}
		return cat != ""
	})
	if cat != want {
		t.Errorf("new instance: %s, want %s", cat, want)
	}
}

// An earlier runner kept each file's digest beside its cached copy; such a
// copy is fetched again, and the old digest is collected.
func TestFileCacheOfEarlierLayout(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	info, err := c.files.PutBytes(context.Background(), "conf", []byte("current"))
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	cached := filepath.Join(data, "files")
	if err := os.MkdirAll(cached, 0o750); err != nil {
		t.Fatal(err)
	}
	// A copy that is not what its digest says, as the earlier layout could
	// leave behind.
	if err := os.WriteFile(filepath.Join(cached, "conf"), []byte("stale"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cached, "conf.digest"), []byte(info.Digest), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, func(o *Options) {
		o.DataDir = data
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n[[files]]\nobject = \"conf\"\npath = \"x\"\n")
	tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))
	var cat string
	testutil.Eventually(t, 10*time.Second, "the instance to print the file", func() bool {
		for _, l := range tr.lines("reader") {
			if strings.HasPrefix(l, "cat ") {
				cat = l
			}
		}
		return cat != ""
	})
	if want := `cat "current" mode 444`; cat != want {
		t.Errorf("instance: %s, want %s", cat, want)
	}
	testutil.Eventually(t, 10*time.Second, "the digest of the earlier layout collected", func() bool {
		_, err := os.Stat(filepath.Join(cached, "conf.digest"))
		return os.IsNotExist(err)
	})
}

// pin writes what narun ctl deploy adds to the stored spec of app: the
// digest of each [[files]] object as narun-files holds it now.
func (c *cluster) pin(t *testing.T, app string) {
	t.Helper()
	ctx := context.Background()
	e, err := c.apps.Get(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	a, err := spec.Parse(app+".toml", e.Value())
	if err != nil {
		t.Fatal(err)
	}
	digests := map[string]string{}
	for _, f := range a.Files {
		info, err := c.files.GetInfo(ctx, f.Object)
		if err != nil {
			t.Fatal(err)
		}
		digests[f.Object] = store.DigestHex(info)
	}
	pinned, err := spec.SetFileDigests(app+".toml", e.Value(), digests)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.apps.Put(ctx, app, pinned); err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// pinnedReader runs app reader at 1.0.0 on a runner of its own, placing
// object conf ("one") with its content pinned, as ctl deploy stores it.
func pinnedReader(t *testing.T) (c *cluster, tr *testRunner, first state.Instance) {
	t.Helper()
	c = newCluster(t, nil)
	c.putFile(t, "conf", "one")
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n[[files]]\nobject = \"conf\"\npath = \"x\"\n")
	c.pin(t, "reader")
	tr = startRunner(t, c, nil)
	first = tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	tr.waitLine(t, "reader", `cat "one" mode 444`)
	return c, tr, first
}

// A file object replaced in narun-files behind the spec's back never
// reaches an instance: a runner that kept the pinned content places that,
// one that has none refuses the start; re-pinning, as narun ctl app
// restart does, rolls the new content out.
func TestPinnedFileReplacedIsRefused(t *testing.T) {
	t.Parallel()
	c, tr, first := pinnedReader(t)

	c.putFile(t, "conf", "two")
	reason := fmt.Sprintf("file conf: narun-files holds sha256 %s, the spec pins %s: ", sha256Hex("two"), sha256Hex("one"))
	refused := func(tr *testRunner) state.Instance {
		t.Helper()
		var failed state.Instance
		tr.wait(t, "reader", "an instance refused", func(l []state.Instance) bool {
			for _, in := range l {
				if in.ID != first.ID && in.State == state.Failed {
					failed = in
					return true
				}
			}
			return false
		})
		if !strings.HasPrefix(failed.Reason, reason) {
			t.Errorf("reason %q, want it to start with %q", failed.Reason, reason)
		}
		// The directory stays while the failed instance is listed.
		dir := filepath.Join(tr.dir, "instances", "reader", failed.ID)
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("instance directory: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
			t.Errorf("the replaced file was placed: %v", err)
		}
		return failed
	}
	// A restart request that does not pin again starts a new instance of
	// the same spec, with the content it pins.
	c.restart(t, "reader")
	var second state.Instance
	tr.wait(t, "reader", "a new instance", func(l []state.Instance) bool {
		for _, in := range l {
			if in.ID != first.ID && (in.State == state.Healthy || in.State == state.Failed) {
				second = in
				return true
			}
		}
		return false
	})
	if second.State != state.Healthy {
		t.Fatalf("new instance of the same pin: %s: %s", second.State, second.Reason)
	}
	if b, err := os.ReadFile(filepath.Join(tr.dir, "instances", "reader", second.ID, "x")); err != nil || string(b) != "one" {
		t.Errorf("placed %q, %v; want the pinned content, %q", b, err, "one")
	}

	// A runner with nothing cached refuses it.
	tr.stop()
	fresh := startRunner(t, c, nil)
	refused(fresh)
	if slices.Contains(fresh.lines("reader"), `cat "two" mode 444`) {
		t.Error("an instance read the replaced file")
	}

	c.pin(t, "reader")
	c.restart(t, "reader")
	fresh.wait(t, "reader", "healthy", allIn(1, state.Healthy))
	fresh.waitLine(t, "reader", `cat "two" mode 444`)
}

// A deploy that only pins a file anew restarts nothing, but the instance
// running is started again after an exit with what the store holds now:
// with the pin it started with, its restart would be refused for good.
func TestRepinnedFilePlacedAtRestart(t *testing.T) {
	t.Parallel()
	c, tr, first := pinnedReader(t)

	c.putFile(t, "conf", "two")
	c.pin(t, "reader")
	// Every spec the app may start, its running instance's included, must
	// pin the new content before the kill: one killed earlier would
	// restart with the pin it had.
	testutil.Eventually(t, 10*time.Second, "the new pin handed to the running instance", func() bool {
		for _, a := range tr.appList() {
			if a.name != "reader" {
				continue
			}
			specs := a.specs()
			return len(specs) == 2 && !slices.ContainsFunc(specs, func(sp *spec.App) bool { return sp.FileDigests["conf"] != sha256Hex("two") })
		}
		return false
	})
	if l := tr.of("reader"); len(l) != 1 || l[0].ID != first.ID || l[0].PID != first.PID {
		t.Fatalf("a new pin alone restarted the instance: %+v, was %+v", l, first)
	}

	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "reader", "restart after the kill", func(l []state.Instance) bool {
		return len(l) == 1 && (l[0].State == state.Failed || l[0].State == state.Healthy && l[0].PID != first.PID)
	})[0]
	if again.State != state.Healthy || again.ID != first.ID || again.Restarts != 1 {
		t.Fatalf("after kill: %s restarts %d state %s reason %q, want %s healthy with 1 restart", again.ID, again.Restarts, again.State, again.Reason, first.ID)
	}
	tr.waitLine(t, "reader", `cat "two" mode 444`)
}

// Without NATS the cached copy is placed only when it is the pinned one.
func TestPinnedFileFromCache(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	if err := os.WriteFile(filepath.Join(tr.filesDir(), "conf"), []byte("old"), 0o444); err != nil {
		t.Fatal(err)
	}
	f := spec.File{Object: "conf", Path: "x"}
	dir := t.TempDir()
	err := tr.placeFile(context.Background(), nil, f, sha256Hex("new"), dir)
	if !errors.Is(err, errOffline) || !strings.Contains(err.Error(), "file conf: the cached copy has sha256 "+sha256Hex("old")+", the spec pins "+sha256Hex("new")) {
		t.Errorf("stale cached copy: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("stale copy placed: %v", err)
	}
	if err := tr.placeFile(context.Background(), nil, f, sha256Hex("old"), dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || string(b) != "old" {
		t.Errorf("placed %q, %v", b, err)
	}
}

// The count of dropped lines is published when the window ends, though
// the instance prints nothing more after its flood: waiting for its next
// line, the count would never come.
func TestLogFloodCountedWhenSilent(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	sub, err := c.nc.SubscribeSync(names.LogSubject("quiet", node, "*"))
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	// The window's end is the test's to say, once every line of the flood
	// is counted, rather than 30 s after its first line.
	ends := make(chan func(), 1)
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		r.logTimer = func(d time.Duration, f func()) {
			if d <= 0 || d > logWindow {
				t.Errorf("the window's end armed %s ahead, want within %s", d, logWindow)
			}
			// Never blocking: the limiter holds its lock here.
			select {
			case ends <- f:
			default:
			}
		}
	})
	c.deploy(t, "quiet", "1.0.0", probeBin, "args = [\"flood\"]\n")
	waitFlood(t, tr, "quiet")
	// 12000 lines and "probe: ready": 10000 published, 2001 dropped.
	srv := httptest.NewServer(tr.AdminHandler())
	defer srv.Close()
	dropped := fmt.Sprintf(`narun_runner_instance_log_lines_dropped_total{app="quiet",instance="%s",node="%s"} %d`, tr.of("quiet")[0].ID, node, 12001-logBurst)
	// The ring shows a line before the bound counts it.
	testutil.Eventually(t, 10*time.Second, dropped, func() bool {
		return strings.Contains(get(t, srv.URL+"/metrics"), dropped)
	})
	select {
	case end := <-ends:
		end()
	default:
		t.Fatal("lines dropped, but no end of the window armed to count them")
	}
	want := fmt.Sprintf("narun: %d lines of this instance were dropped", 12001-logBurst)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no line %q once the window ended: %v", want, err)
		}
		var l state.LogLine
		if err := json.Unmarshal(m.Data, &l); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l.Line, want) {
			if l.Stream != state.Narun || l.Instance == "" {
				t.Errorf("count published as %+v", l)
			}
			return
		}
	}
}

// waitFlood waits for the probe's flood of app to be read: 12000 lines
// take the runner seconds under the race detector, and two floods at once
// more than waitLine waits.
func waitFlood(t *testing.T, tr *testRunner, app string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, app+" printing probe: ready", func() bool {
		return slices.Contains(tr.lines(app), "probe: ready")
	})
}

// An app that prints in a tight loop publishes only its bound to NARUN_LOGS
// and a line saying the rest was dropped, so it cannot push the history of
// every other app out of the stream.
func TestLogFloodBounded(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	sub, err := c.nc.SubscribeSync(names.LogSubject("flood", node, "*"))
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	tr := startRunner(t, c, nil)
	c.deploy(t, "flood", "1.0.0", probeBin, "args = [\"flood\"]\n")
	// The runner publishes on the test's connection, from its outbox: the
	// notice that lines are dropped comes last, after every line it
	// published, and whatever follows it in its window is dropped.
	waitFlood(t, tr, "flood")
	var n int
	testutil.Eventually(t, time.Minute, "the flood's lines published", func() bool {
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if n, _, err = sub.Pending(); err != nil {
			t.Fatal(err)
		}
		return n >= logBurst+1
	})
	var last state.LogLine
	for range n {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &last); err != nil {
			t.Fatal(err)
		}
	}
	if n != logBurst+1 || !strings.HasPrefix(last.Line, "narun: more than") {
		t.Errorf("12001 lines printed, %d published, the last %q", n, last.Line)
	}
	// A dashboard sees the drop without reading the stream.
	srv := httptest.NewServer(tr.AdminHandler())
	defer srv.Close()
	id := tr.of("flood")[0].ID
	want := fmt.Sprintf(`narun_runner_instance_log_lines_dropped_total{app="flood",instance="%s",node="%s"} %d`, id, node, 12001-logBurst)
	// The ring shows a line before the bound counts it.
	var metrics string
	testutil.Eventually(t, 10*time.Second, want, func() bool {
		metrics = get(t, srv.URL+"/metrics")
		return strings.Contains(metrics, want)
	})
	if !strings.Contains(metrics, "narun_runner_messages_dropped_total 0") {
		t.Errorf("metrics count messages dropped for NATS:\n%s", metrics)
	}
	// The runner keeps in memory only the lines its page shows: each up
	// to 8 KiB, for every instance of the node.
	if n := len(tr.lines("flood")); n != lastLines {
		t.Errorf("the runner keeps %d lines of the instance, its page shows %d", n, lastLines)
	}
}

// A host named by its address had its first label as default id ("10")
// under releases that wrote no node-id file; the first start of this one
// takes the whole address, and the specs that name "10" stop here. A data
// dir with cached specs shows an earlier runner ran apps there.
func TestNodeIDFromAddressWarnedWithoutNodeIDFile(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	changed := "node id changed since this data dir last ran"
	for _, tt := range []struct {
		name       string
		host       string
		configured string
		cached     bool
		warn       bool
	}{
		{"address host over an earlier runner's data dir", "10.0.0.5", "", true, true},
		{"address host over a new data dir", "10.0.0.5", "", false, false},
		{"configured id", "10.0.0.5", "10-0-0-5", true, false},
		{"host name whose first label stays the id", "edge-1.example.com", "", true, false},
		{"address host whose id did not change", "fe80::1", "", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.cached {
				if err := os.MkdirAll(filepath.Join(dir, "specs"), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "specs", "hello.toml"), []byte("name = \"hello\"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logs := &testutil.LogBuffer{}
			r, err := New(Options{
				Config:  config.Runner{NodeID: tt.configured},
				DataDir: dir,
				Conn:    c.nc,
				Logger:  slog.New(slog.NewTextHandler(logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			// New took the id from this machine's host name: give the
			// runner tt.host's, as nodeID would have.
			r.host = tt.host
			r.node = cmp.Or(tt.configured, hostNodeID(tt.host))
			r.checkNodeID()
			out := logs.String()
			if got := strings.Contains(out, changed); got != tt.warn {
				t.Errorf("warned %v, want %v:\n%s", got, tt.warn, out)
			}
			if tt.warn && !strings.Contains(out, "old=10 new=10-0-0-5") {
				t.Errorf("the warning does not name both ids:\n%s", out)
			}
			if b, err := os.ReadFile(filepath.Join(dir, nodeIDFile)); err != nil || string(b) != r.node+"\n" {
				t.Errorf("node-id file holds %q (%v), want %q", b, err, r.node)
			}
		})
	}
}

// A rollout over an instance that never served replaces it, though the
// new one does not turn healthy either: kept for as long as the new one is
// not, it crash-looped beside it for good, and served nothing meanwhile.
func TestRolloutReplacesOldInstanceThatNeverServed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	// Without a check a process is healthy while it runs: the old one's
	// checks a port nothing listens on.
	_, port, _ := net.SplitHostPort(testutil.FreeAddr(t))
	c.deploy(t, "probe", "1.0.0", probeBin, "args = [\"crash\"]\n[restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n[health]\ntype = \"tcp\"\nport = "+port+"\n")
	tr.wait(t, "probe", "1.0.0 crash-looping", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Restarts > 0
	})
	c.deploy(t, "probe", "1.1.0", probeBin, "args = [\"crash\"]\n[restart]\npolicy = \"never\"\n")
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	if l := tr.of("probe"); len(l) != 1 || l[0].Version != "1.1.0" {
		t.Errorf("instances after a rollout over one that never served: %+v, want only 1.1.0's", l)
	}
}

// An old instance that served, and no longer passes its checks, is kept
// beside a new one that does not turn healthy: it may serve again, as it
// did, when what it depends on is back.
func TestRolloutKeepsOldInstanceThatServed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	healthy, check := checkedProbe(t, true)
	c.deploy(t, "probe", "1.0.0", probeBin, check+"failures = 1\nmin_healthy = 0\n")
	old := tr.wait(t, "probe", "1.0.0 healthy", allIn(1, state.Healthy))[0]
	healthy.Store(false)
	tr.wait(t, "probe", "1.0.0 unhealthy", allIn(1, state.Running))

	c.deploy(t, "probe", "1.1.0", probeBin, "args = [\"crash\"]\n[restart]\npolicy = \"never\"\n")
	testutil.Eventually(t, 30*time.Second, "rollout halted", func() bool {
		return strings.Contains(tr.logs.String(), "rollout halted")
	})
	if l := tr.of("probe"); len(l) != 2 || !slices.ContainsFunc(l, func(in state.Instance) bool { return in.ID == old.ID }) {
		t.Errorf("instances after a rollout over one that served: %+v, want 1.0.0's kept beside 1.1.0's", l)
	}
}

// checkedProbe is the spec text of a probe that listens on its HTTP
// check's port and forwards to a server standing for the app's handler,
// which answers 503 while healthy is unset; it ends inside [health], for
// the caller's keys of the check.
func checkedProbe(t *testing.T, healthyAtFirst bool) (healthy *atomic.Bool, spec string) {
	t.Helper()
	healthy = new(atomic.Bool)
	healthy.Store(healthyAtFirst)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	return healthy, fmt.Sprintf("args = [\"listen\", %q, %q]\n", addr, srv.Listener.Addr()) +
		"[health]\ntype = \"http\"\nport = " + port + "\ninterval = \"100ms\"\n"
}

// A runner that cannot make its event history (here a stream of the
// operator's own takes the events' subjects; elsewhere a small max_store
// the logs took) says so and runs its apps all the same.
func TestRunnerWithoutEventHistory(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MY_EVENTS", Subjects: []string{names.EventsSubjects}}); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	if !strings.Contains(tr.logs.String(), "no history of instance events kept") {
		t.Errorf("the runner did not say that it keeps no event history:\n%s", tr.logs.String())
	}
}
