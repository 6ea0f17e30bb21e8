package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// putFile writes content as object of narun-files.
func (c *cluster) putFile(t *testing.T, object, content string) {
	t.Helper()
	if _, err := c.files.PutBytes(context.Background(), object, []byte(content)); err != nil {
		t.Fatal(err)
	}
}

// haltedFileRollout runs app reader at 1.0.0, placing object conf ("one")
// pinned, then files put "two" and stores 1.1.0 pinning it, which crashes:
// start_grace holds the rollout in its health wait, so 1.0.0 (old) keeps
// running beside it.
func haltedFileRollout(t *testing.T) (c *cluster, tr *testRunner, old state.Instance) {
	t.Helper()
	c = newCluster(t, nil)
	c.putFile(t, "conf", "one")
	files := "[[files]]\nobject = \"conf\"\npath = \"x\"\n"
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n"+files)
	c.pin(t, "reader")
	tr = startRunner(t, c, nil)
	old = tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	c.putFile(t, "conf", "two")
	c.putPinned(t, "reader", "1.1.0", probeBin, "args = [\"crash\"]\n"+files+
		"[health]\nstart_grace = \"10m\"\n[restart]\ninitial_backoff = \"100ms\"\nmax_backoff = \"200ms\"\n",
		map[string]string{"conf": sha256Hex("two")})
	tr.wait(t, "reader", "1.1.0 crash-looping beside 1.0.0", func(l []state.Instance) bool {
		return len(l) == 2 && l[0].ID == old.ID && l[0].State == state.Healthy && l[1].Version == "1.1.0" && l[1].Restarts > 0
	})
	return c, tr, old
}

// putPinned stores a spec of app at version running bin whose [[files]]
// objects are pinned to digests, as ctl deploy stores it.
func (c *cluster) putPinned(t *testing.T, app, version, bin, extra string, digests map[string]string) {
	t.Helper()
	stored := storedSpec(t, app, version, c.upload(t, app, version, bin), fileDigest(t, bin), extra)
	stored = append(stored, "\n[file_digests]\n"...)
	for object, d := range digests {
		stored = append(stored, fmt.Sprintf("%q = %q\n", object, d)...)
	}
	if _, err := c.apps.Put(context.Background(), app, stored); err != nil {
		t.Fatal(err)
	}
}

// A new version that ships new content of its [[files]] object and does
// not turn healthy: the revision that served is started again with the
// content it pinned, which narun-files and the cache of the object no
// longer hold since files put replaced it.
func TestRollbackPlacesContentPinnedBeforeFilesPut(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "appconf", "greeting=hi")
	tr := startRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	bridged := fmt.Sprintf("[http]\nport = %s\n[[files]]\nobject = \"appconf\"\npath = \"etc/app.conf\"\n", port)
	c.deploy(t, "plain", "1.0.0", helloBin, fmt.Sprintf("args = [\"--http\", %q]\n", addr)+bridged)
	c.pin(t, "plain")
	first := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]

	c.putFile(t, "appconf", "greeting=hello")
	c.putPinned(t, "plain", "1.1.0", probeBin, "args = [\"crash\"]\n"+bridged+"[restart]\nmax_failures = 1\n",
		map[string]string{"appconf": sha256Hex("greeting=hello")})
	var back state.Instance
	tr.wait(t, "plain", "1.0.0 started again", func(l []state.Instance) bool {
		for _, in := range l {
			if in.Version == "1.0.0" && in.ID != first.ID && (in.State == state.Healthy || in.State == state.Failed) {
				back = in
				return true
			}
		}
		return false
	})
	if back.State != state.Healthy {
		t.Fatalf("rollback to 1.0.0: %s %s: %s", back.ID, back.State, back.Reason)
	}
	placed, err := os.ReadFile(filepath.Join(tr.instancesDir(), "plain", back.ID, "etc", "app.conf"))
	if err != nil || string(placed) != "greeting=hi" {
		t.Errorf("file placed for 1.0.0 started again: %q, %v; want the content it pinned, %q", placed, err, "greeting=hi")
	}
}

