package applets_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// asHeldApp makes the test binary an app whose stop the test ends: on
// SIGTERM it writes the file this variable names with ".term" added, then
// exits 0 once the test has written the one with ".release" added.
const asHeldApp = "APPLETS_TEST_HELD_STOP"

// While `narun runner` stops an app, its admin listener still answers:
// /healthz, and /metrics for a scrape of the stop, which may last the
// app's stop_timeout. It closed at the start of the stop.
func TestRunnerAdminAnswersWhileAppsStop(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	admin := testutil.FreeAddr(t)
	runner := startNotified(t, dir, "runner", "--config", "/dev/null", "--data-dir", filepath.Join(dir, "runner"), "--nats-url", srv.ClientURL(),
		"--node-id", "held-node", "--admin-listen", admin)
	expectNotice(t, runner.notify, "READY=1", &runner.out)

	marker := filepath.Join(dir, "held")
	t.Cleanup(func() { _ = os.WriteFile(marker+".release", nil, 0o644) })
	spec := filepath.Join(dir, "held.toml")
	if err := os.WriteFile(spec, []byte(fmt.Sprintf("name = \"held\"\nversion = \"1\"\nnodes = [\"held-node\"]\nstop_timeout = \"60s\"\n[env]\n%s = %q\n[health]\ntype = \"none\"\n", asHeldApp, marker)), 0o644); err != nil {
		t.Fatal(err)
	}
	deploy := exec.Command(os.Args[0], "ctl", "--config", "/dev/null", "--data-dir", filepath.Join(dir, "ctl"), "--nats-url", srv.ClientURL(),
		"deploy", spec, "--binary", os.Args[0], "--wait", "--timeout", "60s")
	deploy.Env = append(os.Environ(), asNarun+"=1")
	if out, err := deploy.CombinedOutput(); err != nil {
		t.Fatalf("deploy: %v\n%s\nrunner:\n%s", err, out, runner.out.String())
	}

	if err := runner.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the app to get SIGTERM", func() bool {
		_, err := os.Stat(marker + ".term")
		return err == nil
	})
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatalf("runner admin %s while the app stops: %v; runner:\n%s", path, err, runner.out.String())
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("runner admin %s while the app stops = %d, want 200", path, resp.StatusCode)
		}
	}
	if err := os.WriteFile(marker+".release", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runner.wait(40 * time.Second); err != nil {
		t.Fatalf("runner after the app's release: %v; runner:\n%s", err, runner.out.String())
	}
}
