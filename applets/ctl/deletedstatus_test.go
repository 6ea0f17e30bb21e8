package ctl

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
)

// Runners stop a deleted app's instances, each for up to its
// stop_timeout. app status said "not deployed" and app list left the app
// out meanwhile, so the operator could not see them stop.
func TestDeletedAppShowsTheInstancesStillStopping(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	h.ok("", "app", "delete", "hello")
	h.heartbeat(state.Node{ID: "node-1", Arch: "amd64", Instances: []state.Instance{{App: "hello", Node: "node-1", ID: "0-abc", State: state.Stopping, PID: 42, Version: "1.0.0"}}})

	r := h.fails(ExitNotFound, "", "app", "status", "hello")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) < 4 || !strings.Contains(lines[0], "deleted") || !strings.Contains(lines[3], "stopping") || !strings.Contains(r.err, "not deployed") {
		t.Errorf("app status of a deleted app still stopping: stdout\n%s\nstderr %s", r.out, r.err)
	}
	r = h.fails(ExitNotFound, "", "app", "status", "hello", "--json")
	var s struct {
		Deleted   bool
		Revision  uint64
		Instances []struct{ Node, ID, State string }
	}
	if err := json.Unmarshal([]byte(r.out), &s); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if !s.Deleted || s.Revision == 0 || len(s.Instances) != 1 || s.Instances[0].State != "stopping" {
		t.Errorf("app status --json of a deleted app still stopping: %s", r.out)
	}

	r = h.ok("", "app", "list")
	if !strings.Contains(r.out, "hello") || !strings.Contains(r.out, "deleted") {
		t.Errorf("app list while a deleted app stops:\n%s", r.out)
	}
	r = h.ok("", "app", "list", "--json")
	var apps []struct {
		Name    string
		Deleted bool
	}
	if err := json.Unmarshal([]byte(r.out), &apps); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if len(apps) != 1 || apps[0].Name != "hello" || !apps[0].Deleted {
		t.Errorf("app list --json while a deleted app stops: %s", r.out)
	}

	// Once the node reports none, the app is gone.
	h.heartbeat(state.Node{ID: "node-1", Arch: "amd64"})
	if r := h.fails(ExitNotFound, "", "app", "status", "hello"); r.out != "" {
		t.Errorf("app status of a deleted app stopped: %q", r.out)
	}
	if r := h.ok("", "app", "list"); strings.Contains(r.out, "hello") {
		t.Errorf("app list once a deleted app stopped:\n%s", r.out)
	}
}
