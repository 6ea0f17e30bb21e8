package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/elfarch"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

// helloSpec's min_healthy is short: the tests that --wait for it are about
// other things, and the default would add its 2s to each.
const helloSpec = `name = "hello"
version = "1.0.0"
nodes = ["node-1"]
replicas = 2
health = { min_healthy = "100ms" }
[[routes]]
path = "/hello/"
`

func TestDeployInvalidSpecUploadsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	tests := []struct {
		name, spec, want string
	}{
		{"negative replicas", "name = \"hello\"\nversion = \"1\"\nnodes = [\"n\"]\nreplicas = -2\n", `hello.toml:4: key "replicas"`},
		{"unknown key", "name = \"hello\"\nversion = \"1\"\nnodes = [\"n\"]\nreplicaz = 2\n", `hello.toml:4: unknown key "replicaz"`},
		{"file escape", "name = \"hello\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"x\"\npath = \"../x\"\n", `hello.toml:6: key "files[0].path"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := h.file("hello.toml", tc.spec)
			r := h.fails(1, "", "deploy", p, "--binary", bin)
			if !strings.Contains(r.err, tc.want) {
				t.Errorf("error %q does not contain %q", r.err, tc.want)
			}
			if n := h.objectCount(names.BinariesBucket); n != 0 {
				t.Errorf("%d objects uploaded from an invalid spec", n)
			}
			if _, ok := h.get(names.AppsBucket, "hello"); ok {
				t.Error("invalid spec stored")
			}
		})
	}
}

func TestDeployRefusesBadBinaries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	script := h.file("run.sh", "#!/bin/sh\necho hi\n")
	r := h.fails(1, "", "deploy", p, "--binary", script)
	// A script's author is told how to run it, not to rebuild with GOOS.
	for _, want := range []string{"not an ELF file", "script for /bin/sh", "[[files]]"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("error %q does not contain %q", r.err, want)
		}
	}
	if strings.Contains(r.err, "GOOS") {
		t.Errorf("error %q tells a script's author to build it", r.err)
	}
	// A directory (the package, not the build) is named as one.
	if r := h.fails(1, "", "deploy", p, "--binary", h.dir); !strings.Contains(r.err, "is a directory") {
		t.Errorf("unexpected error for a directory: %s", r.err)
	}
	bin := elfBinary(t)
	r = h.fails(2, "", "deploy", p, "--binary", bin, "--binary", bin)
	if !strings.Contains(r.err, "both") {
		t.Errorf("unexpected error: %s", r.err)
	}
	h.fails(2, "", "deploy", p)
	if n := h.objectCount(names.BinariesBucket); n != 0 {
		t.Errorf("%d objects uploaded", n)
	}
}

func TestDeployDryRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--dry-run", "--json")
	var res deployResult
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if !res.DryRun || len(res.Binaries) != 1 || res.Binaries[0].Arch != runtime.GOARCH || res.Binaries[0].Object != "hello/1.0.0/linux-"+runtime.GOARCH+"-"+res.Binaries[0].SHA256[:12] {
		t.Errorf("plan: %+v", res)
	}
	if n := h.objectCount(names.BinariesBucket); n != 0 {
		t.Errorf("dry run uploaded %d objects", n)
	}
	if _, err := h.js.KeyValue(context.Background(), names.AppsBucket); !store.IsNotFound(err) {
		t.Errorf("dry run created bucket %s (err %v)", names.AppsBucket, err)
	}
}

// deploy --json is for scripts: its keys are the same snake_case throughout,
// and lists are lists even when empty.
func TestDeployJSONKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	r := h.fails(ExitRollout, "", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--json", "--wait", "--timeout", "1s")
	var res struct {
		Pinned  map[string]map[string]any `json:"pinned"`
		Rollout map[string]any            `json:"rollout"`
	}
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	pin := res.Pinned[runtime.GOARCH]
	if _, ok := pin["object"]; !ok {
		t.Errorf("pinned binary keys: %v", pin)
	}
	if _, ok := pin["sha256"]; !ok {
		t.Errorf("pinned binary keys: %v", pin)
	}
	if ready, ok := res.Rollout["ready"].([]any); !ok || len(ready) != 0 {
		t.Errorf("rollout ready: %#v", res.Rollout["ready"])
	}
	// In every outcome: a rollout that timed out with no node down and
	// nothing failed printed no failed and no down, which a script reads to
	// tell a failure from a down node.
	for _, k := range []string{"waiting", "failed", "down"} {
		if _, ok := res.Rollout[k].([]any); !ok {
			t.Errorf("rollout %s: %#v, want a list", k, res.Rollout[k])
		}
	}
}

// rollout.down gives each node and why apart, so that a script reads the
// node's name without parsing it out of a sentence.
func TestDeployJSONDownIsNodeAndReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	spec := strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1)
	r := h.fails(ExitRollout, "", "deploy", h.file("hello.toml", spec), "--binary", elfBinary(t), "--json", "--wait", "--timeout", "1s")
	var res struct {
		Rollout struct {
			Down json.RawMessage `json:"down"`
		} `json:"rollout"`
	}
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	var down []map[string]string
	if err := json.Unmarshal(res.Rollout.Down, &down); err != nil {
		t.Fatalf("rollout.down %s: %v, want a list of objects", res.Rollout.Down, err)
	}
	if want := []map[string]string{{"node": "node-2", "reason": "no heartbeat"}}; !reflect.DeepEqual(down, want) {
		t.Errorf("rollout.down %v, want %v", down, want)
	}
}

// A rollout that fails before any instance ran (no binary for the node's
// arch) does not send its developer to logs that cannot hold anything.
func TestDeployWaitNoLogsHintWhenNothingRan(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	other := "riscv64"
	if runtime.GOARCH == other {
		other = "arm64"
	}
	h.heartbeat(state.Node{ID: "node-1", Arch: other})
	r := h.fails(ExitRollout, "", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--wait", "--timeout", "5s")
	if !strings.Contains(r.err, "no "+other+" binary") || strings.Contains(r.err, "narun ctl logs") {
		t.Errorf("error %q: want the missing binary, without pointing to logs", r.err)
	}
}

// A spec path that names an endless stream (a FIFO, a device) is read only
// up to the largest spec, not into memory until the process dies.
func TestDeployReadsABoundedSpec(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	fifo := filepath.Join(h.dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	const total = 64 << 20
	written := make(chan int64, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			written <- -1
			return
		}
		defer f.Close()
		chunk := []byte(strings.Repeat("#", 64<<10) + "\n")
		var n int64
		for n < total {
			m, err := f.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		written <- n
	}()
	r := h.fails(1, "", "deploy", fifo, "--dry-run")
	if !strings.Contains(r.err, "at most 256 KiB") {
		t.Errorf("deploy of an endless spec: %s", r.err)
	}
	if n := <-written; n >= total {
		t.Errorf("deploy read all %d bytes of the stream", n)
	}
}

// A dry run linting a spec and its binary where no NATS is reachable (a CI
// job) still checks both, and says the names it shows are a first deploy's.
func TestDeployDryRunOffline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	r := h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t), "--dry-run", "--json")
	var res deployResult
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if len(res.Binaries) != 1 || !strings.HasPrefix(res.Binaries[0].Object, "hello/1.0.0/linux-"+runtime.GOARCH+"-") {
		t.Errorf("plan: %+v", res)
	}
	if !strings.Contains(r.err, "object names are those of a first deploy") {
		t.Errorf("no warning that the names may differ; stderr:\n%s", r.err)
	}
	h.fails(1, "", "deploy", h.file("bad.toml", helloSpec+"replicas = -1\n"), "--binary", elfBinary(t), "--dry-run")
}

func TestDeployWarnsOfDynamicBinaryInSandbox(t *testing.T) {
	t.Parallel()
	dynamic := "/bin/sh"
	if _, err := elfarch.DetectFile(dynamic); err != nil || sandbox.Interpreter(dynamic) == "" {
		t.Skipf("%s is not a dynamically linked executable for this arch here", dynamic)
	}
	h := newHarness(t)
	const warning = "is dynamically linked"
	tests := []struct {
		name, extra string
		warns       bool
	}{
		{name: "exec mode", extra: ""},
		{name: "sandbox without shared_libs", extra: "mode = \"sandbox\"\n", warns: true},
		{name: "sandbox with shared_libs", extra: "mode = \"sandbox\"\n[sandbox]\npresets = [\"stdio\", \"shared_libs\"]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := h.file("dyn.toml", "name = \"dyn\"\nversion = \"1\"\nnodes = [\"n\"]\n"+tt.extra)
			r := h.ok("", "deploy", p, "--binary", dynamic, "--dry-run")
			if got := strings.Contains(r.err, warning); got != tt.warns {
				t.Errorf("warning shown: %v, want %v; stderr:\n%s", got, tt.warns, r.err)
			}
		})
	}
}

// A sandboxed app on the host network binds a port below 1024 only where
// the node lowered ip_unprivileged_port_start, which ctl cannot know: a
// warning, not a refusal.
func TestDeployWarnsOfPrivilegedHostPort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	for _, tt := range []struct {
		name, extra string
		warns       bool
	}{
		{"sandbox on the host network", "mode = \"sandbox\"\n[http]\nport = 80\n", true},
		{"sandbox with its own network", "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n[http]\nport = 80\n", false},
		{"exec", "[http]\nport = 80\n", false},
		{"port 1024", "mode = \"sandbox\"\n[http]\nport = 1024\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := h.file("low.toml", "name = \"low\"\nversion = \"1\"\nnodes = [\"n\"]\n"+tt.extra)
			r := h.ok("", "deploy", p, "--binary", bin, "--dry-run")
			if got := strings.Contains(r.err, "ip_unprivileged_port_start"); got != tt.warns {
				t.Errorf("warning shown: %v, want %v; stderr:\n%s", got, tt.warns, r.err)
			}
		})
	}
}

func TestDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	h.ok("", "deploy", p, "--binary", bin)

	stored, ok := h.get(names.AppsBucket, "hello")
	if !ok {
		t.Fatal("spec not stored")
	}
	if !strings.HasPrefix(string(stored), helloSpec) {
		t.Errorf("stored spec does not keep the operator's text:\n%s", stored)
	}
	app, err := spec.Parse("stored", stored)
	if err != nil {
		t.Fatal(err)
	}
	want, err := inspectBinary(bin, app)
	if err != nil {
		t.Fatal(err)
	}
	pinned, ok := app.Binary(runtime.GOARCH)
	if !ok || pinned.SHA256 != want.SHA256 || pinned.Object != want.Object {
		t.Fatalf("pinned %+v, want %s %s", pinned, want.Object, want.SHA256)
	}
	obs, err := h.js.ObjectStore(context.Background(), names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(context.Background(), pinned.Object)
	if err != nil || store.DigestHex(info) != want.SHA256 {
		t.Fatalf("object %s: %v, digest %s", pinned.Object, err, store.DigestHex(info))
	}

	raw, ok := h.get(names.RoutesBucket, "hello")
	if !ok {
		t.Fatal("routes not stored")
	}
	var routes []config.Route
	if err := json.Unmarshal(raw, &routes); err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Path != "/hello/" || routes[0].Service != "hello" {
		t.Errorf("routes: %+v", routes)
	}

	// The same deploy again changes nothing; without --binary the pinned
	// binaries of the same version are kept.
	r := h.ok("", "deploy", p, "--binary", bin)
	if !strings.Contains(r.out, "unchanged") {
		t.Errorf("redeploy: %s", r.out)
	}
	r = h.ok("", "deploy", p, "--json")
	if !strings.Contains(r.out, `"changed": false`) {
		t.Errorf("deploy without --binary: %s", r.out)
	}

	// A spec without routes removes the app's routes.
	h.file("hello.toml", "name = \"hello\"\nversion = \"1.0.0\"\nnodes = [\"node-1\"]\n")
	h.ok("", "deploy", p)
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("routes kept after they were removed from the spec")
	}
}

func TestDeployWarnsOfAbsentNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	p := h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "ghost"]`, 1))
	r := h.ok("", "deploy", p, "--binary", elfBinary(t))
	if !strings.Contains(r.err, "warning: node ghost sends no heartbeat") || strings.Contains(r.err, "node node-1") {
		t.Errorf("stderr: %q", r.err)
	}
	// Under JSON logs a script reads every line of stderr as JSON; the
	// log level, which a device's narun.toml may set for the service,
	// does not hide a deploy's warnings.
	r = h.ok("", "--log-format", "json", "deploy", p, "--json")
	var rec struct{ Level, Msg string }
	if lines := strings.Split(strings.TrimSuffix(r.err, "\n"), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil ||
		rec.Level != "WARN" || !strings.HasPrefix(rec.Msg, "node ghost sends no heartbeat") {
		t.Errorf("stderr under --log-format json: %q; want one JSON WARN record of the absent node", r.err)
	}
	r = h.ok("", "--log-level", "error", "--log-format", "json", "deploy", p)
	if !strings.Contains(r.err, `"level":"WARN"`) || !strings.Contains(r.err, "node ghost sends no heartbeat") {
		t.Errorf("stderr under --log-level error: %q; want the warning all the same", r.err)
	}

	// A host named in capitals (EDGE-1) has a node id in capitals: the
	// spec's edge-1 is another id, and the warning names the one that is.
	h.heartbeat(state.Node{ID: "EDGE-1", Arch: runtime.GOARCH})
	p = h.file("upper.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["edge-1"]`, 1))
	r = h.ok("", "deploy", p, "--binary", elfBinary(t))
	if !strings.Contains(r.err, "warning: node edge-1 sends no heartbeat; node EDGE-1 does: node ids are case-sensitive") {
		t.Errorf("stderr for a node id in other case: %q", r.err)
	}

	// A label selector matched by no live node is as good as a typo.
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH, Labels: map[string]string{"role": "edge", "zone": "a"}})
	p = h.file("labels.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `labels = { role = "edge", zone = "b" }`, 1))
	r = h.ok("", "deploy", p, "--binary", elfBinary(t))
	if !strings.Contains(r.err, "warning: no node that sends a heartbeat has the labels role=edge,zone=b") {
		t.Errorf("stderr: %q", r.err)
	}
	h.file("labels.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `labels = { role = "edge", zone = "a" }`, 1))
	if r = h.ok("", "deploy", p); strings.Contains(r.err, "warning") {
		t.Errorf("stderr of a selector a node matches: %q", r.err)
	}
}

// A node selected by the spec whose arch it has no binary for fails its
// instances at once: a deploy without --wait says so instead of a bare success.
func TestDeployWarnsOfMissingArch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: "riscv64"})
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH})
	p := h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1))
	r := h.ok("", "deploy", p, "--binary", elfBinary(t))
	if !strings.Contains(r.err, "warning: node node-1 is linux/riscv64 and this spec has no riscv64 binary") || strings.Contains(r.err, "node node-2") {
		t.Errorf("stderr: %q", r.err)
	}
}

