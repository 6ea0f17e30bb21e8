package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/sandbox"
)

// streams is the last sequence of every stream, by name: each KV bucket
// and object store is a stream, so a bucket created, or a write to any,
// changes it.
func (h *harness) streams() map[string]uint64 {
	h.t.Helper()
	out := map[string]uint64{}
	l := h.js.ListStreams(context.Background())
	for info := range l.Info() {
		out[info.Config.Name] = info.State.LastSeq
	}
	if err := l.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// dryRunWritesNothing runs deploy with args and --dry-run as a process,
// and fails the test if it changed any bucket.
func (h *harness) dryRunWritesNothing(args ...string) result {
	h.t.Helper()
	before := h.streams()
	r := h.runProcess(append([]string{"deploy", "--dry-run"}, args...)...)
	if after := h.streams(); !maps.Equal(before, after) {
		h.t.Errorf("dry run changed the streams (name: last sequence) from %v to %v", before, after)
	}
	return r
}

// A dry run refuses what the deploy refuses, for the same reason and
// with the same exit code, and writes nothing, not even a bucket.
func TestDryRunRefusesAsDeploy(t *testing.T) {
	t.Parallel()
	bin := elfBinary(t)
	const secret = "[[secrets]]\nname = \"db\"\nenv = \"DB\"\n"
	const file = "[[files]]\nobject = \"conf\"\npath = \"conf.toml\"\n"
	tests := []struct {
		name string
		// setup prepares h and returns deploy's arguments.
		setup func(t *testing.T, h *harness) []string
		code  int
		want  string
	}{
		{"missing secret", func(t *testing.T, h *harness) []string {
			return []string{h.file("hello.toml", helloSpec+secret), "--binary", bin}
		}, 1, `secret "db" does not exist`},
		{"missing file object", func(t *testing.T, h *harness) []string {
			// Only its existence is checked, not what it holds.
			if _, err := h.kv(names.SecretsBucket).Put(context.Background(), "db", []byte("x")); err != nil {
				t.Fatal(err)
			}
			return []string{h.file("hello.toml", helloSpec+secret+file), "--binary", bin}
		}, 1, `file "conf" does not exist`},
		{"route clash", func(t *testing.T, h *harness) []string {
			h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", bin)
			return []string{h.file("a-hello.toml", strings.Replace(helloSpec, `name = "hello"`, `name = "a-hello"`, 1)), "--binary", bin}
		}, 1, `app "hello" route #1 (path "/hello/") and app "a-hello" route #1`},
		{"no binaries of this version to keep", func(t *testing.T, h *harness) []string {
			h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", bin)
			return []string{h.file("hello.toml", strings.Replace(helloSpec, `version = "1.0.0"`, `version = "1.0.1"`, 1))}
		}, 2, "no binary for hello 1.0.1"},
		{"pinned binary missing", func(t *testing.T, h *harness) []string {
			pinned, err := spec.WithBinaries("hello.toml", []byte(helloSpec), map[string]spec.Binary{runtime.GOARCH: {Object: "hello/1.0.0/gone", SHA256: strings.Repeat("0", 64)}})
			if err != nil {
				t.Fatal(err)
			}
			return []string{h.file("hello.toml", string(pinned))}
		}, ExitNotFound, "binary hello/1.0.0/gone for " + runtime.GOARCH + " is not in " + names.BinariesBucket},
		{"deployed spec signed by another key", func(t *testing.T, h *harness) []string {
			path, _ := h.keygen("ctl.key")
			h.useSigningKey(path)
			p := h.file("hello.toml", helloSpec)
			h.ok("", "deploy", p, "--binary", bin)
			other, err := signing.Generate()
			if err != nil {
				t.Fatal(err)
			}
			ours, _ := h.get(names.AppsBucket, "hello")
			if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", other.Sign(signing.Strip(ours))); err != nil {
				t.Fatal(err)
			}
			return []string{p}
		}, 1, "the stored spec of hello is not signed by this ctl's key (signed by "},
		{"deployed spec signed, ctl without a key", func(t *testing.T, h *harness) []string {
			path, _ := h.keygen("ctl.key")
			h.useSigningKey(path)
			p := h.file("hello.toml", helloSpec)
			h.ok("", "deploy", p, "--binary", bin)
			h.useSigningKey("")
			return []string{p, "--binary", bin}
		}, 1, "the deployed spec of hello is signed by "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			args := tt.setup(t, h)
			dry := h.dryRunWritesNothing(args...)
			if dry.code != tt.code || !strings.Contains(dry.err, tt.want) {
				t.Errorf("dry run: exit %d, want %d with %q; stderr:\n%s", dry.code, tt.code, tt.want, dry.err)
			}
			deploy := h.runProcess(append([]string{"deploy"}, args...)...)
			if deploy.code != dry.code || deploy.err != dry.err {
				t.Errorf("deploy: exit %d, stderr:\n%s\ndry run: exit %d, stderr:\n%s", deploy.code, deploy.err, dry.code, dry.err)
			}
		})
	}
}

// A dry run warns of the nodes that will not run the spec as the deploy
// does: one that sends no heartbeat, one of an arch the spec has no binary
// for, one that runs only signed specs (the only one selected that sends
// heartbeats: without --force, both would refuse the spec for it).
func TestDryRunWarnsOfNodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "node-1", Arch: "riscv64", SignaturesRequired: true})
	p := h.file("hello.toml", strings.Replace(helloSpec, `nodes = ["node-1"]`, `nodes = ["node-1", "ghost"]`, 1))
	dry := h.dryRunWritesNothing(p, "--binary", elfBinary(t), "--force")
	if dry.code != 0 {
		t.Fatalf("dry run: exit %d; stderr:\n%s", dry.code, dry.err)
	}
	deploy := h.runProcess("deploy", p, "--binary", elfBinary(t), "--force")
	for _, want := range []string{
		"warning: node ghost sends no heartbeat",
		"warning: node node-1 is linux/riscv64 and this spec has no riscv64 binary",
		"warning: node node-1 runs only signed specs and ctl has no signing key",
	} {
		if !strings.Contains(dry.err, want) || !strings.Contains(deploy.err, want) {
			t.Errorf("warning %q missing; dry run stderr:\n%s\ndeploy stderr:\n%s", want, dry.err, deploy.err)
		}
	}
}

