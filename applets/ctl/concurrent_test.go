package ctl

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
)

// stepDeployment is what readDeployment reads, without a ucli.Context:
// a test runs deploy's steps (plan, uploadAndStamp, publishDeploy) one by
// one, with another command between two of them.
func (h *harness) stepDeployment(file string, bins ...string) *deployment {
	h.t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		h.t.Fatal(err)
	}
	app, err := spec.Parse(file, src)
	if err != nil {
		h.t.Fatal(err)
	}
	bs, err := inspectBinaries(bins, app)
	if err != nil {
		h.t.Fatal(err)
	}
	return &deployment{file: file, src: src, app: app, bins: bs, res: deployResult{App: app.Name, Version: app.Version, Binaries: bs}}
}

// planned is stepDeployment with deploy's plan run on it.
func (h *harness) planned(e *env, file string, bins ...string) *deployment {
	h.t.Helper()
	d := h.stepDeployment(file, bins...)
	if err := e.plan(context.Background(), d); err != nil {
		h.t.Fatal(err)
	}
	return d
}

// uploadAndStamp is deploy's steps between its plan and its spec write.
func (h *harness) uploadAndStamp(e *env, d *deployment) {
	h.t.Helper()
	ctx := context.Background()
	for i := range d.bins {
		if err := e.upload(ctx, d.obs, &d.bins[i]); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := e.stampPins(ctx, d); err != nil {
		h.t.Fatal(err)
	}
}

// publishDeploy is deploy's last step: the spec, the routes, the prune.
func (h *harness) publishDeploy(e *env, d *deployment) error {
	_, err := e.publish(context.Background(), release{apps: d.apps, cur: d.cur, stored: d.stored, final: d.final, key: d.key, prune: true, verb: "deploy", again: "deploy again"}, false)
	return err
}

// An image delete run while a deploy has uploaded its build but not yet
// stored the spec that pins it sees no spec pinning it. It refuses the
// build a deploy stamped within prune_grace; forced, it deletes it, and the
// deploy then says, instead of reporting success, that its spec pins a
// binary that is gone.
func TestImageDeleteDuringDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.build("1.0.0", 1)
	e := h.env(io.Discard)
	d := h.planned(e, h.file("hello.toml", helloVersion("1.0.0", "/hello/")), b.path)
	h.uploadAndStamp(e, d)

	r := h.fails(ExitInUse, "", "image", "delete", b.object)
	if !strings.Contains(r.err, "a deploy may be storing a spec that pins it") {
		t.Errorf("image delete of a build stamped moments ago: %s", r.err)
	}
	h.ok("", "image", "delete", "--force", b.object)

	err := h.publishDeploy(e, d)
	if err == nil || !strings.Contains(err.Error(), b.object) || !strings.Contains(err.Error(), "deploy again") {
		t.Errorf("deploy whose build was deleted before its spec was stored: %v", err)
	}
}

// files delete and secret delete run between a deploy's plan, which checks
// that what its spec uses exists, and its spec write. files delete refuses
// a file a deploy stamped within prune_grace; past it (prune_grace = 0s
// here) and for a secret, which no deploy stamps, the deploy looks again
// once its spec is stored and fails, naming what is gone.
func TestFileAndSecretDeleteDuringDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	h.ok("", "files", "put", "conf", h.file("conf.toml", "x = 1\n"))
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"conf\"\npath = \"etc/conf.toml\"\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n")
	e := h.env(io.Discard)
	d := h.planned(e, p, elfBinary(t))
	h.uploadAndStamp(e, d)
	r := h.fails(ExitInUse, "", "files", "delete", "conf")
	if !strings.Contains(r.err, "a deploy may be storing a spec that pins it") {
		t.Errorf("files delete of a file a deploy stamped moments ago: %s", r.err)
	}

	h.pruneGrace("0s")
	h.ok("", "files", "delete", "conf")
	h.ok("", "secret", "delete", "db")
	err := h.publishDeploy(e, d)
	if err == nil || !strings.Contains(err.Error(), `file "conf"`) || !strings.Contains(err.Error(), `secret "db"`) {
		t.Errorf("deploy whose file and secret were deleted before its spec was stored: %v", err)
	}
}