// A sandboxed app selecting a node that cannot run a sandbox (its runner
// is not root) fails its instances there at once: a deploy says so, as a
// dry run does. A node that can, and an exec app, get no warning.
func TestDeployWarnsOfNodeWithoutSandbox(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	caps := func(sandbox bool) state.Capabilities {
		return state.Capabilities{Namespaces: []string{"pid", "net", "mnt", "ipc", "uts"}, Sandbox: sandbox}
	}
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Capabilities: caps(false)})
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH, Capabilities: caps(true)})
	exec := h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1))
	if r := h.ok("", "deploy", exec, "--binary", elfBinary(t)); strings.Contains(r.err, "sandbox") {
		t.Errorf("stderr of an exec app: %q", r.err)
	}
	sandboxed := h.file("sandboxed.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, "nodes = [\"node-1\", \"node-2\"]\nmode = \"sandbox\"", 1))
	want := `warning: node node-1 cannot run mode = "sandbox" (its runner is not root, or the kernel lacks a namespace it needs): its instances fail`
	for _, args := range [][]string{{"deploy", sandboxed, "--dry-run"}, {"deploy", sandboxed}} {
		r := h.ok("", args...)
		if !strings.Contains(r.err, want) || strings.Contains(r.err, "node node-2") {
			t.Errorf("%v: stderr %q; want %q", args, r.err, want)
		}
	}
}

func TestDeployRouteClashUploadsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	// "a-hello" sorts first: gateways would hand it hello's route.
	other := h.file("a-hello.toml", strings.Replace(helloSpec, `name = "hello"`, `name = "a-hello"`, 1))
	r := h.fails(1, "", "deploy", other, "--binary", elfBinary(t))
	if !strings.Contains(r.err, `app "hello" route #1 (path "/hello/") and app "a-hello" route #1`) {
		t.Errorf("error does not name both routes: %s", r.err)
	}
	if _, ok := h.get(names.AppsBucket, "a-hello"); ok {
		t.Error("spec stored")
	}
	if _, ok := h.get(names.RoutesBucket, "a-hello"); ok {
		t.Error("routes stored")
	}
	if n := h.objectCount(names.BinariesBucket); n != 1 {
		t.Errorf("%d binaries stored, want only hello's", n)
	}
	// Its own routes do not clash with themselves on a redeploy.
	h.ok("", "deploy", h.file("hello.toml", strings.Replace(helloSpec, `version = "1.0.0"`, `version = "1.0.1"`, 1)), "--binary", elfBinary(t))
}

func TestDeployMissingReferencesUploadsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n[[files]]\nobject = \"conf\"\npath = \"conf.toml\"\n")
	r := h.fails(1, "", "deploy", p, "--binary", elfBinary(t))
	for _, want := range []string{`secret "db" does not exist`, `file "conf" does not exist`} {
		if !strings.Contains(r.err, want) {
			t.Errorf("error lacks %q: %s", want, r.err)
		}
	}
	if n := h.objectCount(names.BinariesBucket); n != 0 {
		t.Errorf("%d objects uploaded", n)
	}
}

// fakeRunner answers deployments of app the way a runner reports them:
// an event per instance in the given final state, then, heartbeatLag later
// (the real runner coalesces the heartbeats of a burst of changes), a
// heartbeat with the same instances.
func fakeRunner(t *testing.T, h *harness, node string, final state.State, reason string, heartbeatLag time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := h.kv(names.AppsBucket).WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			app, err := spec.Parse(e.Key(), e.Value())
			if err != nil {
				continue
			}
			n := state.Node{ID: node, Arch: runtime.GOARCH}
			for i := range app.ReplicasOn(node, nil) {
				// A new id for each spec, as the runner starts a new
				// instance for a changed spec, even one in the same slot.
				n.Instances = append(n.Instances, state.Instance{
					App: app.Name, Node: node, ID: fmt.Sprintf("%s-%d.%d", app.Name, i, e.Revision()), State: final, Reason: reason,
					PID: 1000 + i, Version: app.Version, Fingerprint: app.Fingerprint(runtime.GOARCH), Since: time.Now(),
				})
			}
			for _, in := range n.Instances {
				// Like the runner, report the state, then a change of
				// another field in the same state.
				pidless := in
				pidless.PID = 0
				for _, v := range []state.Instance{pidless, in} {
					ev, _ := json.Marshal(state.Event{Instance: v, Time: v.Since})
					if err := h.js.Conn().Publish(names.EventSubject(app.Name, node), ev); err != nil {
						return
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(heartbeatLag):
			}
			b, _ := json.Marshal(n)
			if _, err := h.kv(names.NodesBucket).Put(ctx, node, b); err != nil {
				return
			}
		}
	}()
}

func TestDeployWait(t *testing.T) {
	t.Parallel()
	t.Run("healthy", func(t *testing.T) {
		h := newHarness(t)
		h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
		fakeRunner(t, h, "node-1", state.Healthy, "", 0)
		p := h.file("hello.toml", helloSpec)
		r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
		if !strings.Contains(r.out, "2 instance(s) ready\n") {
			t.Errorf("output: %s", r.out)
		}
		// The same file again changes nothing, and says so.
		r = h.ok("", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
		if !strings.Contains(r.out, "2 instance(s) ready (spec unchanged: nothing rolled out)") {
			t.Errorf("output of a deploy that changes nothing: %s", r.out)
		}
	})
	t.Run("status agrees when it returns", func(t *testing.T) {
		h := newHarness(t)
		h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
		fakeRunner(t, h, "node-1", state.Healthy, "", 300*time.Millisecond)
		p := h.file("hello.toml", helloSpec)
		r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
		if n := strings.Count(r.err, "node-1 hello-0.1: healthy\n"); n != 1 {
			t.Errorf("progress shows the same state %d times:\n%s", n, r.err)
		}
		if desired, ready := h.readiness("hello"); desired != 2 || ready != 2 {
			t.Errorf("app status right after deploy --wait: %d of %d ready", ready, desired)
		}
	})
	t.Run("heartbeats never agree", func(t *testing.T) {
		h := newHarness(t)
		h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
		fakeRunner(t, h, "node-1", state.Healthy, "", time.Hour)
		p := h.file("hello.toml", helloSpec)
		r := h.fails(ExitRollout, "", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "1s")
		if !strings.Contains(r.err, "node-1: 0 of 2 ready (per its heartbeat)") {
			t.Errorf("error: %s", r.err)
		}
	})
	t.Run("failed", func(t *testing.T) {
		h := newHarness(t)
		h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
		fakeRunner(t, h, "node-1", state.Failed, "exec format error", 300*time.Millisecond)
		p := h.file("hello.toml", helloSpec)
		r := h.fails(ExitRollout, "", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
		if !strings.Contains(r.err, "exec format error") {
			t.Errorf("node's reason not reported: %s", r.err)
		}
		r = h.ok("", "app", "status", "hello")
		if strings.Count(r.out, "exec format error") != 2 {
			t.Errorf("app status right after a failed deploy --wait does not show the failure:\n%s", r.out)
		}
	})
	t.Run("no binary for the node's arch", func(t *testing.T) {
		h := newHarness(t)
		h.heartbeat(state.Node{ID: "node-1", Arch: "riscv64"})
		p := h.file("hello.toml", helloSpec)
		r := h.fails(ExitRollout, "", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
		if !strings.Contains(r.err, "no riscv64 binary") {
			t.Errorf("error: %s", r.err)
		}
	})
}

func TestAppStatusJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	app := h.storedApp("hello")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Healthy, PID: 4242, Restarts: 1, Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH)},
		{App: "hello", Node: "node-1", ID: "hello-1", State: state.Backoff, Restarts: 3, Reason: "exit status 1", Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH)},
		{App: "other", Node: "node-1", ID: "other-0", State: state.Running},
	}})
	r := h.ok("", "app", "status", "hello", "--json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	insts, ok := got["instances"].([]any)
	if !ok || len(insts) != 2 {
		t.Fatalf("instances: %v", got["instances"])
	}
	for _, in := range insts {
		m := in.(map[string]any)
		for _, k := range []string{"node", "id", "state", "pid", "restarts", "reason"} {
			if _, ok := m[k]; !ok {
				t.Errorf("instance lacks %q: %v", k, m)
			}
		}
	}
	first := insts[0].(map[string]any)
	if first["id"] != "hello-0" || first["state"] != "healthy" || first["pid"] != float64(4242) || first["restarts"] != float64(1) {
		t.Errorf("first instance: %v", first)
	}
	if got["desired"] != float64(2) || got["ready"] != float64(1) {
		t.Errorf("desired %v ready %v", got["desired"], got["ready"])
	}

	// People get a table with the same facts.
	r = h.ok("", "app", "status", "hello")
	if !strings.Contains(r.out, "hello-1") || !strings.Contains(r.out, "exit status 1") {
		t.Errorf("table: %s", r.out)
	}
	r = h.ok("", "app", "list", "--json")
	if !strings.Contains(r.out, `"name": "hello"`) {
		t.Errorf("app list: %s", r.out)
	}
	h.fails(ExitNotFound, "", "app", "status", "nope")
	h.fails(2, "", "app", "status")
}

