package ctl

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/runner"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// TestWithRealRunner drives a real runner with ctl: deploy --wait, status,
// a crash loop reported by the node, delete.
func TestWithRealRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	nc := natstest.Connect(t, h.srv)
	hello := filepath.Join(t.TempDir(), "hello")
	if out, err := exec.Command("go", "build", "-o", hello, "../../testdata/apps/hello").CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	r, err := runner.New(runner.Options{
		Config: config.Runner{
			Client:            config.Client{NATSURL: h.url},
			NodeID:            "node-1",
			HeartbeatInterval: config.Duration(200 * time.Millisecond),
		},
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
