package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An old instance that a halted rollout keeps serving runs the spec
// before: a restart of it while NATS is unreachable needs that spec's
// [[files]] objects and sealed secrets from the cache, though the new
// spec drops them.
func TestGCKeepsFilesAndSecretsOfRunningInstances(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "appconf", "greeting=hi")
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	c.deploy(t, "reader", "1.0.0", probeBin, "[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n"+
		"[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n")
	old := tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]

	// start_grace holds the rollout in its health wait, the old instance
	// running, while the cache is pruned.
	c.deploy(t, "reader", "1.1.0", probeBin, "args = [\"crash\"]\n"+
		"[health]\nstart_grace = \"10m\"\n[restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n")
	tr.wait(t, "reader", "1.1.0 crash-looping beside 1.0.0", func(l []state.Instance) bool {
		return len(l) == 2 && l[0].ID == old.ID && l[0].State == state.Healthy && l[1].Version == "1.1.0" && l[1].Restarts > 0
	})
	tr.gc()
	cached := []string{filepath.Join(tr.filesDir(), "appconf"), filepath.Join(tr.fileDigestsDir(), "appconf"), filepath.Join(tr.sealedDir(), "token")}
	for _, p := range cached {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("cache entry of the running 1.0.0 instance: %v", err)
		}
	}

	// Once no instance runs 1.0.0 any more, its entries go.
	c.deploy(t, "reader", "1.2.0", probeBin, takeOverAtOnce)
	tr.wait(t, "reader", "only 1.2.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.2.0"
	})
	tr.gc()
	for _, p := range cached {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cache entry no spec of the app names: %v, want it removed", err)
		}
	}
}

// The content each spec the app may start pins stays kept after files
// put replaced its object, for a rollback or an old instance's restart;
// content that no spec pins any more goes.
func TestGCKeepsPinnedContentOfSpecsOnly(t *testing.T) {
	t.Parallel()
	c, tr, _ := haltedFileRollout(t)
	pinned := filepath.Join(tr.dir, "files-pinned")
	temporary := filepath.Join(pinned, ".tmp-1")
	if err := os.WriteFile(temporary, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	tr.gc()
	for _, content := range []string{"one", "two"} {
		if b, err := os.ReadFile(filepath.Join(pinned, sha256Hex(content))); err != nil || string(b) != content {
			t.Errorf("kept copy of %q: %q, %v", content, b, err)
		}
	}

	c.deploy(t, "reader", "1.2.0", probeBin, takeOverAtOnce)
	tr.wait(t, "reader", "only 1.2.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "1.2.0"
	})
	tr.gc()
	for _, content := range []string{"one", "two"} {
		if _, err := os.Stat(filepath.Join(pinned, sha256Hex(content))); !os.IsNotExist(err) {
			t.Errorf("kept copy of %q that no spec pins: %v, want it removed", content, err)
		}
	}
	// It belongs to a copy in flight.
	if _, err := os.Stat(temporary); err != nil {
		t.Errorf("temporary file: %v", err)
	}
}

// An app whose spec runs nothing on this node any more (the node no
// longer selected, replicas = 0) cannot start here without a new spec,
// which comes with NATS: its binary, files and sealed secrets go from
// the cache, as a deleted app's do.
func TestGCDropsCacheOfAppNotRunHere(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "appconf", "greeting=hi")
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	extra := "[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n"
	c.deploy(t, "reader", "1.0.0", probeBin, extra)
	tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))
	cached := []string{
		filepath.Join(tr.cache.dir, fileDigest(t, probeBin)),
		filepath.Join(tr.filesDir(), "appconf"), filepath.Join(tr.fileDigestsDir(), "appconf"),
		filepath.Join(tr.sealedDir(), "token"),
	}
	for _, p := range cached {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("cache entry of the running instance: %v", err)
		}
	}

	c.deploy(t, "reader", "1.0.0", probeBin, "replicas = 0\n"+extra)
	tr.wait(t, "reader", "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	tr.gc()
	for _, p := range cached {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cache entry of an app with no replica here: %v, want it removed", err)
		}
	}
}

