package ctl

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
)

// TestJSONGivesEveryKey checks that every --json output of ctl has every
// key in every item, the unset ones included: a script reading a key must
// not have to tell it missing from empty.
func TestJSONGivesEveryKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A route without host, methods or timeout; a node without labels,
	// keys, host or duplicates; an instance that runs no process.
	p := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	h.ok("", "deploy", p, "--binary", bin)
	h.heartbeat(state.Node{ID: "node-1", Arch: "amd64", Instances: []state.Instance{{App: "hello", Node: "node-1", ID: "0-abc", State: state.Pending}}})
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	line, err := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "node-1", Instance: "0-abc", Stream: state.Stdout, Line: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, names.LogSubject("hello", "node-1", "0-abc"), line); err != nil {
		t.Fatal(err)
	}

	instance := []string{"node", "id", "state", "pid", "restarts", "reason", "version", "healthy", "current", "started"}
	status := []string{"name", "version", "revision", "updated", "mode", "replicas", "desired", "ready", "nodes", "deleted", "missing_nodes", "refused_nodes", "starting_nodes", "signed_by", "signature_error", "error", "outdated", "instances"}
	tests := []struct {
		name string
		args []string
		// items are the objects to check, out of the decoded output.
		items func(t *testing.T, out string) []map[string]any
		keys  []string
	}{
		{"route list", []string{"route", "list", "--json"}, listOf, []string{"app", "host", "path", "match", "methods", "service", "strip_prefix", "timeout", "max_body", "not_ours"}},
		{"node list", []string{"node", "list", "--json"}, listOf, []string{"id", "version", "os", "arch", "labels", "capabilities", "signatures_required", "trusted_keys", "signing_key_file", "secret_keys", "instances", "started", "time", "stored", "interval", "host", "boot", "duplicates"}},
		{"node list instances", []string{"node", "list", "--json"}, nested("instances"), []string{"app", "node", "id", "slot", "state", "pid", "restarts", "reason", "version", "fingerprint", "exit_code", "started", "healthy", "landlock_abi", "since"}},
		{"node list capabilities", []string{"node", "list", "--json"}, nested("capabilities"), []string{"landlock_abi", "landlock_enforced", "cgroup_version", "cgroup_controllers", "namespaces", "user_namespaces", "sandbox", "sandbox_note"}},
		{"app status", []string{"app", "status", "hello", "--json"}, oneObject, status},
		{"app status instances", []string{"app", "status", "hello", "--json"}, nested("instances"), instance},
		{"app list", []string{"app", "list", "--json"}, listOf, status},
		{"image list", []string{"image", "list", "--json"}, listOf, []string{"name", "size", "sha256", "arch", "modified", "used_by"}},
		{"logs", []string{"logs", "hello", "--json"}, lines, []string{"time", "app", "node", "instance", "stream", "line", "partial"}},
		{"deploy dry run", []string{"deploy", p, "--binary", bin, "--dry-run", "--json"}, oneObject, []string{"app", "version", "dry_run", "binaries", "pinned", "routes", "revision", "changed", "uid", "group", "rollout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.ok("", tc.args...)
			items := tc.items(t, r.out)
			if len(items) == 0 {
				t.Fatalf("no item to check in %s", r.out)
			}
			for i, item := range items {
				for _, k := range tc.keys {
					if _, ok := item[k]; !ok {
						t.Errorf("item %d has no key %q: %v", i, k, item)
					}
				}
			}
		})
	}
}

func oneObject(t *testing.T, out string) []map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	return []map[string]any{m}
}

func listOf(t *testing.T, out string) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	return l
}

// lines decodes output of one object a line.
func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var l []map[string]any
	for s := range strings.Lines(strings.TrimSpace(out)) {
		l = append(l, oneObject(t, s)...)
	}
	return l
}

// nested gives the objects under key in each item of a listOf, or of an
// oneObject, whether key holds one object or a list of them.
func nested(key string) func(t *testing.T, out string) []map[string]any {
	return func(t *testing.T, out string) []map[string]any {
		t.Helper()
		items := oneObject
		if strings.HasPrefix(strings.TrimSpace(out), "[") {
			items = listOf
		}
		var l []map[string]any
		for _, item := range items(t, out) {
			switch v := item[key].(type) {
			case map[string]any:
				l = append(l, v)
			case []any:
				for _, x := range v {
					if m, ok := x.(map[string]any); ok {
						l = append(l, m)
					}
				}
			}
		}
		return slices.Clip(l)
	}
}