// A file only files put wrote is deleted at once: no deploy stamped it,
// so none can be storing a spec that pins it (one that stamps it later
// finds it gone). A file put again after a deploy stamped it loses the
// stamp the same way.
func TestFilePutThenDeletedAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "typo", h.file("typo.toml", "x = 1\n"))
	h.ok("", "files", "delete", "typo")

	h.ok("", "files", "put", "conf", h.file("conf.toml", "x = 1\n"))
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"conf\"\npath = \"etc/conf.toml\"\n")
	e := h.env(io.Discard)
	d := h.planned(e, p, elfBinary(t))
	h.uploadAndStamp(e, d)
	h.fails(ExitInUse, "", "files", "delete", "conf")
	h.ok("", "files", "put", "conf", h.file("conf2.toml", "x = 2\n"))
	h.ok("", "files", "delete", "conf")
}

// A file deleted before a deploy stamps it fails the deploy before its
// spec is stored, as a deleted build does.
func TestFileDeletedBeforeDeployStampsIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("", "files", "put", "conf", h.file("conf.toml", "x = 1\n"))
	e := h.env(io.Discard)
	d := h.planned(e, h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"conf\"\npath = \"etc/conf.toml\"\n"), elfBinary(t))
	h.pruneGrace("0s")
	h.ok("", "files", "delete", "conf")
	err := e.stampPins(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "nothing deployed") || !strings.Contains(err.Error(), "conf") {
		t.Errorf("stamp of a deleted file: %v", err)
	}
	if _, ok := h.get(names.AppsBucket, "app"); ok {
		t.Error("spec stored though its file is gone")
	}
}

// hookKV runs after once its first Update has succeeded.
type hookKV struct {
	jetstream.KeyValue
	after func()
}

func (k *hookKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := k.KeyValue.Update(ctx, key, value, last)
	if err == nil && k.after != nil {
		f := k.after
		k.after = nil
		f()
	}
	return rev, err
}

// Two deploys of one app with different routes: A stores its spec, all
// of B runs (spec and routes), then A writes its routes. The routes entry
// ends up as the stored spec's, B's, whichever writes last.
func TestConcurrentDeploysLeaveRoutesOfStoredSpec(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bin := elfBinary(t)
	h.ok("", "deploy", h.file("hello.toml", helloVersion("1.0.0", "/one/")), "--binary", bin)

	e := h.env(io.Discard)
	d := h.planned(e, h.file("hello-a.toml", helloVersion("2.0.0", "/a/")), bin)
	h.uploadAndStamp(e, d)
	d.apps = &hookKV{KeyValue: d.apps, after: func() {
		h.ok("", "deploy", h.file("hello-b.toml", helloVersion("3.0.0", "/b/")), "--binary", bin)
	}}
	if err := h.publishDeploy(e, d); err != nil {
		t.Logf("deploy A: %v", err)
	}
	h.wantRoutesOfStoredSpec("hello")
}

// wantRoutesOfStoredSpec fails the test unless the routes entry of app
// holds the routes of its stored spec.
func (h *harness) wantRoutesOfStoredSpec(app string) {
	h.t.Helper()
	st := h.storedApp(app)
	raw, _ := h.get(names.RoutesBucket, app)
	ent, err := gateway.DecodeEntry(app, signing.Strip(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	if len(ent.Routes) != len(st.Routes) || ent.Routes[0].Path != st.Routes[0].Path {
		h.t.Errorf("routes entry serves %v while the stored spec (version %s) declares %v", ent.Routes, st.Version, st.Routes)
	}
}

// A deploy that stores its spec between secret delete's check and its
// purge: secret delete looks at the specs again after the purge and names
// the app, which the check before could not.
func TestSecretDeleteNamesDeployThatRanMeanwhile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	e := h.env(io.Discard)
	before, _, err := e.users(context.Background(), []string{"db"}, secretRefs)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "deploy", h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[secrets]]\nname = \"db\"\nenv = \"DB\"\n"), "--binary", elfBinary(t))
	err = e.usedSince(context.Background(), []string{"db"}, before)
	if err == nil || !strings.Contains(err.Error(), `secret "db" is deleted, but app`) {
		t.Errorf("after a deploy using the secret ran meanwhile: %v", err)
	}
}