// A file or a secret that a start caches after gc listed what the apps
// keep, for a spec it could not see then (a deploy landing meanwhile), is
// not removed by that gc: a restart of the new instance while NATS is
// away needs it. The binaries' cache spares its own such entries.
func TestGCSparesWhatIsCachedWhileItRuns(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	online.files = c.files
	ctx := context.Background()
	c.putFile(t, "appconf", "greeting=hi")
	// gc waits for this lock, of a binary no app keeps, once it has
	// listed what the apps keep and before it removes anything.
	unused := sha256Hex("an unused build")
	if err := os.WriteFile(filepath.Join(r.cache.dir, unused), nil, 0o555); err != nil {
		t.Fatal(err)
	}
	unlock := r.cache.flights.lock(unused)
	collected := make(chan struct{})
	go func() {
		r.gc()
		close(collected)
	}()
	testutil.Eventually(t, 10*time.Second, "gc waiting for the unused binary's lock", func() bool {
		r.cache.flights.mu.Lock()
		defer r.cache.flights.mu.Unlock()
		return r.cache.flights.m[unused].n == 2
	})
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	f := spec.File{Object: "appconf", Path: "etc/app.conf"}
	if err := r.placeFile(ctx, online, f, sha256Hex("greeting=hi"), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	unlock()
	<-collected
	for _, p := range []string{
		filepath.Join(r.sealedDir(), "token"),
		filepath.Join(r.filesDir(), "appconf"), filepath.Join(r.fileDigestsDir(), "appconf"),
		filepath.Join(r.filesPinnedDir(), sha256Hex("greeting=hi")),
	} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("entry cached while gc ran: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(r.cache.dir, unused)); !os.IsNotExist(err) {
		t.Errorf("binary no app keeps: %v, want it removed", err)
	}
}

// A deleted app's cached files and sealed secrets go with it, not at the
// next resync, which may be long or, with NATS away, never come: the
// operator who deleted it finds its files and secrets on the node no
// longer. Those another app names stay.
func TestDeletedAppsCacheGoesWithIt(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "appconf", "greeting=hi")
	c.putFile(t, "shared", "both")
	keyFile := writeKeyFile(t, sealSecrets(t, c, map[string]string{"token": "v1", "common": "v2"}))
	tr := startRunner(t, c, func(o *Options) {
		o.Config.MasterKeyFile = keyFile
		o.Config.ResyncInterval = config.Duration(time.Hour)
	})
	c.deploy(t, "reader", "1.0.0", probeBin, "[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n"+
		"[[files]]\nobject = \"shared\"\npath = \"etc/shared\"\n"+
		"[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n[[secrets]]\nname = \"common\"\nenv = \"COMMON\"\n")
	c.deploy(t, "other", "1.0.0", probeBin, "[[files]]\nobject = \"shared\"\npath = \"etc/shared\"\n"+
		"[[secrets]]\nname = \"common\"\nenv = \"COMMON\"\n")
	tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))
	tr.wait(t, "other", "healthy", allIn(1, state.Healthy))
	gone := []string{
		filepath.Join(tr.filesDir(), "appconf"), filepath.Join(tr.fileDigestsDir(), "appconf"),
		filepath.Join(tr.filesPinnedDir(), sha256Hex("greeting=hi")),
		filepath.Join(tr.sealedDir(), "token"),
	}
	kept := []string{
		filepath.Join(tr.filesDir(), "shared"), filepath.Join(tr.sealedDir(), "common"),
		filepath.Join(tr.cache.dir, fileDigest(t, probeBin)),
	}
	for _, p := range append(gone, kept...) {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("cache entry of a running instance: %v", err)
		}
	}

	c.remove(t, "reader")
	testutil.Eventually(t, 10*time.Second, "the deleted app's cached files and secrets removed", func() bool {
		for _, p := range gone {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				return false
			}
		}
		return true
	})
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("cache entry another app names: %v", err)
		}
	}
}
