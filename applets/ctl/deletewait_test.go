package ctl

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
)

// app delete returned once the deletion was stored, and a script that
// deleted an app to start another on its port, or to remove its binaries,
// had to poll app status until its instances were gone. With --wait it
// returns once every instance has stopped, their processes gone.
func TestDeleteWaitsForTheInstancesToStop(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", hello, "--wait", "--timeout", "30s")
	var st appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &st); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, in := range st.Instances {
		if in.PID > 0 {
			pids = append(pids, in.PID)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("instances %+v, want 2 with a pid", st.Instances)
	}

	r := h.ok("", "app", "delete", "hello", "--wait", "--timeout", "30s")
	if !strings.Contains(r.out, "hello: every instance stopped\n") {
		t.Errorf("app delete --wait does not say the instances stopped:\nstdout: %s\nstderr: %s", r.out, r.err)
	}
	if !strings.Contains(r.err, ": stopped") {
		t.Errorf("app delete --wait shows no instance stopping:\n%s", r.err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d of hello still runs after app delete --wait", pid)
		}
	}
}

// An instance that does not stop within --timeout fails the wait with the
// rollout's exit code, naming the node, the instance and its state.
func TestDeleteWaitTimesOutNamingWhatRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	h.heartbeat(state.Node{ID: "node-1", Arch: "amd64", Interval: time.Hour, Stored: time.Now(), Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Stopping, Reason: "SIGTERM sent"},
	}})
	r := h.fails(ExitRollout, "", "app", "delete", "hello", "--wait", "--timeout", "1s")
	if want := "deletion of hello not done after 1s: node-1: 1 instance(s) to stop (hello-0 stopping)"; !strings.Contains(r.err, want) {
		t.Errorf("app delete --wait that timed out:\n%s\nwant %q", r.err, want)
	}
	if !strings.Contains(r.out, "hello deleted") {
		t.Errorf("app delete --wait does not say the deletion is stored before it waits:\n%s", r.out)
	}
}

// --timeout bounds only the wait: without --wait it is refused, as for
// deploy, before anything is deleted.
func TestDeleteTimeoutWithoutWaitRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	r := h.fails(2, "", "app", "delete", "hello", "--timeout", "1s")
	if !strings.Contains(r.err, "--timeout 1s without --wait") {
		t.Errorf("app delete --timeout without --wait: %s", r.err)
	}
	if _, ok := h.get("narun-apps", "hello"); !ok {
		t.Error("the refused command deleted the app")
	}
}