// A device without a clock that keeps time boots at 1970, or at the time
// fake-hwclock saved, until NTP steps it; another's may be ahead. The
// uptime status shows is counted on the node's clock, not on how far its
// stamps are from this machine's: a process started five minutes before
// the heartbeat has run about five minutes whatever the node's year.
func TestAppStatusUptimeOnNodeClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1)), "--binary", elfBinary(t))
	app := h.storedApp("hello")
	fp := app.Fingerprint(runtime.GOARCH)
	for node, offset := range map[string]time.Duration{"node-1": -56 * 365 * 24 * time.Hour, "node-2": 400 * 24 * time.Hour} {
		clock := time.Now().Add(offset).UTC()
		h.heartbeat(state.Node{ID: node, Arch: runtime.GOARCH, Time: clock, Interval: time.Minute, Instances: []state.Instance{
			{App: "hello", Node: node, ID: "hello-0", State: state.Healthy, PID: 4242, Version: "1.0.0", Fingerprint: fp, Started: clock.Add(-5 * time.Minute)},
		}})
	}
	r := h.ok("", "app", "status", "hello")
	for _, node := range []string{"node-1", "node-2"} {
		var row string
		for line := range strings.Lines(r.out) {
			if strings.HasPrefix(line, node+" ") {
				row = line
			}
		}
		if f := strings.Fields(row); len(f) < 7 || !strings.HasPrefix(f[6], "5m") {
			t.Errorf("%s: uptime of a process started 5m before its heartbeat: row %q, want 5m...\n%s", node, row, r.out)
		}
	}
}

// A node the spec names that sends no heartbeat (down, its entry expired)
// keeps its replicas in the desired count and is shown as missing.
func TestAppStatusCountsMissingNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1)), "--binary", elfBinary(t))
	app := h.storedApp("hello")
	fp := app.Fingerprint(runtime.GOARCH)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Healthy, Version: "1.0.0", Fingerprint: fp},
		{App: "hello", Node: "node-1", ID: "hello-1", State: state.Healthy, Version: "1.0.0", Fingerprint: fp},
	}})
	var got appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Desired != 4 || got.Ready != 2 || !slices.Equal(got.Missing, []string{"node-2"}) {
		t.Errorf("desired %d, ready %d, missing %v; want 4, 2, [node-2]", got.Desired, got.Ready, got.Missing)
	}
	if r := h.ok("", "app", "status", "hello"); !strings.Contains(r.out, "2/4 ready") || !strings.Contains(r.out, "no heartbeat from this node") {
		t.Errorf("table:\n%s", r.out)
	}
	if r := h.ok("", "app", "list"); !strings.Contains(r.out, "2/4") || !strings.Contains(r.out, "node-1,node-2(missing)") {
		t.Errorf("app list:\n%s", r.out)
	}
}

