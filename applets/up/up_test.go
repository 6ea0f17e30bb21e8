package up_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets"
	"github.com/narun/narun/applets/internal/testutil"
)

// The test binary acts as `narun up` when this variable is set, so the
// smoke test runs a real process and sends it a real SIGTERM.
const asUp = "NARUN_TEST_AS_UP"

func TestMain(m *testing.M) {
	if os.Getenv(asUp) == "1" {
		os.Exit(applets.Main(append([]string{"narun"}, os.Args[1:]...), applets.StdIO()))
	}
	os.Exit(m.Run())
}

// TestUpSmoke starts `narun up` with no config on random ports: /healthz
// answers, SIGTERM stops it with exit code 0 within 5 s, and nothing it
// started is left running.
func TestUpSmoke(t *testing.T) {
	dataDir := t.TempDir()
	natsAddr, gwAddr, gwAdmin, runnerAdmin := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "up", "--config", "/dev/null", "--data-dir", dataDir,
		"--nats-listen", natsAddr, "--listen", gwAddr, "--admin-listen", gwAdmin, "--runner-admin-listen", runnerAdmin)
	cmd.Env = append(os.Environ(), asUp+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	// The runner and the gateway open their listeners concurrently: each
	// is waited for, in any order.
	for _, addr := range []string{runnerAdmin, gwAdmin} {
		testutil.Eventually(t, 10*time.Second, "/healthz on "+addr, func() bool {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	t.Logf("runner and gateway /healthz answered %s after start", time.Since(start).Round(time.Millisecond))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("narun up exited with %v after SIGTERM; output:\n%s", err, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("narun up still running 5 s after SIGTERM; output:\n%s", out.String())
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); err == nil {
		t.Fatal("a process of narun up's group survived it")
	}
	for _, want := range []string{natsAddr, gwAddr, runnerAdmin} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("startup output does not say where %s listens:\n%s", want, out.String())
		}
	}
}
