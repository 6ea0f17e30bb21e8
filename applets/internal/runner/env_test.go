package runner

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// An app that runs a helper by name (exec.Command("sh"), a script's
// commands) finds it as under systemd, which gives every service a PATH;
// one the spec sets is the app's alone.
func TestAppGetsDefaultPATH(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	for app, tc := range map[string]struct{ extra, want string }{
		"default": {`args = ["env"]`, "env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"own":     {"args = [\"env\"]\nenv = { PATH = \"/opt/app/bin\" }", "env PATH=/opt/app/bin"},
	} {
		if paths := envOf(t, c, tr, app, tc.extra, "PATH"); !slices.Equal(paths, []string{tc.want}) {
			t.Errorf("%s: PATH lines %q, want %q", app, paths, tc.want)
		}
	}
}

// A Go app under [resources] limits gets what Go does not derive from
// them itself: under a memory limit a soft limit for its garbage
// collector below it, as narun gives itself in a cgroup; under a CPU
// limit GOMAXPROCS as Go 1.25 derives it from the quota (rounded up, at
// least 2, at most the cores), since in a sandbox Go cannot read its
// cgroup, and Go before 1.25 never did. A value the spec sets is the
// app's own, and an app without a limit gets none.
func TestAppUnderLimitsGetsGoSettings(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("[resources] limits need a cgroup, which needs root")
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	if tr.caps.CgroupVersion == 0 {
		t.Skip("no cgroup hierarchy")
	}
	for app, tc := range map[string]struct{ extra, name, want string }{
		"mem-limited": {"args = [\"env\"]\n[resources]\nmemory = \"64MiB\"", "GOMEMLIMIT", "50331648"},
		"mem-own":     {"args = [\"env\"]\nenv = { GOMEMLIMIT = \"40MiB\" }\n[resources]\nmemory = \"64MiB\"", "GOMEMLIMIT", "40MiB"},
		"cpu-half":    {"args = [\"env\"]\n[resources]\ncpu = 0.5", "GOMAXPROCS", strconv.Itoa(min(runtime.NumCPU(), 2))},
		"cpu-many":    {"args = [\"env\"]\n[resources]\ncpu = 1000", "GOMAXPROCS", strconv.Itoa(runtime.NumCPU())},
		"cpu-own":     {"args = [\"env\"]\nenv = { GOMAXPROCS = \"7\" }\n[resources]\ncpu = 0.5", "GOMAXPROCS", "7"},
		"mem-none":    {`args = ["env"]`, "GOMEMLIMIT", ""},
		"cpu-none":    {`args = ["env"]`, "GOMAXPROCS", ""},
	} {
		lines := envOf(t, c, tr, app, tc.extra, tc.name)
		var want []string
		if tc.want != "" {
			want = []string{"env " + tc.name + "=" + tc.want}
		}
		if !slices.Equal(lines, want) {
			t.Errorf("%s: %s lines %q, want %q", app, tc.name, lines, want)
		}
	}
}

// envOf deploys app, the probe printing its environment, with the spec's
// extra lines, and returns the lines that print the variable name.
func envOf(t *testing.T, c *cluster, tr *testRunner, app, extra, name string) []string {
	t.Helper()
	c.deploy(t, app, "1.0.0", probeBin, extra)
	tr.waitLine(t, app, "probe: ready")
	var lines []string
	for _, l := range tr.lines(app) {
		if strings.HasPrefix(l, "env "+name+"=") {
			lines = append(lines, l)
		}
	}
	return lines
}

// homeLine waits for the line the probe's home mode prints in app and
// returns it, with the directory of the instance that printed it.
func homeLine(t *testing.T, tr *testRunner, app string) (line, dir string) {
	t.Helper()
	in := tr.wait(t, app, "healthy", allIn(1, state.Healthy))[0]
	testutil.Eventually(t, 10*time.Second, app+" printing its home", func() bool {
		i := slices.IndexFunc(tr.lines(app), func(l string) bool { return strings.HasPrefix(l, "home ") })
		if i >= 0 {
			line = tr.lines(app)[i]
		}
		return i >= 0
	})
	return line, filepath.Join(tr.opts.DataDir, "instances", app, in.ID)
}

// An app gets a HOME it may write, and USER and LOGNAME, as systemd gives
// a service run as User=; with mode "exec" its home is the instance
// directory, and it runs as the runner's user. What the spec sets is the
// app's own.
func TestAppGetsHome(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	me, err := user.Current()
	if err != nil {
		t.Skipf("the runner's user has no name to give apps: %v", err)
	}
	c.deploy(t, "homed", "1.0.0", probeBin, `args = ["home"]`)
	line, dir := homeLine(t, tr, "homed")
	if want := fmt.Sprintf("home %s user %s logname %s: <nil>", dir, me.Username, me.Username); line != want {
		t.Errorf("exec mode: %q, want %q", line, want)
	}
	if _, err := os.Stat(filepath.Join(dir, ".probe")); err != nil {
		t.Errorf("the file the app wrote in its home: %v", err)
	}

	c.deploy(t, "own", "1.0.0", probeBin, "args = [\"home\"]\nenv = { HOME = \"/nonexistent\", USER = \"svc\" }")
	if line, _ := homeLine(t, tr, "own"); !strings.HasPrefix(line, "home /nonexistent user svc logname "+me.Username+": ") {
		t.Errorf("with HOME and USER in env: %q", line)
	}
}

// A sandboxed app's home is its instance's data/, at the path it has
// inside the sandbox: the only directory of the instance it may write.
// USER and LOGNAME name its user when it has a name; the uid derived from
// the app's name has none.
func TestSandboxAppGetsHome(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	tests := []struct{ app, extra, user string }{{"homed", "", ""}}
	if _, err := user.Lookup("nobody"); err == nil {
		tests = append(tests, struct{ app, extra, user string }{"nobodys", "[sandbox]\nuser = \"nobody\"\n", "nobody"})
	}
	for _, tc := range tests {
		c.deploy(t, tc.app, "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"home\"]\n"+tc.extra)
		line, dir := homeLine(t, tr, tc.app)
		data := filepath.Join(dir, "data")
		if want := fmt.Sprintf("home %s user %s logname %s: <nil>", data, tc.user, tc.user); line != want {
			t.Errorf("%s: %q, want %q", tc.app, line, want)
		}
		if _, err := os.Stat(filepath.Join(data, ".probe")); err != nil {
			t.Errorf("%s: the file the app wrote in its home: %v", tc.app, err)
		}
	}
}
