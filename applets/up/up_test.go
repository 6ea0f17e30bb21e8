package up_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/sandbox"
)

// The test binary acts as `narun up` when this variable is set, so the
// smoke test runs a real process and sends it a real SIGTERM.
const asUp = "NARUN_TEST_AS_UP"

// asSlowApp makes the test binary an app that takes its time to stop: on
// SIGTERM it works 5 s more, longer than narun up once allowed, then
// writes the file this variable names and exits 0.
const asSlowApp = "UP_TEST_SLOW_STOP"

// asIdleApp makes the test binary an app that runs until SIGTERM.
const asIdleApp = "UP_TEST_IDLE"

// asHeldApp makes the test binary an app whose stop the test ends: on
// SIGTERM it writes the file this variable names with ".term" added, then
// exits 0 once the test has written the one with ".release" added.
const asHeldApp = "UP_TEST_HELD_STOP"

func TestMain(m *testing.M) {
	// The runner starts exec apps as the exec-app applet of
	// /proc/self/exe, this test binary, with the app's environment.
	if len(os.Args) > 1 && os.Args[1] == sandbox.ExecApplet {
		sandbox.ExecAppMain(os.Args[2:])
	}
	if os.Getenv(asUp) == "1" {
		os.Exit(applets.Main(append([]string{"narun"}, os.Args[1:]...), applets.StdIO()))
	}
	if marker := os.Getenv(asSlowApp); marker != "" {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		time.Sleep(5 * time.Second)
		if err := os.WriteFile(marker, []byte("clean exit"), 0o644); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(asTLSApp) != "" {
		os.Exit(tlsAppMain())
	}
	if marker := os.Getenv(asHeldApp); marker != "" {
		testutil.HeldAppMain(marker)
	}
	if os.Getenv(asIdleApp) != "" {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestUpSmoke starts `narun up` with no config on random ports: /healthz
// answers, SIGTERM stops it with exit code 0 within 5 s, and nothing it
// started is left running.
func TestUpSmoke(t *testing.T) {
	t.Parallel()
	natsAddr, gwAddr, gwAdmin, runnerAdmin := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	start := time.Now()
	cmd, out := startUp(t, t.TempDir(), "--nats-listen", natsAddr, "--listen", gwAddr, "--admin-listen", gwAdmin, "--runner-admin-listen", runnerAdmin)

	// The runner and the gateway open their listeners concurrently: each
	// is waited for, in any order.
	healthy(t, runnerAdmin)
	healthy(t, gwAdmin)
	t.Logf("runner and gateway /healthz answered %s after start", time.Since(start).Round(time.Millisecond))

	stopUp(t, cmd, out, 5*time.Second)
	if err := syscall.Kill(-cmd.Process.Pid, 0); err == nil {
		t.Fatal("a process of narun up's group survived it")
	}
	for _, want := range []string{natsAddr, gwAddr, runnerAdmin} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("startup output does not say where %s listens:\n%s", want, out.String())
		}
	}
}

// TestUpStopWaitsForApps stops narun up with an app whose stop takes 5 s:
// narun up must let it finish within its stop_timeout, and exit 0. It asks
// systemd for that time, which would otherwise kill it, and the app with
// it, once TimeoutStopSec is over.
func TestUpStopWaitsForApps(t *testing.T) {
	t.Parallel()
	natsAddr, runnerAdmin, dataDir := testutil.FreeAddr(t), testutil.FreeAddr(t), t.TempDir()
	sock := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd, out := startUpEnv(t, dataDir, []string{"NOTIFY_SOCKET=" + sock}, "--node-id", "upstop",
		"--nats-listen", natsAddr, "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)

	marker := filepath.Join(t.TempDir(), "stopped")
	specFile := filepath.Join(t.TempDir(), "slow.toml")
	spec := fmt.Sprintf("name = \"slow\"\nversion = \"1\"\nnodes = [\"upstop\"]\nstop_timeout = \"30s\"\n[env]\n%s = %q\n[health]\ntype = \"none\"\n", asSlowApp, marker)
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, code := ctl(natsAddr, dataDir, "deploy", specFile, "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}

	stopUp(t, cmd, out, 40*time.Second)
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the app did not finish its stop: %v; output:\n%s", err, out.String())
	}
	// All it sent is in the socket's queue: it has exited.
	if err := notify.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var said []string
	buf := make([]byte, 256)
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no EXTEND_TIMEOUT_USEC after STOPPING=1 asked for the app's 30s stop_timeout; it said %q (%v)", said, err)
		}
		said = append(said, string(buf[:n]))
		usec, ok := strings.CutPrefix(said[len(said)-1], "EXTEND_TIMEOUT_USEC=")
		if ok && slices.Contains(said, "STOPPING=1") {
			if d, err := time.ParseDuration(usec + "us"); err != nil || d < 30*time.Second {
				t.Fatalf("asked for %s more to stop (%v), want at least the app's stop_timeout, 30s", usec, err)
			}
			return
		}
	}
}

