package ctl

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
)

// An app scaled to 0 is said to be, rather than shown as an empty table;
// instances still stopping are listed under it.
func TestAppStatusScaledToZero(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	h.ok("", "deploy", h.file("hello.toml", strings.Replace(helloSpec, "replicas = 2", "replicas = 0", 1)), "--binary", elfBinary(t))
	r := h.ok("", "app", "status", "hello")
	if !strings.Contains(r.out, "scaled to 0 (replicas = 0): no instances wanted") || strings.Contains(r.out, "NODE") {
		t.Errorf("status of an app scaled to 0:\n%s", r.out)
	}
	var got appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Replicas != 0 || got.Desired != 0 || len(got.Instances) != 0 {
		t.Errorf("--json: %+v", got)
	}

	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Stopping, Version: "1.0.0"},
	}})
	r = h.ok("", "app", "status", "hello")
	if !strings.Contains(r.out, "scaled to 0") || !strings.Contains(r.out, "hello-0") {
		t.Errorf("status of an app scaled to 0 with an instance stopping:\n%s", r.out)
	}
}
