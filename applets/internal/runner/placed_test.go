package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// plantSpec is an app that replaces conf/, where the runner placed its file,
// with a link to victim and crashes, so that the runner places the file
// again; victim stands in for /etc or /root/.ssh.
func plantSpec(mode, conf, victim string) string {
	return "mode = \"" + mode + "\"\nargs = [\"plant\", \"" + victim + "\"]\n" +
		"[restart]\ninitial_backoff = \"10ms\"\n" +
		"[[files]]\nobject = \"appconf\"\npath = \"" + conf + "/app.txt\"\n"
}

// placedThrough waits until the runner either wrote the app's file into
// victim or failed the instance, and returns the instance.
func placedThrough(t *testing.T, tr *testRunner, app, victim string) state.Instance {
	t.Helper()
	var in state.Instance
	testutil.Eventually(t, 30*time.Second, "the file placed through the link, or the instance failed", func() bool {
		if _, err := os.Lstat(filepath.Join(victim, "app.txt")); err == nil {
			return true
		}
		l := tr.of(app)
		if len(l) == 1 && l[0].State == state.Failed {
			in = l[0]
			return true
		}
		return false
	})
	if b, err := os.ReadFile(filepath.Join(victim, "app.txt")); err == nil {
		t.Fatalf("the runner wrote %s outside the instance dir, through the app's link: %q", filepath.Join(victim, "app.txt"), b)
	}
	return in
}

// An app that replaces a directory the runner places a file in with a
// link does not have the runner write through it: an exec app runs as the
// runner's user, but the runner still never follows a link below the
// instance dir.
func TestPlacedFileDoesNotFollowAppLinks(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	if _, err := c.files.PutBytes(context.Background(), "appconf", []byte("written-by-runner")); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, nil)
	victim := t.TempDir()
	c.deploy(t, "planter", "1.0.0", probeBin, plantSpec("exec", "conf", victim))
	in := placedThrough(t, tr, "planter", victim)
	if want := `path "conf/app.txt": "conf" is a symbolic link`; !strings.Contains(in.Reason, want) {
		t.Errorf("reason %q, want it to say %q", in.Reason, want)
	}
}

// A sandboxed app owns data/: a spec stored with a file there (by an
// earlier ctl, or written to narun-apps directly) fails at once rather
// than have the root runner place files where the app decides.
func TestSandboxRefusesPlacementInAppDir(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	if _, err := c.files.PutBytes(context.Background(), "appconf", []byte("written-by-runner")); err != nil {
		t.Fatal(err)
	}
	tr := startSandboxRunner(t, c, nil)
	victim := filepath.Join(sandboxDataDir(t), "victim")
	if err := os.MkdirAll(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	c.putStoredSpec(t, "planter", probeBin, plantSpec("sandbox", "data/conf", victim))
	in := placedThrough(t, tr, "planter", victim)
	if want := `path "data/conf/app.txt" is in data/, which the sandboxed app may write`; !strings.Contains(in.Reason, want) || in.Restarts != 0 {
		t.Errorf("instance %+v: want failed at once with reason %q", in, want)
	}
}