// While narun up stops an app, the runner's admin listener still answers:
// /healthz, and /metrics for a scrape of the stop, which may last the
// app's stop_timeout. It closed at the start of the stop.
func TestUpRunnerAdminAnswersWhileAppsStop(t *testing.T) {
	t.Parallel()
	natsAddr, runnerAdmin, dataDir := testutil.FreeAddr(t), testutil.FreeAddr(t), t.TempDir()
	cmd, out := startUp(t, dataDir, "--node-id", "upheld", "--nats-listen", natsAddr, "--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)

	marker := filepath.Join(t.TempDir(), "held")
	t.Cleanup(func() { _ = os.WriteFile(marker+".release", nil, 0o644) })
	specFile := filepath.Join(t.TempDir(), "held.toml")
	spec := fmt.Sprintf("name = \"held\"\nversion = \"1\"\nnodes = [\"upheld\"]\nstop_timeout = \"60s\"\n[env]\n%s = %q\n[health]\ntype = \"none\"\n", asHeldApp, marker)
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, code := ctl(natsAddr, dataDir, "deploy", specFile, "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the app to get SIGTERM", func() bool {
		_, err := os.Stat(marker + ".term")
		return err == nil
	})
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + runnerAdmin + path)
		if err != nil {
			t.Fatalf("runner admin %s while the app stops: %v; output:\n%s", path, err, out.String())
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("runner admin %s while the app stops = %d, want 200", path, resp.StatusCode)
		}
	}
	if err := os.WriteFile(marker+".release", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	upExits(t, cmd, out, 40*time.Second)
}

// TestUpListenersOff turns every HTTP listener off with an empty address,
// as narun.toml documents: narun up says so, runs the node all the same,
// and stops cleanly.
func TestUpListenersOff(t *testing.T) {
	t.Parallel()
	natsAddr, dataDir := testutil.FreeAddr(t), t.TempDir()
	cmd, out := startUp(t, dataDir, "--node-id", "upoff", "--nats-listen", natsAddr, "--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 10*time.Second, "node upoff in narun ctl node list", func() bool {
		res, code := ctl(natsAddr, dataDir, "node", "list")
		return code == 0 && strings.Contains(res, "upoff")
	})
	for _, want := range []string{"gateway  http off, admin off", "runner   admin off"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("startup output lacks %q:\n%s", want, out.String())
		}
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// With a certificate, narun up's banner names the HTTPS address too, set
// here by its flag.
func TestUpBannerNamesHTTPS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.CertPair(t, certPath, keyPath, "up")
	conf := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[gateway.tls]\ncert = %q\nkey = %q\n", certPath, keyPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	natsAddr, https := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd, out := startUp(t, filepath.Join(dir, "data"), "--config", conf, "--node-id", "uptls", "--nats-listen", natsAddr,
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "", "--tls-listen", https)
	testutil.Eventually(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "  runner   admin") })
	if want := "gateway  http off, https " + https + ", admin off"; !strings.Contains(out.String(), want) {
		t.Errorf("startup output lacks %q:\n%s", want, out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// A hub's leaf port is one of the addresses a device listens on that the
// operator needs (to write the leaves' remotes, to open a firewall): the
// banner names it with the rest.
func TestUpBannerNamesLeafPort(t *testing.T) {
	dir := t.TempDir()
	leaf := testutil.FreeAddr(t)
	conf := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[nats.leafnodes]\nlisten = %q\n", leaf)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out := startUp(t, filepath.Join(dir, "data"), "--config", conf, "--node-id", "uphub", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "  runner   admin") })
	if want := "  leaf     " + leaf + " (leaf nodes join here)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("startup output lacks %q:\n%s", want, out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// Port 0 asks the kernel for a free port: the banner names the ports bound,
// which answer, not ":0".
func TestUpBannerNamesBoundPorts(t *testing.T) {
	t.Parallel()
	natsAddr := testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--node-id", "upzero", "--nats-listen", natsAddr,
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", "127.0.0.1:0")
	testutil.Eventually(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "  runner   admin") })
	banner := regexp.MustCompile(`gateway  http (\S+), admin (\S+) .*\n  runner   admin (\S+) `).FindStringSubmatch(out.String())
	if banner == nil {
		t.Fatalf("no banner with the gateway's and runner's addresses:\n%s", out.String())
	}
	for _, addr := range banner[1:] {
		if strings.HasSuffix(addr, ":0") {
			t.Errorf("banner names %s, not the port bound:\n%s", addr, out.String())
		}
	}
	healthy(t, banner[2])
	healthy(t, banner[3])
	stopUp(t, cmd, out, 20*time.Second)
}

// ctl runs narun ctl against the NATS server at addr, on the device
// whose narun up keeps its data in dataDir, and returns its output and
// exit code.
func ctl(natsAddr, dataDir string, args ...string) (string, int) {
	var out bytes.Buffer
	stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
	code := applets.Main(append([]string{"narun", "ctl", "--config", "/dev/null", "--nats-url", "nats://" + natsAddr, "--data-dir", dataDir}, args...), stdio)
	return out.String(), code
}

// startUp runs the test binary as `narun up` with args, in a process group
// of its own that the test kills at the end, whatever happens.
func startUp(t *testing.T, dataDir string, args ...string) (*exec.Cmd, *testutil.LogBuffer) {
	t.Helper()
	return startUpEnv(t, dataDir, nil, args...)
}

// startUpEnv is startUp with env added to the environment.
func startUpEnv(t *testing.T, dataDir string, env []string, args ...string) (*exec.Cmd, *testutil.LogBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"up", "--config", "/dev/null", "--data-dir", dataDir}, args...)...)
	cmd.Env = append(append(os.Environ(), asUp+"=1"), env...)
	out := &testutil.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return cmd, out
}

