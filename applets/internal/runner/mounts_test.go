package runner

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

// hostDir is a directory of the host with a file in it, which an exec app
// binds into its instance directory; the test fails if the file is gone.
func hostDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("an app binds a directory only when the runner is root")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkKept fails the test if the host directory lost its file or a mount
// is left under data, and detaches such a mount so that none outlives the
// test.
func checkKept(t *testing.T, host, data string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(host, "precious")); err != nil {
		t.Errorf("the host directory bound into the instance lost its file: %v", err)
	}
	mounts, err := sandbox.MountsUnder(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		t.Errorf("mount %s left in the data dir", m)
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
}

// An exec app that leaves a host directory bound in its instance
// directory loses the mount with the directory, and the host keeps the
// files: removing the directory does not descend into it.
func TestMountLeftInInstanceDirIsNotEmptied(t *testing.T) {
	t.Parallel()
	host := hostDir(t)
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	t.Cleanup(func() { checkKept(t, host, tr.dir) })
	c.deploy(t, "mounter", "1.0.0", probeBin, "args = [\"mount\", \""+host+"\"]\n")
	tr.wait(t, "mounter", "running", allIn(1, state.Healthy))
	tr.waitLine(t, "mounter", "probe: mounted")
	c.remove(t, "mounter")
	tr.wait(t, "mounter", "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	app := filepath.Join(tr.dir, "instances", "mounter")
	testutil.Eventually(t, 10*time.Second, app+" removed", func() bool {
		_, err := os.Stat(app)
		return os.IsNotExist(err)
	})
	if logs := tr.logs.String(); !strings.Contains(logs, "unmounted what an instance left mounted") || !strings.Contains(logs, app) {
		t.Errorf("the journal does not say a mount was left:\n%s", logs)
	}
}

// The same after a runner killed with its apps: the next one removes the
// instance directories they left, mounts and all, without emptying them.
func TestMountLeftByKilledRunnerIsNotEmptied(t *testing.T) {
	t.Parallel()
	host := hostDir(t)
	srv := natstest.StartConfig(t, embednats.Config{Listen: testutil.FreeAddr(t)})
	c := newCluster(t, srv)
	data := t.TempDir()
	t.Cleanup(func() { checkKept(t, host, data) })
	c.deploy(t, "mounter", "1.0.0", probeBin, "args = [\"mount\", \""+host+"\"]\n")
	first := startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	testutil.Eventually(t, 30*time.Second, "the app's mount", func() bool {
		m, err := sandbox.MountsUnder(filepath.Join(data, "instances"))
		return err == nil && len(m) == 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	stale, err := filepath.Glob(filepath.Join(data, "instances", "mounter", "*"))
	if err != nil || len(stale) != 1 {
		t.Fatalf("instance directories left by the killed runner: %v, %v", stale, err)
	}
	// Nothing runs it again: only the removal of what was left is seen.
	c.remove(t, "mounter")
	startChild(t, srv.ClientURL(), data, testutil.FreeAddr(t))
	testutil.Eventually(t, 30*time.Second, "the stale instance directory removed", func() bool {
		_, err := os.Stat(stale[0])
		return os.IsNotExist(err)
	})
}

// A mount the mount table did not list (read from another namespace's
// view, or made after it was read) is still not descended into: the
// removal leaves it, with the host's files in it, and says so.
func TestRemoveTreeDoesNotCrossUnlistedMount(t *testing.T) {
	t.Parallel()
	for name, at := range map[string]string{"below": "data/m", "the directory itself": "."} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host := hostDir(t)
			dir := filepath.Join(t.TempDir(), "instance")
			bound := filepath.Join(dir, at)
			if err := os.MkdirAll(bound, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "own"), []byte("the instance's"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount(host, bound, "", unix.MS_BIND, ""); err != nil {
				t.Fatalf("bind %s: %v", host, err)
			}
			t.Cleanup(func() { _ = unix.Unmount(bound, unix.MNT_DETACH) })
			err := removeOnMount(dir)
			if _, serr := os.Stat(filepath.Join(host, "precious")); serr != nil {
				t.Errorf("the host directory bound into the tree lost its file: %v", serr)
			}
			if err == nil || !strings.Contains(err.Error(), bound) {
				t.Errorf("removeOnMount = %v, want an error naming the mount %s left in place", err, bound)
			}
			if _, serr := os.Stat(filepath.Join(dir, "own")); at != "." && !os.IsNotExist(serr) {
				t.Errorf("the instance's own file is left: %v", serr)
			}
		})
	}
}