// A dry run without --binary plans the binaries the deploy keeps from the
// deployed spec of the same version.
func TestDryRunPlansKeptBinaries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	deployed := h.ok("", "deploy", p, "--binary", elfBinary(t), "--json")
	dry := h.dryRunWritesNothing(p, "--json")
	var want, got deployResult
	if err := json.Unmarshal([]byte(deployed.out), &want); err != nil {
		t.Fatalf("decode %q: %v", deployed.out, err)
	}
	if err := json.Unmarshal([]byte(dry.out), &got); err != nil {
		t.Fatalf("decode %q: %v; stderr:\n%s", dry.out, err, dry.err)
	}
	if !maps.Equal(got.Pinned, want.Pinned) || len(want.Pinned) != 1 {
		t.Errorf("dry run pins %v, the deploy pinned %v", got.Pinned, want.Pinned)
	}
	// The plan for people names them too, not only the routes.
	out := h.dryRunWritesNothing(p).out
	for arch, b := range want.Pinned {
		if line := fmt.Sprintf("linux/%s  %s  kept from the deployed spec", arch, b.Object); !strings.Contains(out, line) {
			t.Errorf("dry run without --binary does not say %q:\n%s", line, out)
		}
	}
}

// A dry run says whether the deploy would change the stored spec, as the
// deploy's "changed" does: a script checks it before deploying.
func TestDryRunSaysWhetherTheDeployChanges(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	p := h.file("hello.toml", helloSpec)
	changed := func(args ...string) bool {
		t.Helper()
		r := h.dryRunWritesNothing(append(args, "--json")...)
		var res deployResult
		if err := json.Unmarshal([]byte(r.out), &res); err != nil {
			t.Fatalf("decode %q: %v; stderr:\n%s", r.out, err, r.err)
		}
		return res.Changed
	}
	if !changed(p, "--binary", bin) {
		t.Error("dry run of a first deploy: changed is false")
	}
	h.ok("", "deploy", p, "--binary", bin)
	if changed(p, "--binary", bin) {
		t.Error("dry run of the deployed file: changed is true")
	}
	h.file("hello.toml", strings.Replace(helloSpec, "replicas = 2", "replicas = 3", 1))
	if !changed(p) {
		t.Error("dry run of a spec with other replicas: changed is false")
	}
	if r := h.dryRunWritesNothing(p); !strings.Contains(r.out, "the deploy would change the stored spec") {
		t.Errorf("dry run of a changed spec does not say it would change:\n%s", r.out)
	}
}

// Without NATS a dry run still lints the spec, and names the checks in
// NATS it skipped.
func TestDryRunOfflineNamesSkippedChecks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://127.0.0.1:1"
	r := h.runProcess("deploy", "--dry-run", h.file("hello.toml", helloSpec+"[[secrets]]\nname = \"db\"\nenv = \"DB\"\n"))
	if r.code != 0 {
		t.Fatalf("offline dry run: exit %d; stderr:\n%s", r.code, r.err)
	}
	for _, want := range []string{
		"checked the spec and binaries only, not what a deploy checks in NATS",
		"that its secrets and [[files]] objects exist",
		"that its routes do not clash with another app's",
		"that the deployed spec, or a kept revision, has binaries of 1.0.0 to keep",
		"a deploy may still refuse it",
	} {
		if !strings.Contains(r.err, want) {
			t.Errorf("warning lacks %q; stderr:\n%s", want, r.err)
		}
	}
}

// A sandboxed app without user runs as a uid derived from its name, and
// what it must write on the host (a [[sandbox.paths]] "rw" directory that
// outlives its instances) must be made that uid's before it starts: deploy
// and its dry run name the uid, where a developer looks before deploying.
func TestDeployNamesSandboxUID(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("keeper.toml", "name = \"keeper\"\nversion = \"1\"\nnodes = [\"node-1\"]\nmode = \"sandbox\"\n"+
		"[[sandbox.paths]]\npath = \"/srv/keeper\"\nmode = \"rw\"\n")
	uid := fmt.Sprint(sandbox.AppID("keeper"))
	r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--dry-run")
	if !strings.Contains(r.out, "uid and gid "+uid) {
		t.Errorf("dry run does not name uid %s:\n%s", uid, r.out)
	}
	var res struct {
		UID *uint32 `json:"uid"`
	}
	r = h.ok("", "deploy", p, "--binary", elfBinary(t), "--dry-run", "--json")
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("decode %q: %v", r.out, err)
	}
	if res.UID == nil || fmt.Sprint(*res.UID) != uid {
		t.Errorf("deploy --json uid %v, want %s:\n%s", res.UID, uid, r.out)
	}
	// With user set, the node resolves it: ctl does not guess.
	p = h.file("named.toml", "name = \"named\"\nversion = \"1\"\nnodes = [\"node-1\"]\nmode = \"sandbox\"\n[sandbox]\nuser = \"nobody\"\n")
	if r := h.ok("", "deploy", p, "--binary", elfBinary(t), "--dry-run"); strings.Contains(r.out, "uid") {
		t.Errorf("dry run names a uid for user = \"nobody\":\n%s", r.out)
	}
}