// stopUp sends SIGTERM and fails the test unless narun up exits 0 within
// the time given.
func stopUp(t *testing.T, cmd *exec.Cmd, out *testutil.LogBuffer, within time.Duration) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	upExits(t, cmd, out, within)
}

// upExits fails the test unless narun up, sent SIGTERM, exits 0 within
// the time given.
func upExits(t *testing.T, cmd *exec.Cmd, out *testutil.LogBuffer, within time.Duration) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("narun up exited with %v after SIGTERM; output:\n%s", err, out.String())
		}
	case <-time.After(within):
		t.Fatalf("narun up still running %s after SIGTERM; output:\n%s", within, out.String())
	}
}

// healthy waits until addr answers /healthz with 200.
func healthy(t *testing.T, addr string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "/healthz on "+addr, func() bool { return healthz(addr) })
}

// healthz reports whether addr answers /healthz with 200.
func healthz(addr string) bool {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// With logins on its server and none given to apps, narun up says that
// apps using NATS will be refused, as the runner applet does.
func TestUpWarnsAppsHaveNoLogin(t *testing.T) {
	t.Parallel()
	config := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(config, []byte("[[nats.users]]\nuser = \"edge\"\npassword = \"edge-secret\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runnerAdmin := testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--config", config, "--node-id", "uplogin", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)
	if !strings.Contains(out.String(), "apps have none") || !strings.Contains(out.String(), "app_nats_url") {
		t.Errorf("no warning that apps have no NATS login:\n%s", out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// With --log-format json every line narun up writes is JSON, the one
// saying where it listens included, for a journal mixes stdout and stderr.
func TestUpJSONOutput(t *testing.T) {
	t.Parallel()
	natsAddr, runnerAdmin := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--log-format", "json", "--node-id", "upjson", "--nats-listen", natsAddr,
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)
	stopUp(t, cmd, out, 20*time.Second)
	for line := range strings.Lines(out.String()) {
		if !json.Valid([]byte(line)) {
			t.Errorf("not a JSON line: %q", line)
		}
	}
	if !strings.Contains(out.String(), natsAddr) || !strings.Contains(out.String(), runnerAdmin) {
		t.Errorf("output does not say where narun up listens:\n%s", out.String())
	}
}

// Out of file descriptors (LimitNOFILE reached under a burst of
// connections), the runner's admin server fails to accept and says so:
// in JSON too, as every other line, not in the standard logger's format.
func TestUpJSONOutputOutOfFiles(t *testing.T) {
	t.Parallel()
	natsAddr, runnerAdmin := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--log-format", "json", "--node-id", "upfiles", "--nats-listen", natsAddr,
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)

	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// A few more than it holds: the next connections find none left.
	limit := &unix.Rlimit{Cur: uint64(len(fds) + 4), Max: uint64(len(fds) + 4)}
	if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, limit, nil); err != nil {
		t.Skipf("cannot lower narun up's descriptor limit: %v", err)
	}
	for range 16 {
		c, err := net.Dial("tcp", runnerAdmin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	testutil.Eventually(t, 20*time.Second, "an accept error logged", func() bool {
		return strings.Contains(out.String(), "Accept error")
	})
	for line := range strings.Lines(out.String()) {
		if !json.Valid([]byte(line)) {
			t.Errorf("not a JSON line: %q", line)
		}
	}
}

// What a Prometheus server scrapes from narun up's two admin addresses
// follows the text format, with an app running and requests counted:
// both are written by hand (testutil.CheckExposition says what is checked).
func TestUpMetricsAreValidExposition(t *testing.T) {
	t.Parallel()
	natsAddr, gwAddr, gwAdmin, runnerAdmin, dataDir := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), t.TempDir()
	cmd, out := startUp(t, dataDir, "--node-id", "upmetrics", "--nats-listen", natsAddr, "--listen", gwAddr, "--admin-listen", gwAdmin, "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)
	healthy(t, gwAdmin)

	specFile := filepath.Join(t.TempDir(), "idle.toml")
	spec := fmt.Sprintf("name = \"idle\"\nversion = \"1\"\nnodes = [\"upmetrics\"]\nreplicas = 2\n[env]\n%s = \"1\"\n[health]\ntype = \"none\"\n[[routes]]\npath = \"/idle/\"\n", asIdleApp)
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, code := ctl(natsAddr, dataDir, "deploy", specFile, "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	// A request no route takes, and some the app's route takes (the app
	// serves nothing: they time out or find no responder), both counted.
	for _, path := range []string{"/nothing/", "/idle/a", "/idle/b?x=\"y\""} {
		resp, err := http.Get("http://" + gwAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	scrape := func(addr string) string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	for _, tc := range []struct {
		addr string
		want []string
	}{
		{runnerAdmin, []string{`narun_runner_instance_up{app="idle",`, "narun_runner_instances{state="}},
		{gwAdmin, []string{`narun_gateway_request_duration_seconds_bucket{route="/idle/",le="+Inf"}`, `narun_gateway_requests_total{route="",code="404"} 1`}},
	} {
		text := scrape(tc.addr)
		if err := testutil.CheckExposition(text); err != nil {
			t.Errorf("/metrics of %s:\n%v\n%s", tc.addr, err, text)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("/metrics of %s lacks %s:\n%s", tc.addr, w, text)
			}
		}
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// With [nats] listen empty the embedded server takes in-process clients
// only: the runner gave apps its own default, nats://127.0.0.1:4222, where
// another server (or none) listens, and the banner named no address at
// all. narun up says the server is off to TCP clients and that apps
// cannot reach it.
func TestUpWithoutNATSListen(t *testing.T) {
	t.Parallel()
	runnerAdmin := testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--node-id", "upnolisten", "--nats-listen", "",
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)
	stopUp(t, cmd, out, 20*time.Second)
	for _, want := range []string{"nats     off (in-process only)", "[nats] listen is empty", "app_nats_url"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A second narun up started with the same flags while the first still runs
// (the new binary of an upgrade started before the old one stopped) finds
// every port taken; the cause to name is the other narun up on the data
// dir, not one of its ports.
func TestUpSecondOnTheSameDataDirNamesIt(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	args := []string{"--nats-listen", testutil.FreeAddr(t), "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", testutil.FreeAddr(t)}
	first, firstOut := startUp(t, dataDir, args...)
	healthy(t, args[7])
	healthy(t, args[5])

	second, out := startUp(t, dataDir, args...)
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Fatalf("a second narun up on a data dir in use exited 0:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("a second narun up on a data dir in use still runs:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "in use by another narun nats or narun up") {
		t.Errorf("the refusal does not say another narun up holds the data dir:\n%s", out.String())
	}
	stopUp(t, first, firstOut, 10*time.Second)
}