// The old instance a halted rollout keeps serving restarts, after an exit,
// with the content it pinned, though files put replaced the object since.
func TestOldInstanceRestartsWithContentPinnedBeforeFilesPut(t *testing.T) {
	t.Parallel()
	_, tr, old := haltedFileRollout(t)
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "reader", "1.0.0 after the kill", func(l []state.Instance) bool {
		return len(l) == 2 && l[0].ID == old.ID && (l[0].State == state.Failed || l[0].State == state.Healthy && l[0].PID != old.PID)
	})[0]
	if again.State != state.Healthy || again.Restarts != 1 {
		t.Fatalf("1.0.0 after the kill: %s restarts %d: %s; want it healthy with 1 restart", again.State, again.Restarts, again.Reason)
	}
	placed, err := os.ReadFile(filepath.Join(tr.instancesDir(), "reader", old.ID, "x"))
	if err != nil || string(placed) != "one" {
		t.Errorf("file placed at the restart: %q, %v; want the content 1.0.0 pinned, %q", placed, err, "one")
	}
}

// Without NATS and without the pinned copy in the cache, the content kept
// by its digest is placed, only when its bytes have that digest.
func TestPinnedFileFromKeptContent(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	if err := os.WriteFile(filepath.Join(tr.filesDir(), "conf"), []byte("new"), 0o444); err != nil {
		t.Fatal(err)
	}
	f := spec.File{Object: "conf", Path: "x"}
	kept := filepath.Join(tr.dir, "files-pinned", sha256Hex("old"))
	if err := os.WriteFile(kept, []byte("old"), 0o444); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := tr.placeFile(context.Background(), nil, f, sha256Hex("old"), dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || string(b) != "old" {
		t.Errorf("placed %q, %v; want the kept content", b, err)
	}

	if err := os.Remove(kept); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, []byte("damaged"), 0o444); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := tr.placeFile(context.Background(), nil, f, sha256Hex("old"), dir); !errors.Is(err, errOffline) {
		t.Errorf("damaged kept content: %v, want %v", err, errOffline)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("damaged content placed: %v", err)
	}
	if _, err := os.Stat(kept); !os.IsNotExist(err) {
		t.Errorf("damaged kept content: %v, want it removed", err)
	}
}

// The content placed for a spec that pins nothing (stored by an earlier
// ctl) is kept through gc: deployed again, the spec pins what the store
// holds, which restarts nothing, and the instance's restart after a
// files put needs those bytes, which neither the store nor the cache's
// copy then hold.
func TestContentPlacedWithoutPinSurvivesGC(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.putFile(t, "conf", "one")
	c.deploy(t, "reader", "1.0.0", probeBin, "args = [\"cat\", \"x\"]\n[[files]]\nobject = \"conf\"\npath = \"x\"\n")
	tr := startRunner(t, c, nil)
	old := tr.wait(t, "reader", "healthy", allIn(1, state.Healthy))[0]
	tr.gc()

	c.pin(t, "reader")
	testutil.Eventually(t, 10*time.Second, "the running instance pinned anew", func() bool {
		for _, a := range tr.appList() {
			for _, in := range a.instanceList() {
				if a.launchSpec(in).FileDigests["conf"] == sha256Hex("one") {
					return true
				}
			}
		}
		return false
	})
	c.putFile(t, "conf", "two")
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "reader", "after the kill", func(l []state.Instance) bool {
		return len(l) == 1 && (l[0].State == state.Failed || l[0].State == state.Healthy && l[0].PID != old.PID)
	})[0]
	if again.State != state.Healthy {
		t.Fatalf("after the kill: %s: %s; want it healthy with the content it pinned", again.State, again.Reason)
	}
	placed, err := os.ReadFile(filepath.Join(tr.instancesDir(), "reader", old.ID, "x"))
	if err != nil || string(placed) != "one" {
		t.Errorf("file placed at the restart: %q, %v; want %q", placed, err, "one")
	}
}