// A selected node that runs only specs signed by a key it trusts starts
// nothing of an unsigned one: status says so instead of an empty table.
func TestAppStatusNamesRefusingNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "node-2"]`, 1)), "--binary", elfBinary(t))
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, SignaturesRequired: true, TrustedKeys: []string{"narun-ed25519:someone"}})
	h.heartbeat(state.Node{ID: "node-2", Arch: runtime.GOARCH})
	var got appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Refused) != 1 || got.Refused[0].Node != "node-1" || !strings.Contains(got.Refused[0].Reason, "this one is unsigned") {
		t.Errorf("refused nodes: %+v", got.Refused)
	}
	if r := h.ok("", "app", "status", "hello"); !strings.Contains(r.out, "refused") {
		t.Errorf("table:\n%s", r.out)
	}
}

// A node whose last heartbeat is three intervals old is taken for down
// before its entry expires: its instances are not counted ready, and node
// list says it is late. A node id two runners share is called out.
// A node whose heartbeat the NATS server stored more than three of its
// intervals ago stopped, whatever time it wrote in it: here one an hour
// ahead, which its own stamp would keep looking fresh.
func TestStatusOfSilentNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	app := h.storedApp("hello")
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Interval: time.Nanosecond, Time: time.Now().Add(time.Hour),
		Host: "a", Duplicates: []state.Duplicate{{Host: "b", Boot: "x", Seen: time.Now()}},
		Instances: []state.Instance{{App: "hello", Node: "node-1", ID: "hello-0", State: state.Healthy, Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH),
			PID: 42, Started: time.Now().Add(-time.Hour)}}})
	// The heartbeat ages by the server's clock from the moment it is
	// stored; nothing writes another.
	var got appStatusJSON
	testutil.Eventually(t, 20*time.Second, "the silent node's instance to turn unknown", func() bool {
		if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &got); err != nil {
			t.Fatal(err)
		}
		return len(got.Instances) == 1 && got.Instances[0].State == stateUnknown
	})
	if got.Ready != 0 || !strings.Contains(got.Instances[0].Reason, "it said healthy") {
		t.Errorf("status of a silent node's instance: ready %d, %+v", got.Ready, got.Instances)
	}
	if r := h.ok("", "app", "status", "hello"); strings.Contains(r.out, "1h") {
		t.Errorf("a silent node's instance shown with an uptime:\n%s", r.out)
	}
	r := h.ok("", "node", "list")
	if !strings.Contains(r.out, "(late: down?)") {
		t.Errorf("node list:\n%s", r.out)
	}
	if !strings.Contains(r.err, "node id node-1 is used by two runners (hosts a and b)") {
		t.Errorf("node list stderr:\n%s", r.err)
	}
}

// A node whose clock is behind writes heartbeats stamped in the past:
// they are fresh all the same, its instances count, and node list says
// what is wrong with it.
func TestStatusOfNodeWithSlowClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	app := h.storedApp("hello")
	behind := time.Now().Add(-20 * time.Second)
	var instances []state.Instance
	for i := range 2 {
		instances = append(instances, state.Instance{App: "hello", Node: "node-1", ID: fmt.Sprintf("hello-%d", i), Slot: i, State: state.Healthy,
			Version: "1.0.0", Fingerprint: app.Fingerprint(runtime.GOARCH), Since: behind})
	}
	// 20 s behind is more than three of its 5 s intervals.
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Interval: 5 * time.Second, Time: behind, Instances: instances})
	if desired, ready := h.readiness("hello"); desired != 2 || ready != 2 {
		t.Errorf("app status: %d of %d ready, want 2 of 2", ready, desired)
	}
	r := h.ok("", "node", "list")
	if strings.Contains(r.out, "late") {
		t.Errorf("node list of a node heard from just now:\n%s", r.out)
	}
	if !strings.Contains(r.err, "warning: the clock of node node-1 is 2") || !strings.Contains(r.err, "s behind the NATS server's") {
		t.Errorf("node list stderr lacks the clock warning:\n%s", r.err)
	}
}

func TestAppRestartWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	fakeRunner(t, h, "node-1", state.Healthy, "", 100*time.Millisecond)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t), "--wait", "--timeout", "20s")
	r := h.ok("", "app", "restart", "hello", "--wait", "--timeout", "20s")
	if !strings.Contains(r.out, "hello: restarted, 2 instance(s) ready") {
		t.Errorf("output: %s", r.out)
	}
	// Status counts only instances of the current spec as ready: the
	// restarted ones, which --wait waited for.
	if desired, ready := h.readiness("hello"); desired != 2 || ready != 2 {
		t.Errorf("app status right after restart --wait: %d of %d ready", ready, desired)
	}
}

func TestAppDeleteAndRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	before, _ := h.get(names.AppsBucket, "hello")
	h.ok("", "app", "restart", "hello")
	after, _ := h.get(names.AppsBucket, "hello")
	a1, err := spec.Parse("before", before)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := spec.Parse("after", after)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Fingerprint(runtime.GOARCH) == a2.Fingerprint(runtime.GOARCH) {
		t.Error("restart did not change the instance fingerprint")
	}
	if a2.Binaries[runtime.GOARCH] != a1.Binaries[runtime.GOARCH] {
		t.Error("restart changed the pinned binary")
	}

	r := h.ok("", "route", "list", "--json")
	if !strings.Contains(r.out, `"path": "/hello/"`) {
		t.Errorf("route list: %s", r.out)
	}
	r = h.ok("", "app", "delete", "hello")
	if want := "narun ctl image delete " + a2.Binaries[runtime.GOARCH].Object; !strings.Contains(r.out, want) {
		t.Errorf("app delete does not say how to remove its binary: %s", r.out)
	}
	if _, ok := h.get(names.AppsBucket, "hello"); ok {
		t.Error("spec still stored")
	}
	if _, ok := h.get(names.RoutesBucket, "hello"); ok {
		t.Error("routes still stored")
	}
	h.fails(ExitNotFound, "", "app", "delete", "hello")
	h.fails(ExitNotFound, "", "app", "restart", "hello")

	// A deleted app can be deployed again, binaries already uploaded.
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	if _, ok := h.get(names.AppsBucket, "hello"); !ok {
		t.Error("redeploy after delete did not store the spec")
	}
}

func TestImageDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	stored, _ := h.get(names.AppsBucket, "hello")
	app, err := spec.Parse("stored", stored)
	if err != nil {
		t.Fatal(err)
	}
	name := app.Binaries[runtime.GOARCH].Object
	if want := "hello/1.0.0/linux-" + runtime.GOARCH + "-" + app.Binaries[runtime.GOARCH].SHA256[:12]; name != want {
		t.Fatalf("object %s, want %s", name, want)
	}

	r := h.ok("", "image", "list", "--json")
	var objs []object
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Name != name || len(objs[0].UsedBy) != 1 || objs[0].UsedBy[0] != "hello" {
		t.Fatalf("image list: %+v", objs)
	}

	r = h.fails(ExitInUse, "", "image", "delete", name)
	if !strings.Contains(r.err, "used by hello") {
		t.Errorf("refusal does not say who uses it: %s", r.err)
	}
	if h.objectCount(names.BinariesBucket) != 1 {
		t.Fatal("refused delete removed the image")
	}
	h.fails(ExitNotFound, "", "image", "delete", "nope/1/linux-amd64")
	h.ok("", "image", "delete", name, "--force")
	if h.objectCount(names.BinariesBucket) != 0 {
		t.Fatal("forced delete kept the image")
	}
	// A node without a cached copy could not start what a restart rolls.
	r = h.fails(ExitNotFound, "", "app", "restart", "hello")
	if !strings.Contains(r.err, name+" for "+runtime.GOARCH+" is not in") {
		t.Errorf("restart without its binary: %s", r.err)
	}
	if now, _ := h.get(names.AppsBucket, "hello"); string(now) != string(stored) {
		t.Error("refused restart changed the stored spec")
	}
}

// A deployed spec this ctl cannot parse (one a newer ctl stored, with a
// key this one does not know) may pin any object its text names: image
// delete refuses such an object without --force, and image list names the
// app as its user, as deploy's prune keeps it.
func TestImageDeleteRefusesBuildAnUnparsableSpecNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	name := h.storedApp("hello").Binaries[runtime.GOARCH].Object
	stored, _ := h.get(names.AppsBucket, "hello")
	newer := append([]byte("future_knob = true\n"), stored...)
	if _, _, err := spec.ParseStored("hello", newer); err == nil {
		t.Fatal("the spec of a newer ctl parses: the test needs one that does not")
	}
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", newer); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "image", "list", "--json")
	var objs []object
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || !slices.Equal(objs[0].UsedBy, []string{"hello"}) {
		t.Errorf("image list: %+v, want %s used by hello", objs, name)
	}
	r = h.fails(ExitInUse, "", "image", "delete", name)
	if !strings.Contains(r.err, "used by hello") {
		t.Errorf("refusal does not say who uses it: %s", r.err)
	}
	if h.objectCount(names.BinariesBucket) != 1 {
		t.Fatal("refused delete removed the image")
	}
	h.ok("", "image", "delete", name, "--force")
	if h.objectCount(names.BinariesBucket) != 0 {
		t.Fatal("forced delete kept the image")
	}
}

// A deployed spec this ctl cannot parse may use any secret its text names
// whole: secret delete refuses such a secret without --force, saying the
// spec could not be parsed, and secret list names the app as its user, as
// image delete and image list do for a build. A secret whose name is only
// part of a longer one in that text is neither.
func TestSecretDeleteRefusesSecretAnUnparsableSpecNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	for _, name := range []string{"db-password", "password"} {
		h.ok("v\n", "--key-file", key, "secret", "set", name)
	}
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[secrets]]\nname = \"db-password\"\nenv = \"DB_PASSWORD\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	stored, _ := h.get(names.AppsBucket, "app")
	newer := append([]byte("future_knob = true\n"), stored...)
	if _, _, err := spec.ParseStored("app", newer); err == nil {
		t.Fatal("the spec of a newer ctl parses: the test needs one that does not")
	}
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "app", newer); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "secret", "list", "--json")
	var rows []secretRow
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil {
		t.Fatal(err)
	}
	used := map[string][]string{}
	for _, row := range rows {
		used[row.Name] = row.UsedBy
	}
	if !slices.Equal(used["db-password"], []string{"app"}) || len(used["password"]) != 0 {
		t.Errorf("secret list: %+v, want db-password used by app and password by none", rows)
	}
	r = h.fails(ExitInUse, "", "secret", "delete", "db-password")
	if !strings.Contains(r.err, "used by app") || !strings.Contains(r.err, "could not be parsed") {
		t.Errorf("refusal does not name the app whose spec could not be parsed: %s", r.err)
	}
	if _, ok := h.get(names.SecretsBucket, "db-password"); !ok {
		t.Fatal("refused delete removed the secret")
	}
	h.ok("", "secret", "delete", "password")
	h.ok("", "secret", "delete", "db-password", "--force")
	if _, ok := h.get(names.SecretsBucket, "db-password"); ok {
		t.Fatal("forced delete kept the secret")
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Deleted at once, which prune_grace would refuse (TestFileAndSecretDeleteDuringDeploy).
	h.pruneGrace("0s")
	content := h.file("conf.toml", "answer = 42\n")
	h.ok("", "files", "put", "conf", content)
	h.fails(2, "", "files", "put", "../conf", content)
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"conf\"\npath = \"etc/conf.toml\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	// ls and rm are the short forms the nats CLI taught its users.
	r := h.ok("", "files", "ls")
	if !strings.Contains(r.out, "conf") || !strings.Contains(r.out, "app") {
		t.Errorf("files ls: %s", r.out)
	}
	h.fails(ExitInUse, "", "files", "delete", "conf")
	h.ok("", "app", "rm", "app")
	h.ok("", "files", "rm", "conf")
	if h.objectCount(names.FilesBucket) != 0 {
		t.Error("file not deleted")
	}
}

// TestUploadsOnlyRegularFiles checks that files put and deploy --binary
// refuse what is not a regular file, naming it, instead of reading
// /dev/zero for ever or waiting on a named pipe for a writer, where
// Ctrl-C, which only cancels the command's context, could not stop them.
func TestUploadsOnlyRegularFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	fifo := filepath.Join(h.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	spec := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"files", "put", "zero", "/dev/zero"}, "/dev/zero: a character device, not a regular file"},
		{[]string{"files", "put", "fifo", fifo}, fifo + ": a named pipe, not a regular file"},
		{[]string{"files", "put", "dir", h.dir}, h.dir + ": a directory, not a regular file"},
		{[]string{"deploy", spec, "--binary", "/dev/zero"}, "/dev/zero: unsupported binary: a character device, not a regular file"},
		{[]string{"deploy", spec, "--binary", fifo}, fifo + ": unsupported binary: a named pipe, not a regular file"},
	} {
		r := h.fails(1, "", tc.args...)
		if !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: %s, want %q", tc.args, r.err, tc.want)
		}
	}
	if n := h.objectCount(names.FilesBucket) + h.objectCount(names.BinariesBucket); n != 0 {
		t.Errorf("%d objects uploaded", n)
	}
}

// stdinWaiting is a stdin that never ends, like a terminal waiting for
// Ctrl-D; reading says that ctl waits for the value.
type stdinWaiting struct {
	reading chan struct{}
	once    sync.Once
	block   chan struct{}
}

func (s *stdinWaiting) Read([]byte) (int, error) {
	s.once.Do(func() { close(s.reading) })
	<-s.block
	return 0, io.EOF
}

// TestSecretSetInterrupted checks that Ctrl-C, which cancels ctl's
// context, stops secret set while it waits for the value on stdin, and
// stores nothing.
func TestSecretSetInterrupted(t *testing.T) {
	// Not parallel: Main runs in this process, and urfave/cli writes
	// package variables as it parses.
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	stdin := &stdinWaiting{reading: make(chan struct{}), block: make(chan struct{})}
	t.Cleanup(func() { close(stdin.block) })
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, cli.IO{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard},
			[]string{"ctl", "--config", h.config, "--nats-url", h.url, "--key-file", key, "secret", "set", "db"})
	}()
	select {
	case <-stdin.reading:
	case err := <-done:
		t.Fatalf("secret set ended before reading stdin: %v", err)
	}
	interrupt()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("interrupted secret set: %v, want context canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("secret set still waits for stdin after Ctrl-C")
	}
	if _, ok := h.get(names.SecretsBucket, "db"); ok {
		t.Error("an interrupted secret set stored a value")
	}
}

// TestSecretListJSONTime checks that secret list --json gives a script the
// time a secret was set as the other lists do, RFC 3339 in UTC, and not the
// table's local minute without a zone.
func TestSecretListJSONTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	before := time.Now().UTC().Truncate(time.Second)
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	after := time.Now().UTC()
	r := h.ok("", "secret", "list", "--json")
	var rows []struct {
		Name    string `json:"name"`
		Updated string `json:"updated"`
	}
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("secret list --json: %v: %s", err, r.out)
	}
	got, err := time.Parse(time.RFC3339, rows[0].Updated)
	if err != nil {
		t.Fatalf("updated %q is not RFC 3339: %v", rows[0].Updated, err)
	}
	if _, off := got.Zone(); off != 0 || got.Before(before) || got.After(after) {
		t.Errorf("updated %s: want a UTC time between %s and %s", got, before, after)
	}
}

// TestSecretsWithoutKeyFile: every secret command that needs the key file
// says how to name it, with the usage exit code, as keygen does; also
// when NATS does not answer, since the command line is wrong either way.
func TestSecretsWithoutKeyFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	nowhere := "nats://" + testutil.FreeAddr(t)
	for _, args := range [][]string{{"secret", "keygen"}, {"secret", "set", "db"}, {"secret", "rotate"}} {
		for _, args := range [][]string{args, append([]string{"--nats-url", nowhere}, args...)} {
			r := h.fails(2, "value\n", args...)
			if !strings.Contains(r.err, "--key-file") {
				t.Errorf("%v: %q does not say how to name the key file", args, r.err)
			}
		}
	}
}

// --from-file "" (a script's variable that is unset) names no file: it is
// refused, not taken for stdin, which would store whatever the script's
// stdin holds.
func TestSecretSetFromEmptyFileName(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/K"
	h.ok("", "--key-file", key, "secret", "keygen")
	r := h.fails(2, "from stdin\n", "--key-file", key, "secret", "set", "db", "--from-file", "")
	if want := "--from-file is empty: name the file that holds the value"; !strings.Contains(r.err, want) {
		t.Errorf("secret set --from-file \"\": %q, want %q", r.err, want)
	}
	if out := h.ok("", "--key-file", key, "secret", "list").out; strings.Contains(out, "db") {
		t.Errorf("a secret was stored:\n%s", out)
	}
}

// NAME=VALUE, as env files write it, puts the value on the command line:
// the error says so without writing the value again, into a CI log.
func TestSecretSetNameWithValueNotRepeated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/K"
	h.ok("", "--key-file", key, "secret", "keygen")
	r := h.fails(2, "", "--key-file", key, "secret", "set", "db=hunter2")
	if strings.Contains(r.err+r.out, "hunter2") || !strings.Contains(r.err, "stdin") {
		t.Errorf("secret set db=hunter2: %q, want an error that says to pipe the value, without it", r.err)
	}
}

// The rotation steps that secret rotate --help lists work as written,
// with K standing for the key file: an operator copies them.
func TestSecretRotateHelpStepsRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/K"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("value\n", "--key-file", key, "secret", "set", "db")
	help := h.ok("", "secret", "rotate", "--help").out
	// Steps 1 and 3 are commands, their words up to the prose after them.
	steps := regexp.MustCompile(`[13]\) narun ctl ((?:(?:secret|keygen|rotate|--add|--key-file|K)\b ?)+)`).FindAllStringSubmatch(strings.Join(strings.Fields(help), " "), -1)
	if len(steps) != 2 {
		t.Fatalf("steps 1 and 3 not found in the help:\n%s", help)
	}
	for _, step := range steps {
		args := strings.Fields(step[1])
		for i, a := range args {
			if a == "K" {
				args[i] = key
			}
		}
		if r := h.run("", args...); r.code != 0 {
			t.Errorf("help step %q: exit %d: %s", step[1], r.code, r.err)
		}
	}
}

// secret set drops one line ending from stdin, as a shell's echo or a
// Windows editor leaves it, and nothing else: a lone "\r" is the value's.
func TestSecretSetDropsOneLineEnding(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct{ in, want string }{
		{"v\n", "v"},
		{"v\r\n", "v"},
		{"v\r", "v\r"},
		{"v\n\n", "v\n"},
		{"v", "v"},
	} {
		name := fmt.Sprintf("s%d", i)
		h.ok(tc.in, "--key-file", key, "secret", "set", name)
		got, err := openSecret(context.Background(), h.kv(names.SecretsBucket), ring, name)
		if err != nil || string(got) != tc.want {
			t.Errorf("stdin %q stored %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	h.fails(1, "", "--key-file", key, "secret", "keygen")

	const value = "s3cr3t-value-do-not-print"
	r := h.fails(2, "", "--key-file", key, "secret", "set", "db", value)
	if strings.Contains(r.err, value) || strings.Contains(r.out, value) {
		t.Error("refusal echoed the value")
	}
	if _, ok := h.get(names.SecretsBucket, "db"); ok {
		t.Fatal("value from argv stored")
	}
	r = h.ok(value+"\n", "--log-level", "debug", "--key-file", key, "secret", "set", "db")
	r2 := h.ok("", "--key-file", key, "secret", "list", "--json")
	for _, res := range []result{r, r2} {
		if strings.Contains(res.out+res.err, value) {
			t.Fatalf("secret value in output: %s %s", res.out, res.err)
		}
	}
	raw, ok := h.get(names.SecretsBucket, "db")
	if !ok || strings.Contains(string(raw), value) {
		t.Fatalf("stored form: %q", raw)
	}
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openSecret(context.Background(), h.kv(names.SecretsBucket), ring, "db")
	if err != nil || string(got) != value {
		t.Fatalf("node-side decrypt: %q %v", got, err)
	}

	// Rotation: a new first key, re-encrypt, then the new key alone opens it.
	oldID := ring.PrimaryID()
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	r = h.ok("", "--key-file", key, "secret", "rotate")
	if !strings.Contains(r.out, "1 secret(s) re-encrypted") {
		t.Errorf("rotate: %s", r.out)
	}
	both, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	if both.PrimaryID() == oldID || len(both.IDs()) != 2 {
		t.Fatalf("key ids after --add: %v", both.IDs())
	}
	data, _ := os.ReadFile(key)
	newOnly, err := secrets.ParseRing([]byte(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	got, err = openSecret(context.Background(), h.kv(names.SecretsBucket), newOnly, "db")
	if err != nil || string(got) != value {
		t.Fatalf("after rotation: %q %v", got, err)
	}

	// In use: refused unless forced; unknown: not found.
	// The spec uses the secret twice, as env and as file: one user.
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n[[secrets]]\nname = \"db\"\nfile = \"db.txt\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	r = h.fails(ExitInUse, "", "secret", "delete", "db")
	if !strings.Contains(r.err, "is used by app;") {
		t.Errorf("secret delete of a secret in use: %s", r.err)
	}
	r = h.ok("", "secret", "list")
	if !strings.Contains(r.out, " app\n") {
		t.Errorf("secret list names its user once: %s", r.out)
	}
	h.fails(ExitNotFound, "", "secret", "delete", "nope")
	h.ok("", "secret", "delete", "db", "--force")
	if _, ok := h.get(names.SecretsBucket, "db"); ok {
		t.Error("secret still stored")
	}
	// A restart would start instances that cannot get the secret.
	stored, _ := h.get(names.AppsBucket, "app")
	r = h.fails(1, "", "app", "restart", "app")
	if !strings.Contains(r.err, `secret "db" does not exist`) || strings.Count(r.err, "does not exist") != 1 {
		t.Errorf("restart without its secret: %s", r.err)
	}
	if now, _ := h.get(names.AppsBucket, "app"); string(now) != string(stored) {
		t.Error("refused restart changed the stored spec")
	}
}

// logs -f whose server goes away says so and fails: exit 0 would tell a
// script that the output ended.
func TestLogsFollowLosesNATS(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	stream, err := store.LogsStream(ctx, h.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	done := make(chan result, 1)
	go func() { done <- h.run("", "logs", "-f", "hello") }()
	testutil.Eventually(t, 20*time.Second, "logs -f following", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Consumers > 0
	})
	h.srv.Shutdown()
	r := <-done
	// Which one depends on whether nats.go noticed the closed connection
	// before JetStream's silence timed the follow out.
	if r.code == 0 || !strings.Contains(r.err, "lost the connection to NATS") && !strings.Contains(r.err, "NATS stopped answering") {
		t.Errorf("logs -f after the server went away: exit %d, %s", r.code, r.err)
	}
}

// logs --since counts back from the NATS server's clock, which stamped
// the lines, not from this machine's: a laptop an hour ahead asked for
// lines from the future, and a --since 10m got none of the last minute.
func TestLogsSinceOnServerClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	stream, err := store.LogsStream(ctx, h.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(state.LogLine{App: "hello", Node: "n1", Instance: "hello-0", Stream: "stdout", Line: "just now", Time: time.Now()})
	if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
		t.Fatal(err)
	}
	for _, ahead := range []time.Duration{time.Hour, -time.Hour, 0} {
		e := h.env(io.Discard)
		e.now = func() time.Time { return time.Now().Add(ahead) }
		cons, err := e.logsConsumer(ctx, stream, names.LogSubject("hello", "*", "*"), 10*time.Minute, -1)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending != 1 {
			t.Errorf("clock %s ahead: --since 10m has %d lines pending, want the one stored just now", ahead, info.NumPending)
		}
	}
}

// The runner's lines about an instance's output (lines it dropped) are
// told apart from the app's, which may print the same words.
func TestLogsTellTheRunnersLinesApart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	const text = "narun: 5 lines of this instance were dropped"
	for _, stream := range []string{state.Stdout, state.Narun} {
		b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "n1", Instance: "hello-0", Stream: stream, Line: text})
		if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
			t.Fatal(err)
		}
	}
	out := strings.Split(strings.TrimSpace(h.ok("", "logs", "hello").out), "\n")
	if len(out) != 2 || !strings.HasSuffix(out[0], " n1/hello-0 "+text) || !strings.HasSuffix(out[1], " narun@n1/hello-0 "+text) {
		t.Errorf("logs: %q, want the app's line, then the runner's marked narun@", out)
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	lines := []state.LogLine{
		{App: "hello", Node: "n1", Instance: "hello-0", Stream: "stdout", Line: "first"},
		{App: "hello", Node: "n2", Instance: "hello-0", Stream: "stdout", Line: "second"},
		{App: "other", Node: "n1", Instance: "other-0", Stream: "stdout", Line: "unrelated"},
		{App: "hello", Node: "n1", Instance: "hello-1", Stream: "stderr", Line: "third"},
	}
	for _, l := range lines {
		l.Time = time.Now()
		b, _ := json.Marshal(l)
		if _, err := h.js.Publish(ctx, names.LogSubject(l.App, l.Node, l.Instance), b); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"hello"}, []string{"first", "second", "third"}},
		{[]string{"--node", "n1", "hello"}, []string{"first", "third"}},
		{[]string{"hello", "--instance", "hello-1"}, []string{"third"}},
		{[]string{"--since", "10m", "other"}, []string{"unrelated"}},
	}
	for _, tc := range tests {
		r := h.ok("", append([]string{"logs"}, tc.args...)...)
		out := strings.Split(strings.TrimSpace(r.out), "\n")
		if len(out) != len(tc.want) {
			t.Errorf("logs %v: %q", tc.args, r.out)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasSuffix(out[i], " "+w) {
				t.Errorf("logs %v line %d: %q, want %q", tc.args, i, out[i], w)
			}
		}
	}
	h.fails(2, "", "logs", "bad.app")

	// No lines: fine for a deployed app, a probable typo for any other.
	r := h.fails(ExitNotFound, "", "logs", "helo")
	if !strings.Contains(r.err, `app "helo" is not deployed`) {
		t.Errorf("logs of an unknown app: %s", r.err)
	}
	h.ok("", "deploy", h.file("quiet.toml", strings.Replace(helloSpec, `name = "hello"`, `name = "quiet"`, 1)), "--binary", elfBinary(t))
	if r := h.ok("", "logs", "quiet"); r.out != "" {
		t.Errorf("logs of a deployed app with no lines: %q", r.out)
	}
}

// --tail prints the last lines of those selected, as journalctl -n and
// kubectl logs --tail do: without it, logs -f prints every kept line,
// up to the stream's 256 MiB, before the new ones.
func TestLogsTail(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	publish := func(app, node, line string) {
		b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: app, Node: node, Instance: "0-abc", Line: line})
		if _, err := h.js.Publish(ctx, names.LogSubject(app, node, "0-abc"), b); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		publish("hello", []string{"n1", "n2"}[i%2], fmt.Sprint("line ", i))
		publish("other", "n1", fmt.Sprint("other ", i))
	}
	lines := func(from, to, step int) []string {
		var out []string
		for i := from; i < to; i += step {
			out = append(out, fmt.Sprint("line ", i))
		}
		return out
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--tail", "3", "hello"}, lines(37, 40, 1)},
		{[]string{"-n", "1", "hello"}, lines(39, 40, 1)},
		{[]string{"--tail", "2", "--node", "n1", "hello"}, lines(36, 40, 2)},
		{[]string{"--tail", "40", "hello"}, lines(0, 40, 1)},
		{[]string{"--tail", "100", "hello"}, lines(0, 40, 1)},
		{[]string{"--tail", "5", "--since", "10m", "hello"}, lines(35, 40, 1)},
		{[]string{"--tail", "0", "hello"}, nil},
	}
	for _, tc := range tests {
		r := h.ok("", append([]string{"logs"}, tc.args...)...)
		var got []string
		for l := range strings.Lines(r.out) {
			got = append(got, l[strings.Index(l, " line ")+1:len(l)-1])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("logs %v: %q, want %q", tc.args, got, tc.want)
		}
	}
	h.fails(2, "", "logs", "--tail", "-1", "hello")
	if n := logsConsumers(t, h)(); n != 0 {
		t.Errorf("%d consumers left after logs --tail", n)
	}
}

func TestNodeList(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "edge-7", Version: "v1", Arch: "arm64", Labels: map[string]string{"role": "edge"}})
	r := h.ok("", "node", "list")
	if !strings.Contains(r.out, "edge-7") || !strings.Contains(r.out, "linux/arm64") || !strings.Contains(r.out, "role=edge") {
		t.Errorf("node list: %s", r.out)
	}
	r = h.ok("", "node", "list", "--json")
	var nodes []state.Node
	if err := json.Unmarshal([]byte(r.out), &nodes); err != nil || len(nodes) != 1 || nodes[0].ID != "edge-7" {
		t.Errorf("node list --json: %s (%v)", r.out, err)
	}
}

// TestTablesEscapeControlCharacters checks that what any NATS client can
// write, a heartbeat here, reaches a table escaped: an app could otherwise
// rewrite the operator's screen or forge the columns of another node.
func TestTablesEscapeControlCharacters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "edge-7", Version: "v1\x1b]0;pwned\x07\r", Arch: "arm64", Labels: map[string]string{"role": "edge\tNODE"}})
	r := h.ok("", "node", "list")
	if strings.ContainsAny(r.out, "\x1b\x07\r") || !strings.Contains(r.out, `v1\x1b]0;pwned\x07\x0d`) || !strings.Contains(r.out, `role=edge\x09NODE`) {
		t.Errorf("node list: %q", r.out)
	}
}

func TestUsageAndUnreachable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fails(2, "", "app", "status", "--bogus", "x")
	h.fails(2, "", "bogus")
	h.fails(2, "", "app", "bogus")
	h.url = "nats://127.0.0.1:1"
	r := h.fails(1, "", "app", "list")
	if !strings.Contains(r.err, "connect to NATS") {
		t.Errorf("error: %s", r.err)
	}
}

// A command group run without a subcommand is a usage error, as a
// mistyped one is: a script must not go on after a help text and exit 0.
// Asked for, the help is shown and succeeds.
func TestGroupWithoutCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	groups := map[string][]string{}
	for _, c := range newApp(cliIO(), "ctl").Commands {
		if len(c.Subcommands) > 0 {
			groups[c.Name] = []string{c.Name}
		}
	}
	groups["ctl"] = nil
	for name, args := range groups {
		r := h.fails(2, "", args...)
		if r.out != "" || !strings.Contains(r.err, "missing command") {
			t.Errorf("%s without a command: stdout %q, error %q; want only a usage error", name, r.out, r.err)
		}
	}
	if len(groups) < 8 {
		t.Errorf("only %d command groups found: %v", len(groups), groups)
	}
	r := h.fails(2, "", "app", "lst")
	if !strings.Contains(r.err, `unknown command "lst" after app: want one of list, status, events, delete, restart`) {
		t.Errorf("app lst: %s", r.err)
	}
	for _, help := range [][]string{{"app", "--help"}, {"secret", "-h"}, {"--help"}, {"help", "node"}} {
		if r := h.ok("", help...); !strings.Contains(r.out, "USAGE:") {
			t.Errorf("%v: %s", help, r.out)
		}
	}
}

// A write the server refuses says "nats: " once, though nats.go doubles
// it, and says what was being written.
func TestRefusedWriteSaysNATSOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// An operator limited the bucket's values; ctl opens it as it is.
	if _, err := h.js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: names.SecretsBucket, MaxValueSize: 16}); err != nil {
		t.Fatal(err)
	}
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	r := h.fails(1, "a value longer than the bucket takes\n", "--key-file", key, "secret", "set", "db")
	if strings.Count(r.err, "nats:") != 1 || !strings.Contains(r.err, "db") || !strings.Contains(r.err, "maximum") {
		t.Errorf("error of a refused write: %s", r.err)
	}
}

// Under --log-format json (or log_format in the file) an error is a JSON
// log line, as in the other applets, and the output is what it was.
// TestLogsEscapeControlCharacters checks that an app cannot act on the
// terminal of whoever reads its lines: a carriage return that would print
// over the time and instance, escape sequences (here: the window title,
// the clipboard, erasing the line), C1 controls and bytes that are not
// UTF-8 are shown escaped, tabs and other text as they are, and --json
// gives the line exact.
func TestLogsEscapeControlCharacters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	line := "ok\tdone\rn9/forged \x1b]0;title\x07\x1b]52;c;cHduZWQ=\x07\x1b[2K\u009b31m\xffé→"
	b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "n1", Instance: "hello-0", Stream: "stdout", Line: line})
	if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
		t.Fatal(err)
	}
	// Not from a runner, so not JSON: the bytes as published.
	if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-1"), []byte("raw\xff\x1b[2J")); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "logs", "hello")
	out := strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
	// JSON carries a byte that is not UTF-8 as U+FFFD.
	want := []string{
		` n1/hello-0 ok` + "\t" + `done\x0dn9/forged \x1b]0;title\x07\x1b]52;c;cHduZWQ=\x07\x1b[2K\xc2\x9b31m` + "\ufffdé→",
		` n1/hello-1 raw\xff\x1b[2J`,
	}
	if len(out) != len(want) {
		t.Fatalf("logs printed %q, want %d lines", r.out, len(want))
	}
	for i := range want {
		if !strings.HasSuffix(out[i], want[i]) {
			t.Errorf("logs printed %q, want it to end with %q", out[i], want[i])
		}
	}
	r = h.ok("", "logs", "--json", "--instance", "hello-0", "hello")
	var got state.LogLine
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || got.Line != strings.ToValidUTF8(line, "\ufffd") {
		t.Errorf("logs --json: %q (%v), want the line %q", r.out, err, line)
	}
}

func TestErrorsFollowTheLogFormat(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH})
	jsonFile := h.file("json.toml", "log_format = \"json\"\n[ctl]\ntimeout = \"5s\"\n")
	run := func(args ...string) (stdout, stderr string, err error) {
		var out, errb bytes.Buffer
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		err = Main(context.Background(), stdio, append([]string{"narun ctl"}, args...))
		return out.String(), errb.String(), err
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--log-format", "json", "--config", h.config, "--nats-url", "nats://127.0.0.1:1", "node", "list"}, 1, "connect to NATS"},
		{[]string{"--config", jsonFile, "--nats-url", "nats://127.0.0.1:1", "app", "list"}, 1, "connect to NATS"},
		{[]string{"app", "--log-format=json", "--bogus"}, 2, "bogus"},
		{[]string{"--log-format", "json", "app"}, 2, "missing command"},
	} {
		_, stderr, err := run(tc.args...)
		if cli.ExitCode(err) != tc.code || !cli.IsLogged(err) {
			t.Errorf("%v: exit %d, logged %v; want %d, logged", tc.args, cli.ExitCode(err), cli.IsLogged(err), tc.code)
		}
		var rec struct{ Level, Err string }
		if json.Unmarshal([]byte(stderr), &rec) != nil || strings.Count(stderr, "\n") != 1 || rec.Level != "ERROR" || !strings.Contains(rec.Err, tc.want) {
			t.Errorf("%v: stderr %q; want one JSON ERROR line naming %q", tc.args, stderr, tc.want)
		}
	}
	stdout, stderr, err := run("--log-format", "json", "--config", h.config, "--nats-url", h.url, "node", "list", "--json")
	var nodes []state.Node
	if err != nil || stderr != "" || json.Unmarshal([]byte(stdout), &nodes) != nil || len(nodes) != 1 {
		t.Errorf("node list --json under --log-format json: %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	if _, _, err := run("--config", h.config, "--nats-url", "nats://127.0.0.1:1", "node", "list"); cli.IsLogged(err) {
		t.Error("an error in text logs was logged instead of returned for the dispatcher to print")
	}
}

func TestReorder(t *testing.T) {
	t.Parallel()
	app := newApp(cliIO(), "ctl")
	tests := []struct{ in, want string }{
		{"ctl app status hello --json", "ctl app status --json hello"},
		{"ctl deploy a.toml --binary x --binary y --wait", "ctl deploy --binary x --binary y --wait a.toml"},
		{"ctl app list --nats-url nats://x:1", "ctl --nats-url nats://x:1 app list"},
		{"ctl deploy a.toml --timeout 1m --wait", "ctl deploy --timeout 1m --wait a.toml"},
		{"ctl app list --timeout 1m", "ctl --timeout 1m app list"},
		{"ctl logs -f hello --since=10m", "ctl logs -f --since=10m hello"},
		{"ctl secret set db -- --weird", "ctl secret set -- db --weird"},
		{"ctl app status --generate-bash-completion", "ctl app status --generate-bash-completion"},
	}
	for _, tc := range tests {
		got := strings.Join(reorder(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("reorder(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLogsFollow(t *testing.T) {
	h := newHarness(t)
	f := h.follow(h.url, "logs", "-f", "hello")
	publish := func(line string) {
		b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "n1", Instance: "hello-0", Line: line})
		if _, err := h.js.Publish(context.Background(), names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
			t.Fatal(err)
		}
	}
	// The stream may not exist until ctl creates it.
	testutil.Eventually(t, 10*time.Second, "logs stream", func() bool {
		_, err := h.js.Stream(context.Background(), names.LogsStream)
		return err == nil
	})
	publish("one")
	testutil.Eventually(t, 10*time.Second, "first line", func() bool { return strings.Contains(f.out.String(), " one\n") })
	publish("two")
	testutil.Eventually(t, 10*time.Second, "second line", func() bool { return strings.Contains(f.out.String(), " two\n") })
	f.stop(t)
}

// logs -f --tail N prints the last N lines, then the new ones.
func TestLogsFollowTail(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	publish := func(line string) {
		b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "n1", Instance: "hello-0", Line: line})
		if _, err := h.js.Publish(context.Background(), names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"one", "two", "three"} {
		publish(l)
	}
	f := h.follow(h.url, "logs", "-f", "--tail", "1", "hello")
	testutil.Eventually(t, 10*time.Second, "the last kept line", func() bool { return strings.Contains(f.out.String(), " three\n") })
	publish("four")
	testutil.Eventually(t, 10*time.Second, "a new line", func() bool { return strings.Contains(f.out.String(), " four\n") })
	f.stop(t)
	if got := f.out.String(); strings.Contains(got, " one\n") || strings.Contains(got, " two\n") {
		t.Errorf("logs -f --tail 1 printed older lines:\n%s", got)
	}
}

// logs reads through an ephemeral consumer, which the server would keep for
// minutes after ctl is gone: a script that runs logs every few seconds
// would pile them up. Both a read and a follow delete theirs on the way out.
func TestLogsLeaveNoConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	consumers := logsConsumers(t, h)
	b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "hello", Node: "n1", Instance: "hello-0", Line: "one"})
	if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
		t.Fatal(err)
	}
	h.ok("", "logs", "hello")
	if n := consumers(); n != 0 {
		t.Errorf("after logs: %d consumers left on %s", n, names.LogsStream)
	}

	f := h.follow(h.url, "logs", "-f", "hello")
	testutil.Eventually(t, 10*time.Second, "logs -f following", func() bool { return strings.Contains(f.out.String(), " one\n") })
	f.stop(t)
	if n := consumers(); n != 0 {
		t.Errorf("after logs -f: %d consumers left on %s", n, names.LogsStream)
	}
}

// A logs -f killed outright cannot delete its consumer: the server must
// forget it soon, not after nats.go's default of five minutes.
func TestKilledFollowLeavesNoConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	consumers := logsConsumers(t, h)
	kctx, kill := context.WithCancel(ctx)
	defer kill()
	cmd := exec.CommandContext(kctx, os.Args[0], "ctl", "--config", h.config, "--nats-url", h.url, "logs", "-f", "hello")
	cmd.Env = []string{asProcess + "=1", quickExit}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "logs -f reading through a consumer", func() bool { return consumers() == 1 })
	kill()
	if err := cmd.Wait(); err == nil {
		t.Fatal("logs -f was not killed")
	}
	testutil.Eventually(t, 6*consumerIdle, "the killed follow's consumer gone", func() bool { return consumers() == 0 })
}

// logsConsumers opens NARUN_LOGS and returns a count of its consumers.
func logsConsumers(t *testing.T, h *harness) func() int {
	t.Helper()
	ctx := context.Background()
	stream, err := store.LogsStream(ctx, h.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() int {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
}

// following is a run of a ctl command that follows (logs -f, app
// events) under way, and what it printed.
type following struct {
	out, errs testutil.LogBuffer
	cmd       *exec.Cmd
	done      chan error
}

// follow starts ctl with args, a command that follows, against the server
// at url, as a process of its own, as run does: in-process runs could not
// overlap.
func (h *harness) follow(url string, args ...string) *following {
	h.t.Helper()
	f := &following{done: make(chan error, 1)}
	f.cmd = exec.Command(os.Args[0], append([]string{"ctl", "--config", h.config, "--nats-url", url}, args...)...)
	f.cmd.Env = []string{asProcess + "=1", quickExit}
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.errs
	if err := f.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	// A test that failed before stop leaves none running.
	h.t.Cleanup(func() { _ = f.cmd.Process.Kill() })
	return f
}

// stop interrupts the run, as Ctrl-C does, and waits for it to end
// cleanly.
func (f *following) stop(t *testing.T) {
	t.Helper()
	if err := f.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("ctl %q ended with %v; stderr:\n%s", f.cmd.Args[6:], err, f.errs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ctl %q did not stop when interrupted", f.cmd.Args[6:])
	}
}

// logs -f of an app that is neither deployed nor has kept lines waits for
// its first line (a deploy about to start), but says so on stderr: a typo
// in the name must not look like an app that prints nothing.
func TestLogsFollowUnknownAppWarns(t *testing.T) {
	h := newHarness(t)
	f := h.follow(h.url, "logs", "-f", "helo")
	testutil.Eventually(t, 10*time.Second, "a warning", func() bool {
		return strings.Contains(f.errs.String(), `app "helo" is not deployed and has no kept log lines`)
	})
	f.stop(t)
}

// A deleted app whose kept lines --since, --node or --instance all leave
// out is no typo of the app: logs prints no line, says on stderr that none
// is kept with those filters, and exits 0, and logs -f waits for its lines,
// as for a deployed app. A --node or --instance that
// none of its lines came from is named in a warning
// (TestLogsUnmatchedNodeOrInstance), not taken for an app that is gone.
func TestLogsOfDeletedAppSelectingNoneOfItsLines(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := store.LogsStream(ctx, h.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	subject := names.LogSubject("gone", "n1", "gone-0")
	b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "gone", Node: "n1", Instance: "gone-0", Stream: state.Stdout, Line: "hello"})
	if _, err := h.js.Publish(ctx, subject, b); err != nil {
		t.Fatal(err)
	}
	if r := h.ok("", "logs", "gone"); !strings.HasSuffix(strings.TrimSpace(r.out), " hello") {
		t.Fatalf("logs of a deleted app: %q", r.out)
	}
	// --since counts back on the server's clock, which stamped the line:
	// once that clock is a second past it, the last half second holds
	// none of it, whatever the time a request takes.
	kept, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the server's clock a second past the line", func() bool {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.TimeStamp.Sub(kept.Time) > time.Second
	})
	for _, c := range []struct {
		args []string
		warn string
	}{
		{[]string{"--since", "500ms"}, "no kept log lines of gone newer than 500ms\n"},
		{[]string{"--node", "n2"}, "warning: no kept line of gone is from node \"n2\" (nodes with lines: \"n1\")\n"},
		{[]string{"--instance", "gone-1"}, "warning: no kept line of gone is from instance \"gone-1\" (instances with lines: \"gone-0\")\n"},
	} {
		if r := h.ok("", append([]string{"logs", "gone"}, c.args...)...); r.out != "" || r.err != c.warn {
			t.Errorf("logs gone %v: stdout %q, stderr %q; want none, and %q", c.args, r.out, r.err, c.warn)
		}
	}

	f := h.follow(h.url, "logs", "-f", "--since", "500ms", "gone")
	// Its pull request waiting on the consumer: logs -f has said what it
	// had to say of the app before it asked for lines.
	testutil.Eventually(t, 10*time.Second, "logs -f waiting for lines", func() bool {
		for c := range stream.ListConsumers(ctx).Info() {
			if c.NumWaiting > 0 {
				return true
			}
		}
		return false
	})
	f.stop(t)
	if want := "no kept log lines of gone newer than 500ms; waiting for new ones\n"; f.errs.String() != want {
		t.Errorf("logs -f of a deleted app with kept lines: %q, want %q", f.errs.String(), want)
	}
}

// tinyBinary cross-compiles a do-nothing linux program for goarch.
func tinyBinary(t *testing.T, goarch string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/main.go", []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/go.mod", []byte("module tiny\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := dir + "/tiny-" + goarch
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build linux/%s: %v\n%s", goarch, err, b)
	}
	return out
}

func TestDeployMultiArch(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("cross-compiles")
	}
	h := newHarness(t)
	arm, riscv := tinyBinary(t, "arm64"), tinyBinary(t, "riscv64")
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", arm, "--binary", riscv)
	app := h.storedApp("hello")
	if len(app.Binaries) != 2 || !strings.HasPrefix(app.Binaries["arm64"].Object, "hello/1.0.0/linux-arm64-") || !strings.HasPrefix(app.Binaries["riscv64"].Object, "hello/1.0.0/linux-riscv64-") {
		t.Fatalf("binaries: %+v", app.Binaries)
	}
	r := h.ok("", "image", "list")
	for _, want := range []string{"linux-arm64", "linux-riscv64", "arm64", "riscv64"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("image list lacks %s:\n%s", want, r.out)
		}
	}
}

// A deploy that uploads a new binary of the same version and then fails
// to store its spec must leave the deployed spec runnable: the object it
// pins still holds the digest it pins.
func TestFailedDeployKeepsPinnedBinary(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	stored, _ := h.get(names.AppsBucket, "hello")

	// Another build of the same version: the same ELF with a byte more.
	built, err := os.ReadFile(elfBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := h.file("hello-rebuilt", string(append(built, 0)))
	// The server refuses the next spec, which is longer than the first:
	// the deploy fails after its upload, as when it loses a race.
	stream, err := h.js.Stream(context.Background(), "KV_"+names.AppsBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgSize = int32(len(stored) + 100)
	if _, err := h.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	h.file("hello.toml", helloSpec+"# "+strings.Repeat("x", 200)+"\n")
	h.fails(1, "", "deploy", p, "--binary", rebuilt)

	now, _ := h.get(names.AppsBucket, "hello")
	if !bytes.Equal(now, stored) {
		t.Fatalf("failed deploy changed the stored spec:\n%s", now)
	}
	app, err := spec.Parse("stored", now)
	if err != nil {
		t.Fatal(err)
	}
	pinned, _ := app.Binary(runtime.GOARCH)
	obs, err := h.js.ObjectStore(context.Background(), names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(context.Background(), pinned.Object)
	if err != nil {
		t.Fatalf("pinned object %s: %v", pinned.Object, err)
	}
	if got := store.DigestHex(info); got != pinned.SHA256 {
		t.Errorf("pinned object %s now holds sha256 %s, the stored spec pins %s", pinned.Object, got, pinned.SHA256)
	}
}

// Redeploying a version with another build stores a new object and keeps
// the one it replaces while a kept revision pins it, so that a rollback
// can restore that revision; once the revision has left the history, the
// next deploy of the app deletes it, whatever its version.
func TestRedeployPrunesSupersededBuild(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Only the pins decide here: no build is spared for its age.
	h.pruneGrace("0s")
	p := h.file("hello.toml", helloSpec)
	built, err := os.ReadFile(elfBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	build := func(i int) string {
		return h.file(fmt.Sprintf("hello-%d", i), string(append(built, bytes.Repeat([]byte{0}, i)...)))
	}
	for i := range 3 {
		h.ok("", "deploy", p, "--binary", build(i))
		if n := h.objectCount(names.BinariesBucket); n != i+1 {
			t.Fatalf("after build %d of 1.0.0: %d objects, want %d: the kept revisions pin them", i, n, i+1)
		}
	}
	h.ok("", "app", "rollback", "hello")
	raw, _ := h.get(names.AppsBucket, "hello")
	app, err := spec.Parse("hello", raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := app.Binaries[runtime.GOARCH].SHA256, fmt.Sprintf("%x", sha256.Sum256(append(built, 0))); got != want {
		t.Fatalf("rollback over a redeploy of the same version pins sha256 %s, want build 1's %s", got, want)
	}

	// Restarts fill the history (10 revisions) until only build 1's
	// revisions are left in it, then a new build of 1.0.0 comes.
	for range 10 {
		h.ok("", "app", "restart", "hello")
	}
	h.ok("", "deploy", p, "--binary", build(3))
	if n := h.objectCount(names.BinariesBucket); n != 2 {
		t.Fatalf("after build 3 of 1.0.0: %d objects, want 2 (build 3, and build 1 which the history pins)", n)
	}

	h.file("hello.toml", strings.Replace(helloSpec, `version = "1.0.0"`, `version = "1.0.1"`, 1))
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	if n := h.objectCount(names.BinariesBucket); n != 3 {
		t.Errorf("after 1.0.1: %d objects, want 1.0.0's two kept beside it while revisions pin them", n)
	}

	// Once 1.0.0's revisions have left the history too, the next version's
	// deploy deletes its builds, and leaves nothing of them in the stream.
	for range 10 {
		h.ok("", "app", "restart", "hello")
	}
	h.file("hello.toml", strings.Replace(helloSpec, `version = "1.0.0"`, `version = "1.0.2"`, 1))
	h.ok("", "deploy", p, "--binary", build(4))
	if n := h.objectCount(names.BinariesBucket); n != 2 {
		t.Errorf("after 1.0.2: %d objects, want 2 (1.0.2, and 1.0.1 which the history pins)", n)
	}
	s, err := h.js.Stream(context.Background(), "OBJ_"+names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter("$O."+names.BinariesBucket+".M.>"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 2 {
		t.Errorf("after 1.0.2: metadata of %d objects in the stream, want that of the 2 kept: %v", len(info.State.Subjects), info.State.Subjects)
	}
}

// An app deleted and deployed again, as a new version each time, does not
// keep the builds of its earlier lives: the deploy after the delete prunes
// those that no kept revision pins, as any deploy does.
func TestDeployAfterDeletePrunes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Only the pins decide here: no build is spared for its age.
	h.pruneGrace("0s")
	p := h.file("hello.toml", helloSpec)
	built, err := os.ReadFile(elfBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	version := func(v string) {
		h.file("hello.toml", strings.Replace(helloSpec, `version = "1.0.0"`, `version = "`+v+`"`, 1))
	}
	h.ok("", "deploy", p, "--binary", h.file("hello-0", string(built)))
	version("1.0.1")
	h.ok("", "deploy", p, "--binary", h.file("hello-1", string(append(built, 1))))
	// 1.0.0's revision leaves the history.
	for range 10 {
		h.ok("", "app", "restart", "hello")
	}
	h.ok("", "app", "delete", "hello")
	version("1.0.2")
	h.ok("", "deploy", p, "--binary", h.file("hello-2", string(append(built, 2))))
	if n := h.objectCount(names.BinariesBucket); n != 2 {
		t.Errorf("deploy after app delete: %d objects, want 2 (1.0.2, and 1.0.1 which the history pins)", n)
	}
}

// A spec an older ctl stored pins an object named without its digest;
// deploying the same binary again keeps that object, and so the spec and
// every instance, unchanged.
func TestDeployKeepsObjectOfOlderCtl(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	obs, err := store.Objects(context.Background(), h.js, names.BinariesBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := "hello/1.0.0/linux-" + runtime.GOARCH
	info, err := obs.Put(context.Background(), jetstream.ObjectMeta{Name: old}, f)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := spec.WithBinaries("hello.toml", []byte(helloSpec), map[string]spec.Binary{runtime.GOARCH: {Object: old, SHA256: store.DigestHex(info)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.AppsBucket).Create(context.Background(), "hello", stored); err != nil {
		t.Fatal(err)
	}

	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", bin, "--dry-run", "--json")
	var plan deployResult
	if err := json.Unmarshal([]byte(r.out), &plan); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if len(plan.Binaries) != 1 || plan.Binaries[0].Object != old {
		t.Errorf("dry run plans %+v, want the object %s the deploy keeps", plan.Binaries, old)
	}
	r = h.ok("", "deploy", p, "--binary", bin)
	if !strings.Contains(r.out, "unchanged") {
		t.Errorf("redeploy of the same binary: %s", r.out)
	}
	if n := h.objectCount(names.BinariesBucket); n != 1 {
		t.Errorf("%d objects, want the one the older ctl uploaded", n)
	}
}

// Deploying the operator's unchanged file after app restart keeps the
// restart's restarted_at: nothing changes, nothing restarts.
func TestDeployAfterRestartUnchanged(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	h.ok("", "deploy", p, "--binary", bin)
	h.ok("", "app", "restart", "hello")
	restarted, _ := h.get(names.AppsBucket, "hello")

	for _, args := range [][]string{{"deploy", p}, {"deploy", p, "--binary", bin}} {
		r := h.ok("", args...)
		if !strings.Contains(r.out, "hello 1.0.0: unchanged") {
			t.Errorf("%v after app restart: %s", args, r.out)
		}
		if now, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(now, restarted) {
			t.Errorf("%v after app restart changed the stored spec:\n%s\nwas:\n%s", args, now, restarted)
		}
	}

	// A new version starts afresh.
	h.file("hello.toml", strings.Replace(helloSpec, "1.0.0", "1.1.0", 1))
	h.ok("", "deploy", p, "--binary", bin)
	app := h.storedApp("hello")
	if app.RestartedAt != "" {
		t.Errorf("new version kept restarted_at %q", app.RestartedAt)
	}
}

// Arguments that cannot be right are usage errors that say the rule,
// before anything connects (the harness's server is not reachable here).
func TestBadArgumentsAreUsageErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	for _, args := range [][]string{
		{"app", "status", "a b"},
		{"app", "restart", "a.b"},
		{"app", "delete", "a*"},
		{"logs", "a b"},
	} {
		r := h.fails(2, "", args...)
		if !strings.Contains(r.err, `app name "`+args[len(args)-1]+`": may contain only letters, digits, '_' and '-'`) {
			t.Errorf("%v: %s", args, r.err)
		}
	}
	r := h.fails(2, "", "logs", "hello", "--since", "-5m")
	if !strings.Contains(r.err, "--since -5m0s: want how far back to start, a positive duration") {
		t.Errorf("logs --since -5m: %s", r.err)
	}
	content := h.file("conf", "x")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"secret", "set", "db", "s3cr3t"}, "secret set takes only NAME"},
		{[]string{"secret", "set", "a b"}, `secret name "a b"`},
		{[]string{"files", "put", "conf", content, "extra"}, "want NAME FILE, got 3 arguments"},
		{[]string{"files", "put", "../conf", content}, `file name "../conf"`},
		{[]string{"node", "list", "web"}, "node list takes no arguments, got 1"},
		{[]string{"app", "ls", "web"}, "takes no arguments, got 1"},
		{[]string{"secret", "rotate", "hunter2"}, "secret rotate takes no arguments, got 1"},
		{[]string{"image", "delete"}, "missing OBJECT"},
		{[]string{"app", "status"}, "missing NAME"},
		{[]string{"app", "restart", "a", "b"}, "want exactly one app name, got 2 arguments"},
		{[]string{"--timeout", "0", "app", "ls"}, "--timeout 0s: want a time to wait for each NATS operation, more than 0"},
		{[]string{"--timeout", "-1s", "app", "ls"}, "--timeout -1s: want"},
	} {
		r := h.fails(2, "", tc.args...)
		if !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: %s", tc.args, r.err)
		}
		if strings.Contains(r.err, "hunter2") {
			t.Errorf("%v: the error repeats the argument: %s", tc.args, r.err)
		}
	}
}

func TestShortDuration(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Minute, "0s"},
		{900 * time.Millisecond, "0s"},
		{45*time.Second + 300*time.Millisecond, "45s"},
		{time.Minute, "1m"},
		{time.Minute + 45*time.Second, "1m45s"},
		{2*time.Hour + 3*time.Minute + 59*time.Second, "2h3m"},
		{5 * time.Hour, "5h"},
		{3*24*time.Hour + 4*time.Hour + 30*time.Minute, "3d4h"},
		{400 * 24 * time.Hour, "400d"},
	} {
		if got := shortDuration(c.d); got != c.want {
			t.Errorf("shortDuration(%s) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := ago(time.Time{}, time.Now()); got != "-" {
		t.Errorf("ago(zero) = %q, want -", got)
	}
}

// A sealed secret is not signed: one left in the history of narun-secrets,
// which any app can read, and planted again would still open, handing the
// app the value the operator replaced. secret set and secret rotate keep
// only the value they store.
func TestSecretSetKeepsNoEarlierCiphertext(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("leaked\n", "--key-file", key, "secret", "set", "db")
	h.ok("fresh\n", "--key-file", key, "secret", "set", "db")
	ctx := context.Background()
	kv, err := h.js.KeyValue(ctx, names.SecretsBucket)
	if err != nil {
		t.Fatal(err)
	}
	history := func(when string) {
		t.Helper()
		revs, err := kv.History(ctx, "db")
		if err != nil {
			t.Fatalf("%s: history: %v", when, err)
		}
		if len(revs) != 1 {
			t.Errorf("%s: %d sealed values of db stored, want only the latest", when, len(revs))
		}
	}
	history("after secret set")
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	h.ok("", "--key-file", key, "secret", "rotate")
	history("after secret rotate")
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := openSecret(ctx, kv, ring, "db"); err != nil || string(v) != "fresh" {
		t.Errorf("db after rotate: %q, %v; want \"fresh\"", v, err)
	}

	// A release before this purge kept the history: a secret set twice
	// there is already under the primary key, and rotate purges it too.
	for _, v := range []string{"leaked", "fresh"} {
		if err := secrets.Put(ctx, kv, ring, "api", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	h.ok("", "--key-file", key, "secret", "rotate")
	revs, err := kv.History(ctx, "api")
	if err != nil || len(revs) != 1 {
		t.Errorf("after secret rotate: %d sealed values of api stored (%v), want only the latest", len(revs), err)
	}
}

// A secret rotate that re-encrypts every secret but cannot purge a
// secret's earlier values (a login without the right) says so, not that
// some secrets were left under the old key.
func TestSecretRotatePurgeFailure(t *testing.T) {
	t.Parallel()
	s := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{
		{User: "ctl", Password: "pw", Permissions: &embednats.Permissions{DenyPublish: []string{"$JS.API.STREAM.PURGE.>"}}}}})
	h := newHarness(t)
	h.url = "nats://ctl:pw@" + strings.TrimPrefix(s.ClientURL(), "nats://")
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	if r := h.run("value\n", "--key-file", key, "secret", "set", "db"); r.code != 1 || !strings.Contains(r.err, "secret db is stored, but its earlier sealed values were not purged") {
		t.Fatalf("secret set without the right to purge: exit %d, %q", r.code, r.err)
	}
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	r := h.run("", "--key-file", key, "secret", "rotate")
	if r.code != 1 || !strings.Contains(r.out, "re-encrypted db with key") || strings.Contains(r.err, "not all") ||
		!strings.Contains(r.err, "earlier sealed values were not purged") {
		t.Errorf("secret rotate without the right to purge: exit %d, stdout %q, stderr %q; want every secret re-encrypted and the purge named", r.code, r.out, r.err)
	}
}

// logs whose output cannot be written (a full disk, /dev/full) fails: a
// script saving an app's lines must not take the lines lost for all of
// them, as the other commands' output does not either.
func TestLogsToAFullDiskFails(t *testing.T) {
	t.Parallel()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"first", "second"} {
		b, _ := json.Marshal(state.LogLine{App: "hello", Node: "n1", Instance: "hello-0", Stream: "stdout", Line: text, Time: time.Now()})
		if _, err := h.js.Publish(ctx, names.LogSubject("hello", "n1", "hello-0"), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"logs", "hello"}, {"logs", "--json", "hello"}} {
		cmd := exec.Command(os.Args[0], append([]string{"ctl", "--config", h.config, "--nats-url", h.url}, args...)...)
		cmd.Env = []string{asProcess + "=1", quickExit}
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &errb
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(errb.String(), "no space left on device") {
			t.Errorf("ctl %v > /dev/full: %v, stderr %q; want exit 1 saying the output failed", args, err, errb.String())
		}
	}
}

// A node with nothing to run is listed with its lists as lists: a real
// runner's heartbeat holds no instance then, which --json printed as null.
func TestNodeListJSONListsAreLists(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	startRunner(t, h)
	var nodes []map[string]any
	testutil.Eventually(t, 20*time.Second, "node-1 in node list --json", func() bool {
		r := h.ok("", "node", "list", "--json")
		if err := json.Unmarshal([]byte(r.out), &nodes); err != nil {
			t.Fatalf("decode %q: %v", r.out, err)
		}
		return len(nodes) == 1
	})
	if in, ok := nodes[0]["instances"].([]any); !ok || len(in) != 0 {
		t.Errorf("instances of a node running nothing: %#v, want []", nodes[0]["instances"])
	}
	caps, _ := nodes[0]["capabilities"].(map[string]any)
	for _, k := range []string{"cgroup_controllers", "namespaces"} {
		if _, ok := caps[k].([]any); !ok {
			t.Errorf("capabilities.%s: %#v, want a list", k, caps[k])
		}
	}
}

// A deploy that keeps the deployed binaries uploads none: deploy --json
// says so with an empty list, as a script expects a list, not null.
func TestDeployJSONWithoutBinary(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	for _, args := range [][]string{{"deploy", p, "--json"}, {"deploy", p, "--json", "--dry-run"}} {
		r := h.ok("", args...)
		var res map[string]any
		if err := json.Unmarshal([]byte(r.out), &res); err != nil {
			t.Fatalf("%v: decode %q: %v", args, r.out, err)
		}
		if bins, ok := res["binaries"].([]any); !ok || len(bins) != 0 {
			t.Errorf("%v: binaries %#v, want []", args, res["binaries"])
		}
	}
}

// An app no node runs (labels no node has) is listed with "-" for its
// nodes, as every other empty cell: an empty one shifted the columns a
// reader (or awk) counts, and UPDATED read as NODES.
func TestAppListNoNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("edge.toml", "name = \"edge\"\nversion = \"1\"\nlabels = { role = \"edge\" }\n"), "--binary", elfBinary(t))
	r := h.ok("", "app", "list")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 {
		t.Fatalf("app list: %q", r.out)
	}
	head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(row) != len(head) || row[slices.Index(head, "NODES")] != "-" {
		t.Errorf("app list of an app on no node:\n%s", r.out)
	}
}

// A node that stopped sending heartbeats is not listed as running the
// instances it last reported: app status calls them unknown, and node
// list must not count them up beside its "late: down?".
func TestNodeListOfSilentNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Version: "v1", Arch: runtime.GOARCH, Interval: time.Nanosecond, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Healthy, PID: 42, Version: "1.0.0"},
		{App: "hello", Node: "node-1", ID: "hello-1", State: state.Running, PID: 43, Version: "1.0.0"},
	}})
	var r result
	testutil.Eventually(t, 20*time.Second, "node list to call the silent node late", func() bool {
		r = h.ok("", "node", "list")
		return strings.Contains(r.out, "(late: down?)")
	})
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if got := row[slices.Index(head, "INSTANCES")]; got != "?/2" {
		t.Errorf("instances of a silent node: %q, want ?/2\n%s", got, r.out)
	}
}

// The tables of stored things show their times alike, in local time as
// secret list does: image list and files list printed RFC 3339 in UTC,
// the form --json gives scripts.
func TestObjectListsShowLocalTimes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "app.conf", h.file("app.conf", "x"))
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	local := regexp.MustCompile(`  \d{4}-\d\d-\d\d \d\d:\d\d  `)
	for _, what := range []string{"files", "image"} {
		r := h.ok("", what, "list")
		if !local.MatchString(r.out) || strings.Contains(r.out, "Z ") {
			t.Errorf("%s list:\n%s", what, r.out)
		}
	}
}

// app status --json has every key SPEC lists in every state, so that a
// script reads the same object whatever the instances are doing: an
// instance not started yet had neither version nor started, and an app
// no node refused had no refused_nodes, where missing_nodes is [].
func TestAppStatusJSONKeysInEveryState(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Instances: []state.Instance{
		{App: "hello", Node: "node-1", ID: "hello-0", State: state.Pending},
	}})
	r := h.ok("", "app", "status", "hello", "--json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	for _, k := range []string{"name", "version", "revision", "updated", "mode", "replicas", "desired", "ready", "nodes", "missing_nodes", "refused_nodes", "signed_by", "instances"} {
		if _, ok := got[k]; !ok {
			t.Errorf("app status --json lacks %q:\n%s", k, r.out)
		}
	}
	if l, ok := got["refused_nodes"].([]any); !ok || len(l) != 0 {
		t.Errorf("refused_nodes: %#v, want []", got["refused_nodes"])
	}
	insts, _ := got["instances"].([]any)
	if len(insts) != 1 {
		t.Fatalf("instances: %s", r.out)
	}
	in := insts[0].(map[string]any)
	for _, k := range []string{"node", "id", "state", "pid", "restarts", "reason", "version", "healthy", "current", "started"} {
		if _, ok := in[k]; !ok {
			t.Errorf("pending instance lacks %q: %v", k, in)
		}
	}
	if in["started"] != nil {
		t.Errorf("started of a pending instance: %v, want null", in["started"])
	}
}

// A node whose runner has just started and not yet read the app specs
// lists none of its instances: status says so of each such node the app
// is placed on, where an app deployed there looked as if it was not.
func TestStatusOfNodeAwaitingSpecs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	h.heartbeat(state.Node{ID: "node-1", Arch: runtime.GOARCH, Interval: time.Minute, Time: time.Now(), Started: time.Now(), AwaitingSpecs: true})
	var got appStatusJSON
	if err := json.Unmarshal([]byte(h.ok("", "app", "status", "hello", "--json").out), &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Starting, []string{"node-1"}) || got.Desired != 2 || got.Ready != 0 {
		t.Errorf("status of an app on a node that has not read its specs: starting %q, %d/%d ready", got.Starting, got.Ready, got.Desired)
	}
	if r := h.ok("", "app", "status", "hello"); !strings.Contains(r.out, "has not read the app specs yet") {
		t.Errorf("app status does not say the node has not read the specs:\n%s", r.out)
	}
}
