package runner

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/sandbox"
)

// namedApp is longer than the 15 bytes the kernel keeps of a process
// name, so the tests see the truncation ps and pgrep see.
const namedApp = "named-after-the-app"

// children lists the child processes of pid, forked by any of its threads.
func children(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// onlyChild waits for pid to have a child and returns it.
func onlyChild(t *testing.T, pid int) int {
	t.Helper()
	var kid int
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("a child of %d", pid), func() bool {
		kids := children(pid)
		if len(kids) == 0 {
			return false
		}
		kid = kids[0]
		return true
	})
	return kid
}

// checkNamed asserts that pid shows as app to ps, top and pgrep (comm),
// that its argv[0] is a path ending in the app's name, and that it runs
// the verified binary of digest from the cache.
func checkNamed(t *testing.T, tr *testRunner, pid int, app, digest string) {
	t.Helper()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSuffix(string(comm), "\n"), app[:min(len(app), 15)]; got != want {
		t.Errorf("pid %d: comm %q, want %q", pid, got, want)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	if !filepath.IsAbs(string(argv0)) || !strings.HasSuffix(string(argv0), "/"+app) {
		t.Errorf("pid %d: argv[0] %q, want an absolute path ending in /%s", pid, argv0, app)
	}
	if dir := filepath.Join(tr.opts.DataDir, "instances"); strings.HasPrefix(string(argv0), dir+"/") {
		t.Errorf("pid %d: argv[0] %q lies in the instances' directory, which apps write", pid, argv0)
	}
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	cached, err := os.Stat(filepath.Join(tr.opts.DataDir, "binaries", digest))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(exe, cached) {
		t.Errorf("pid %d does not run the cached binary %s", pid, digest)
	}
}

// execLinksOf lists the links the runner executes an app's builds through.
func execLinksOf(tr *testRunner, app string) []string {
	links, _ := filepath.Glob(filepath.Join(tr.opts.DataDir, "exec", app, "*", app))
	return links
}

// forkedLine waits for the probe's "forked PID" line.
func forkedLine(t *testing.T, tr *testRunner, app string) string {
	t.Helper()
	var line string
	testutil.Eventually(t, 10*time.Second, app+" forking", func() bool {
		i := slices.IndexFunc(tr.lines(app), func(l string) bool { return strings.HasPrefix(l, "fork") })
		if i >= 0 {
			line = tr.lines(app)[i]
		}
		return i >= 0
	})
	return line
}

func TestProcessNamedAfterApp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(50 * time.Millisecond) })
	probe, hello := fileDigest(t, probeBin), fileDigest(t, helloBin)
	// The probe re-executes itself through os.Args[0], as programs that
	// restart themselves do.
	c.deploy(t, namedApp, "1.0.0", probeBin, "args = [\"fork\"]\nstop_timeout = \"200ms\"\n")
	in := tr.wait(t, namedApp, "healthy", allIn(1, state.Healthy))[0]
	checkNamed(t, tr, in.PID, namedApp, probe)
	if l := forkedLine(t, tr, namedApp); !strings.HasPrefix(l, "forked ") {
		t.Fatalf("re-exec through argv[0]: %s", l)
	}
	checkNamed(t, tr, onlyChild(t, in.PID), namedApp, probe)

	// A new build runs beside the old one during the rollout: each has a
	// link of its own, and the old one goes with the old instance. The
	// old instance stops with its own spec's stop_timeout, 200ms: its
	// stubborn child ignores SIGTERM, and the default 10 s would hold the
	// rollout that long.
	c.deploy(t, namedApp, "2.0.0", helloBin, "stop_timeout = \"200ms\"\n"+takeOverAtOnce)
	in = tr.wait(t, namedApp, "healthy on 2.0.0", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].Version == "2.0.0"
	})[0]
	checkNamed(t, tr, in.PID, namedApp, hello)
	testutil.Eventually(t, 10*time.Second, "only the link of the build in use", func() bool {
		links := execLinksOf(tr, namedApp)
		if len(links) != 1 {
			return false
		}
		target, err := os.Readlink(links[0])
		return err == nil && target == filepath.Join(tr.opts.DataDir, "binaries", hello)
	})

	c.remove(t, namedApp)
	tr.wait(t, namedApp, "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	testutil.Eventually(t, 10*time.Second, "the app's links and binaries removed", func() bool {
		_, err := os.Lstat(filepath.Join(tr.opts.DataDir, "exec", namedApp))
		bins, _ := os.ReadDir(filepath.Join(tr.opts.DataDir, "binaries"))
		return os.IsNotExist(err) && len(bins) == 0
	})
	// Left by an app this runner does not know: collected too. Made
	// aside and moved in whole: the runner's resync removes an unknown
	// app's directory made in place before the link is in it, and the
	// link would then fail.
	staged := filepath.Join(t.TempDir(), "gone")
	if err := os.MkdirAll(filepath.Join(staged, hello[:12]), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(tr.opts.DataDir, "binaries", hello), filepath.Join(staged, hello[:12], "gone")); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(tr.opts.DataDir, "exec", "gone")
	if err := os.MkdirAll(filepath.Dir(gone), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, gone); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the links of an unknown app removed", func() bool {
		_, err := os.Lstat(gone)
		return os.IsNotExist(err)
	})
}

func TestSandboxProcessNamedAfterApp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, func(o *Options) { o.Config.ResyncInterval = config.Duration(50 * time.Millisecond) })
	probe := fileDigest(t, probeBin)
	c.deploy(t, namedApp, "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"fork\"]\nstop_timeout = \"200ms\"\n")
	in := tr.wait(t, namedApp, "healthy", allIn(1, state.Healthy))[0]
	// The instance's pid is the launcher's; the app is its child.
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", in.PID)); err != nil || strings.TrimSpace(string(comm)) != sandbox.LauncherName {
		t.Errorf("launcher comm %q (%v), want %q", comm, err, sandbox.LauncherName)
	}
	app := onlyChild(t, in.PID)
	checkNamed(t, tr, app, namedApp, probe)
	// Landlock lets the app execute its binary through the link, again.
	if l := forkedLine(t, tr, namedApp); !strings.HasPrefix(l, "forked ") {
		t.Fatalf("re-exec through argv[0] in the sandbox: %s", l)
	}
	checkNamed(t, tr, onlyChild(t, app), namedApp, probe)

	c.remove(t, namedApp)
	tr.wait(t, namedApp, "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	testutil.Eventually(t, 10*time.Second, "the app's links and binary removed", func() bool {
		_, err := os.Lstat(filepath.Join(tr.opts.DataDir, "exec", namedApp))
		bins, _ := os.ReadDir(filepath.Join(tr.opts.DataDir, "binaries"))
		return os.IsNotExist(err) && len(bins) == 0
	})
}

// A link that cannot be made costs the app its name, never its start.
func TestProcessRunsWithoutItsLink(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	// A file where the links' directory should be: no link can be made.
	if err := os.WriteFile(filepath.Join(tr.opts.DataDir, "exec"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.deploy(t, namedApp, "1.0.0", probeBin, "")
	in := tr.wait(t, namedApp, "healthy", allIn(1, state.Healthy))[0]
	digest := fileDigest(t, probeBin)
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", in.PID))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != digest[:15] {
		t.Errorf("comm %q, want the binary's own name %q", got, digest[:15])
	}
	if !strings.Contains(tr.logs.String(), "binary runs by its digest") {
		t.Errorf("no warning that the binary runs by its digest:\n%s", tr.logs.String())
	}
}
