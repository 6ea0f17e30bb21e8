package runner

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// orphanedGroup starts a process group whose leader has exited, as a
// daemon's double fork leaves one: no process has the group's id. It
// returns that id and the pid of the process left in it.
func orphanedGroup(t *testing.T) (pgid, pid int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	pgid = cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	if pid, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
		t.Fatalf("pid of the process left: %q: %v", out, err)
	}
	return pgid, pid
}

// writeStalePID writes what writePIDFile wrote, in an earlier runner, for
// an instance whose process had the id pgid and started at start, in the
// boot boot.
func writeStalePID(t *testing.T, dir, instance string, pgid int, start uint64, boot string) {
	t.Helper()
	d := filepath.Join(dir, "app", instance)
	if err := os.MkdirAll(d, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "pid"), fmt.Appendf(nil, "%d %d %s\n", pgid, start, boot), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A pid file from before a reboot names no process of the runner's: the
// group of that id now is another program's, and is left alone, while
// one recorded in this boot is killed as what an instance left.
func TestStaleGroupOfAnotherBootSpared(t *testing.T) {
	t.Parallel()
	if bootID() == "" {
		t.Skip("the kernel gives no boot id")
	}
	dir := t.TempDir()
	otherBoot, other := orphanedGroup(t)
	thisBoot, ours := orphanedGroup(t)
	writeStalePID(t, dir, "0-aaaaaa", otherBoot, 1, "00000000-0000-0000-0000-000000000000")
	writeStalePID(t, dir, "0-bbbbbb", thisBoot, 1, bootID())
	killStale(dir, slog.New(slog.DiscardHandler))
	// Both were signalled, if at all, before killStale returned.
	waitDead(t, []int{ours})
	if !alive(other) {
		t.Errorf("process %d of group %d, recorded in another boot, was killed", other, otherBoot)
	}
}

// A spec whose caching failed (a full disk) is cached once the disk takes
// it again, though it is not applied again: a restart without NATS would
// otherwise start the spec before it.
func TestSpecCachedOnceWritable(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(50 * time.Millisecond) })
	// A file where the directory should be fails every write in it.
	if err := os.Remove(tr.specsDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tr.specsDir(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.deploy(t, "cached", "1.0.0", probeBin, "args = [\"tick\"]\n")
	tr.wait(t, "cached", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 10*time.Second, "the failed write of the cached spec logged", func() bool {
		return strings.Contains(tr.logs.String(), "cache spec")
	})
	if err := os.Remove(tr.specsDir()); err != nil {
		t.Fatal(err)
	}
	// The runner's next try at caching may make the directory first.
	if err := os.MkdirAll(tr.specsDir(), 0o750); err != nil {
		t.Fatal(err)
	}
	e, err := c.apps.Get(context.Background(), "cached")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the spec cached", func() bool {
		b, err := os.ReadFile(filepath.Join(tr.specsDir(), "cached.toml"))
		return err == nil && bytes.Equal(b, e.Value())
	})
}

// A restart reads each app's spec from the cache, then the same one from
// narun-apps: neither is a new spec, and rewriting the cached file (a
// synced temporary, a rename and a synced directory per app) at every
// start only wears the device's flash. The file keeps its
// inode when it is not written again.
func TestUnchangedSpecNotCachedAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	first := ranUntilHealthy(t, c, "hello")
	path := filepath.Join(first.specsDir(), "hello.toml")
	inode := func() uint64 { return testutil.Inode(t, path) }
	before := inode()
	second := startRunner(t, c, func(o *Options) { o.DataDir = first.dir })
	// An app caches its spec before it starts instances of it.
	second.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	if after := inode(); after != before {
		t.Errorf("cached spec written again though unchanged: inode %d, then %d", before, after)
	}
}

// Every start of an instance reads its secrets from narun-secrets and
// keeps their sealed form for when NATS is away: a sealed secret that did
// not change is not written again, so an app restarting in a loop does not
// rewrite it (a synced file, a rename and a synced directory) at each
// start. The file keeps its inode.
func TestUnchangedSealedSecretNotCachedAgain(t *testing.T) {
	t.Parallel()
	_, r, online := secretRunner(t)
	cached := filepath.Join(r.sealedDir(), "token")
	inode := func() uint64 { return testutil.Inode(t, cached) }
	var inodes []uint64
	for range 2 {
		if v, err := r.secret(context.Background(), online, "token"); err != nil || string(v) != "v1" {
			t.Fatalf("secret: %q %v", v, err)
		}
		inodes = append(inodes, inode())
	}
	if inodes[0] != inodes[1] {
		t.Errorf("sealed secret written again though unchanged: inode %d, then %d", inodes[0], inodes[1])
	}
}

// An instance whose process ended keeps no record of its process group:
// the id may be another program's by the time a runner that crashed is
// started again, and killStale would kill that program's processes.
func TestEndedInstanceLeavesNoPIDRecord(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "gone", "1.0.0", probeBin, "args = [\"crash\"]\n[restart]\npolicy = \"never\"\n")
	ended := tr.wait(t, "gone", "ended", func(l []state.Instance) bool { return len(l) == 1 && l[0].State.Final() })[0]
	pidFile := filepath.Join(tr.instancesDir(), "gone", ended.ID, "pid")
	if _, err := os.Stat(filepath.Dir(pidFile)); err != nil {
		t.Fatalf("instance directory: %v", err)
	}
	if b, err := os.ReadFile(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid record %q (%v) kept after the process ended", b, err)
	}
}
