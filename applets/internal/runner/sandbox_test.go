package runner

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/sandbox"
)

// sandboxDataDir is a data dir the apps' uids can reach (t.TempDir's
// parent is private to root), outside /tmp, which the sandbox's private
// /tmp hides.
func sandboxDataDir(t testing.TB) string {
	t.Helper()
	base, err := os.MkdirTemp("/var/tmp", "narun-runner-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

// startSandboxRunner is startRunner on a sandboxDataDir, skipping where
// the kernel or the user cannot sandbox.
func startSandboxRunner(t *testing.T, c *cluster, mod func(*Options)) *testRunner {
	t.Helper()
	if !sandbox.Probe().Sandbox {
		t.Skip("sandbox unavailable: needs root and the pid, mount, ipc, uts and net namespaces")
	}
	base := sandboxDataDir(t)
	return startRunner(t, c, func(o *Options) {
		o.DataDir = base
		if mod != nil {
			mod(o)
		}
	})
}

// launcherChild is the app process of a sandboxed instance: the
// launcher's only child.
func launcherChild(t *testing.T, launcher int) int {
	t.Helper()
	var child int
	// Any thread of the launcher may have forked the child, and a child
	// is listed under the thread that forked it.
	testutil.Eventually(t, 5*time.Second, "the launcher's child", func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", launcher))
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
				child, _ = strconv.Atoi(f[0])
				return true
			}
		}
		return false
	})
	return child
}

// appUID is the uid the app process of a sandboxed instance runs as.
func appUID(t *testing.T, launcher int) int {
	t.Helper()
	child := launcherChild(t, launcher)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, _ := strconv.Atoi(strings.Fields(rest)[0])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", child)
	return -1
}

// When the whole device runs out of memory, the OOM killer ends an app
// before the runner: every app process, exec or sandboxed, has a higher
// oom_score_adj than the runner's.
func TestAppsAreTheOOMKillersFirstChoice(t *testing.T) {
	t.Parallel()
	scoreAdj := func(t *testing.T, pid int) string {
		t.Helper()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	// The launcher's own pid is its PID namespace's 1: a write by that
	// number to the host's /proc raised the host's init.
	own, initial := scoreAdj(t, os.Getpid()), scoreAdj(t, 1)
	want := strconv.Itoa(sandbox.AppOOMScoreAdj)
	t.Run("exec", func(t *testing.T) {
		c := newCluster(t, nil)
		tr := startRunner(t, c, nil)
		c.deploy(t, "plain", "1.0.0", probeBin, "")
		in := tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))[0]
		if got := scoreAdj(t, in.PID); got != want {
			t.Errorf("exec instance's oom_score_adj %s, want %s", got, want)
		}
	})
	t.Run("sandbox", func(t *testing.T) {
		c := newCluster(t, nil)
		tr := startSandboxRunner(t, c, nil)
		c.deploy(t, "boxed", "1.0.0", probeBin, "mode = \"sandbox\"\n")
		in := tr.wait(t, "boxed", "healthy", allIn(1, state.Healthy))[0]
		if got := scoreAdj(t, launcherChild(t, in.PID)); got != want {
			t.Errorf("sandboxed app's oom_score_adj %s, want %s", got, want)
		}
	})
	if got := scoreAdj(t, os.Getpid()); got != own {
		t.Errorf("the runner's own oom_score_adj went from %s to %s", own, got)
	}
	if got := scoreAdj(t, 1); got != initial {
		t.Errorf("the oom_score_adj of the host's init went from %s to %s", initial, got)
	}
}

// TestExecAppStartsWithItsOOMScore: an exec instance runs with
// sandbox.AppOOMScoreAdj from its first instruction, in every start, with
// a cgroup of its own and without. cat reads its score at once: when the
// runner set it just after the start, some of 500 cats read the runner's,
// so the two cases start 250 each (each start is one of narun's test
// binary, 100 ms under the race detector).
func TestExecAppStartsWithItsOOMScore(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat to read its own oom_score_adj at once")
	}
	want := strconv.Itoa(sandbox.AppOOMScoreAdj)
	if b, err := os.ReadFile("/proc/self/oom_score_adj"); err != nil || strings.TrimSpace(string(b)) == want {
		t.Skipf("the runner's own oom_score_adj is the app's (%v): a start cannot show which one the app read", err)
	}
	c := newCluster(t, nil)
	// Not run: what a runner does at its start (killing what earlier ones
	// left, removing their cgroups) would race with these starts.
	r, err := New(Options{Config: config.Runner{NodeID: node}, DataDir: t.TempDir(), Conn: c.nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if r.caps.CgroupVersion > 0 {
		t.Cleanup(func() {
			if err := sandbox.RemoveScope(r.cgroupScope); err != nil {
				t.Errorf("remove the runner's cgroups: %v", err)
			}
		})
	}
	for _, cgroup := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgroup=%v", cgroup), func(t *testing.T) {
			if cgroup && r.caps.CgroupVersion == 0 {
				t.Skip("no cgroup hierarchy")
			}
			if !cgroup {
				// As on a node that cannot make one.
				caps := r.caps
				r.caps.CgroupVersion = 0
				t.Cleanup(func() { r.caps = caps })
			}
			const starts = 250
			read := map[string]int{}
			dir := t.TempDir()
			for i := range starts {
				inst := InstanceLaunch{App: "cat", Node: node, Instance: strconv.Itoa(i), Mode: "exec", Path: cat,
					Args: []string{"/proc/self/oom_score_adj"}, Dir: dir}
				p, err := r.execCommand(context.Background(), inst)
				if err != nil {
					t.Fatal(err)
				}
				var out strings.Builder
				p.Cmd.Stdout, p.Cmd.Stderr = &out, &out
				start, wait := p.Start, p.Wait
				if start == nil {
					start = p.Cmd.Start
				}
				if wait == nil {
					wait = p.Cmd.Wait
				}
				if err := start(); err != nil {
					t.Fatalf("start %d: %v", i, err)
				}
				err = wait()
				if p.Release != nil {
					p.Release()
				}
				if err != nil {
					t.Fatalf("start %d: %v\n%s", i, err, out.String())
				}
				read[strconv.Quote(strings.TrimSpace(out.String()))]++
			}
			if read[strconv.Quote(want)] != starts {
				t.Fatalf("of %d starts, cat read its oom_score_adj as %v, want %s in all", starts, read, want)
			}
		})
	}
}

func TestSandboxConsumerThroughGateway(t *testing.T) {
	t.Parallel()
	// With network "none" the consumer reaches NATS only through the
	// bridge, at the NARUN_NATS_URL the runner rewrote.
	for _, network := range []string{"host", "none"} {
		t.Run(network, func(t *testing.T) {
			c := newCluster(t, nil)
			tr := startSandboxRunner(t, c, nil)
			gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "hello"})
			c.deploy(t, "hello", "1.0.0", helloBin, fmt.Sprintf("mode = \"sandbox\"\nstop_timeout = \"1h\"\n"+
				"[sandbox]\nnetwork = %q\n[[routes]]\npath = \"/hello/\"\n", network))
			if body := postHello(t, gw, "sandbox"); !strings.Contains(body, "Hello, sandbox") {
				t.Errorf("through the gateway: %s", body)
			}
			in := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]
			if want := sandbox.Probe().LandlockEnforced; in.LandlockABI == nil || *in.LandlockABI != want {
				t.Errorf("instance reports Landlock ABI %v, want %d", in.LandlockABI, want)
			}
			if uid := appUID(t, in.PID); uid != int(sandbox.AppID("hello")) {
				t.Errorf("app runs as uid %d, want the app's own %d", uid, sandbox.AppID("hello"))
			}

			srv := httptest.NewServer(tr.AdminHandler())
			defer srv.Close()
			metrics := get(t, srv.URL+"/metrics")
			prefix := fmt.Sprintf(`narun_runner_instance_resident_memory_bytes{app="hello",instance="%s",node="%s"} `, in.ID, node)
			i := strings.Index(metrics, prefix)
			if i < 0 {
				t.Fatalf("metrics lack the RSS of %s:\n%s", in.ID, metrics)
			}
			rss, _ := strconv.ParseFloat(strings.Fields(metrics[i+len(prefix):])[0], 64)
			if rss <= 0 {
				t.Errorf("cgroup RSS of %s is %v", in.ID, rss)
			}

			// A stop timeout of an hour: only a SIGTERM that reaches the
			// app through the launcher ends it within the wait.
			c.remove(t, "hello")
			tr.wait(t, "hello", "gone", func(l []state.Instance) bool { return len(l) == 0 })
			if alive(in.PID) {
				t.Errorf("launcher %d still alive", in.PID)
			}

			// A runner that stops leaves no cgroup of its own behind.
			scopes := func() []string {
				v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + sandbox.CgroupParent + "/" + tr.cgroupScope)
				v2, _ := filepath.Glob("/sys/fs/cgroup/" + sandbox.CgroupParent + "/" + tr.cgroupScope)
				return append(v1, v2...)
			}
			if len(scopes()) == 0 {
				t.Fatal("no cgroup scope of the runner while it runs")
			}
			tr.stop()
			if left := scopes(); len(left) > 0 {
				t.Errorf("cgroups left after the runner stopped: %v", left)
			}
		})
	}
}

// An app in a sandbox without network calls another app's service with
// consumer.Transport, on the connection the runner's bridge gives it: the
// gateway's route leads to front, which asks hello.
func TestSandboxedAppCallsAnotherApp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "front"})
	c.deploy(t, "hello", "1.0.0", helloBin, "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n")
	c.deploy(t, "front", "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"call\", \"hello\"]\n[sandbox]\nnetwork = \"none\"\n")
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	tr.wait(t, "front", "healthy", allIn(1, state.Healthy))
	if body := postHello(t, gw, "chain"); !strings.Contains(body, "Hello, chain") {
		t.Errorf("through front to hello: %s", body)
	}
}

func TestSandboxHTTPAppWithoutNetwork(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "plain"})
	// A fixed port inside its own network namespace: nothing on the host
	// can be in the way, nor reach it but through the bridge. (Ports
	// below 1024 need a capability the app does not have.)
	c.deploy(t, "plain", "1.0.0", helloBin, "mode = \"sandbox\"\nargs = [\"--http\", \"127.0.0.1:8080\"]\n"+
		"[sandbox]\nnetwork = \"none\"\n[http]\nport = 8080\n[[routes]]\npath = \"/hello/\"\n")
	tr.wait(t, "plain", "healthy", allIn(1, state.Healthy))
	if body := postHello(t, gw, "bridge"); !strings.Contains(body, "Hello, bridge") {
		t.Errorf("body %s", body)
	}
}

// The tcp check of an app in a network of its own goes through the
// sandbox's bridge, whose launcher accepts before it connects inside: an
// app that does not listen must not pass for healthy (TestSandboxHTTPAppWithoutNetwork
// has one that does).
func TestSandboxTCPCheckNeedsAListener(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	c.deploy(t, "deaf", "1.0.0", probeBin, "mode = \"sandbox\"\n"+
		"[sandbox]\nnetwork = \"none\"\n[http]\nport = 8080\n[health]\ntype = \"tcp\"\ninterval = \"100ms\"\nstart_grace = \"100ms\"\n")
	var healthy bool
	tr.wait(t, "deaf", "its check failing", func(l []state.Instance) bool {
		healthy = healthy || slices.ContainsFunc(l, func(in state.Instance) bool { return in.Healthy })
		return len(l) == 1 && strings.Contains(l[0].Reason, "nothing listens on 127.0.0.1:8080 inside the sandbox")
	})
	if healthy {
		t.Error("an app that listens on nothing was healthy")
	}
}

// An app name of the longest length allowed makes the paths of the
// instance's bridge sockets longer than a unix socket address holds (108
// bytes): they must work all the same, both ways.
func TestSandboxLongAppName(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	gw := startGateway(t, c, config.Route{Path: "/hello/", Service: "hello"})
	long := strings.Repeat("a", spec.MaxNameLen)
	c.deploy(t, long, "1.0.0", helloBin, "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n[[routes]]\npath = \"/hello/\"\nservice = \"hello\"\n")
	in := tr.wait(t, long, "healthy through the NATS bridge", allIn(1, state.Healthy))[0]
	sock := filepath.Join(tr.instancesDir(), long, in.ID, "run", "nats.sock")
	if len(sock) < 108 {
		t.Fatalf("socket path %s is %d bytes: not longer than a socket address", sock, len(sock))
	}
	if body := postHello(t, gw, "nats"); !strings.Contains(body, "Hello, nats") {
		t.Errorf("through the NATS bridge: body %s", body)
	}
	c.deploy(t, long, "1.0.1", helloBin, "mode = \"sandbox\"\nargs = [\"--http\", \"127.0.0.1:8080\"]\n"+
		"[sandbox]\nnetwork = \"none\"\n[http]\nport = 8080\n[[routes]]\npath = \"/hello/\"\nservice = \"hello\"\n")
	tr.wait(t, long, "healthy through the HTTP bridge", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == "1.0.1" && l[0].State == state.Healthy
	})
}

func TestSandboxOOMRestartsOnlyThatApp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hog")
	tr := startSandboxRunner(t, c, nil)
	c.deploy(t, "calm", "1.0.0", probeBin, "mode = \"sandbox\"\n")
	calm := tr.wait(t, "calm", "healthy", allIn(1, state.Healthy))[0]
	c.deploy(t, "hog", "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"alloc\"]\n"+
		"[resources]\nmemory = \"32MiB\"\n[restart]\ninitial_backoff = \"10ms\"\n")
	tr.wait(t, "hog", "a restart", func(l []state.Instance) bool { return len(l) == 1 && l[0].Restarts >= 1 })
	// The reason names the limit: "oom" alone leaves the app's developer to
	// guess whether the app, its limit or the node ran out.
	const oom = "oom: killed at its memory limit of 32MiB ([resources] memory)"
	testutil.Eventually(t, 10*time.Second, "an oom event", func() bool {
		return slices.ContainsFunc(ev.list(), func(e state.Event) bool { return e.State == state.Crashed && e.Reason == oom })
	})
	now := tr.of("calm")
	if len(now) != 1 || now[0].PID != calm.PID || now[0].Restarts != 0 || now[0].State != state.Healthy {
		t.Errorf("calm app disturbed by the hog: %+v -> %+v", calm, now)
	}
}

func TestSandboxConfinesFilesAndDeliversSecrets(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	const value = "sandboxed-secret-value"
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", value))
	tr := startSandboxRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	// /etc/passwd is world-readable: only Landlock keeps the app out.
	c.deploy(t, "snoop", "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"cat\", \"/etc/passwd\"]\n")
	c.deploy(t, "vault", "1.0.0", probeBin, "mode = \"sandbox\"\nargs = [\"secret\"]\n[sandbox]\nnetwork = \"none\"\n"+
		"[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n[[secrets]]\nname = \"token\"\nfile = \"conf/token\"\n")
	tr.wait(t, "snoop", "healthy", allIn(1, state.Healthy))
	tr.wait(t, "vault", "healthy", allIn(1, state.Healthy))
	testutil.Eventually(t, 10*time.Second, "the probe's verdict on /etc/passwd", func() bool {
		return slices.ContainsFunc(tr.lines("snoop"), func(l string) bool { return strings.HasPrefix(l, "cat ") })
	})
	for _, l := range tr.lines("snoop") {
		if strings.HasPrefix(l, "cat ") && !strings.HasPrefix(l, "cat error") {
			t.Errorf("sandboxed app read /etc/passwd: %.40s", l)
		}
	}
	sum := sha256.Sum256([]byte(value))
	want := []string{fmt.Sprintf("env digest %x", sum), fmt.Sprintf("file digest %x mode 400", sum)}
	testutil.Eventually(t, 10*time.Second, "digest lines", func() bool {
		lines := tr.lines("vault")
		return slices.Contains(lines, want[0]) && slices.Contains(lines, want[1])
	})
}

func TestSandboxSetupErrorFails(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	c.deploy(t, "lost", "1.0.0", probeBin, "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/no/such/dir\"\nmode = \"r\"\n")
	in := tr.wait(t, "lost", "failed", allIn(1, state.Failed))[0]
	if !strings.Contains(in.Reason, "landlock: path /no/such/dir") || in.Restarts != 0 {
		t.Errorf("instance %+v: want failed at once with the launcher's reason", in)
	}
}

func TestSandboxIdentity(t *testing.T) {
	t.Parallel()
	own := sandbox.AppID("web")
	for _, tc := range []struct {
		in        spec.Sandbox
		uid, gid  uint32
		root, bad bool
	}{
		{in: spec.Sandbox{}, uid: own, gid: own},
		{in: spec.Sandbox{User: "root"}, uid: 0, gid: 0, root: true},
		{in: spec.Sandbox{User: "1234"}, uid: 1234, gid: 1234},
		{in: spec.Sandbox{User: "1234", Group: "99"}, uid: 1234, gid: 99},
		{in: spec.Sandbox{Group: "root"}, bad: true},
		{in: spec.Sandbox{User: "1234", Group: "0"}, bad: true},
		{in: spec.Sandbox{User: "root", Group: "root"}, uid: 0, gid: 0, root: true},
		{in: spec.Sandbox{User: "no-such-user-here"}, bad: true},
		{in: spec.Sandbox{User: "0"}, uid: 0, gid: 0, root: true},
	} {
		uid, gid, root, err := sandboxIdentity("web", tc.in)
		if (err != nil) != tc.bad || err == nil && (uid != tc.uid || gid != tc.gid || root != tc.root) {
			t.Errorf("%+v: uid %d gid %d root %v err %v, want %d %d %v bad %v", tc.in, uid, gid, root, err, tc.uid, tc.gid, tc.root, tc.bad)
		}
	}
}

// A user given by number brings its primary group, as its name does, when
// the node knows it: gid = uid would be another group (uid 6 is man on
// Debian, gid 6 is disk).
func TestSandboxNumericUserGetsItsPrimaryGroup(t *testing.T) {
	t.Parallel()
	var u *user.User
	for _, name := range []string{"man", "sync", "games", "lp", "mail", "news"} {
		if c, err := user.Lookup(name); err == nil && c.Uid != c.Gid {
			u = c
			break
		}
	}
	if u == nil {
		t.Skip("no user here whose uid and primary gid differ")
	}
	_, gid, _, err := sandboxIdentity("web", spec.Sandbox{User: u.Uid})
	if err != nil || strconv.Itoa(int(gid)) != u.Gid {
		t.Errorf("user = %q (%s): gid %d, %v; want its primary group %s", u.Uid, u.Username, gid, err, u.Gid)
	}
}

// A name other than "root" that is uid 0 on the node (an alias such as
// toor) is refused: only user = "root" runs as root, and a deploy cannot
// see what a name is on a node. The alias is given in a mount namespace
// of this thread's own, over a copy of /etc/passwd.
func TestSandboxUserAliasOfRootRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, for a mount namespace")
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	alias := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(alias, append(passwd, "toor:x:0:0:alias:/root:/bin/sh\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: unshare gave the thread a working directory of
		// its own, which setns sets to /, so the thread ends with the
		// goroutine. But for the main thread, which Go keeps: that one
		// goes back to the test's mount namespace first, or
		// /proc/self/mountinfo, the main thread's, would miss every later
		// mount of the tests.
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open this thread's mount namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- fmt.Errorf("unshare: %w", err)
			return
		}
		defer unix.Setns(home, unix.CLONE_NEWNS)
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		if err := unix.Mount(alias, "/etc/passwd", "", unix.MS_BIND, ""); err != nil {
			done <- fmt.Errorf("bind the alias: %w", err)
			return
		}
		if u, err := user.Lookup("toor"); err != nil || u.Uid != "0" {
			done <- fmt.Errorf("alias not seen: %v, %v", u, err)
			return
		}
		uid, _, root, err := sandboxIdentity("web", spec.Sandbox{User: "toor"})
		if err == nil {
			done <- fmt.Errorf("user = \"toor\" runs as uid %d, root %v; want it refused", uid, root)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNATSTarget(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":              "127.0.0.1:4222",
		"nats://a:1,nats://b:2":              "a:1",
		"nats://user:pw@10.0.0.1":            "10.0.0.1:4222",
		"tls://nats.example.com:7422,x:4222": "nats.example.com:7422",
	} {
		if got := natsTarget(in); got != want {
			t.Errorf("natsTarget(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkGatewayThroughput compares requests through the gateway to a
// hello consumer run as a plain process, inside the sandbox, and inside
// the sandbox without network (its NATS connection through the bridge).
func BenchmarkGatewayThroughput(b *testing.B) {
	for _, mode := range []struct{ name, extra string }{
		{"exec", ""},
		{"sandbox", "mode = \"sandbox\"\n"},
		{"sandbox-network-none", "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			c := newCluster(b, nil)
			var tr *testRunner
			if mode.extra != "" {
				if !sandbox.Probe().Sandbox {
					b.Skip("sandbox unavailable")
				}
				base := sandboxDataDir(b)
				tr = startRunner(b, c, func(o *Options) { o.DataDir = base })
			} else {
				tr = startRunner(b, c, nil)
			}
			gw := startGateway(b, c, config.Route{Path: "/hello/", Service: "hello"})
			c.deploy(b, "hello", "1.0.0", helloBin, mode.extra+"[[routes]]\npath = \"/hello/\"\n")
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			post := func() bool {
				resp, err := client.Post(gw+"/hello/", "application/json", strings.NewReader(`{"name":"bench"}`))
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode == http.StatusOK
			}
			deadline := time.Now().Add(30 * time.Second)
			for !post() {
				if time.Now().After(deadline) {
					b.Fatalf("hello never answered; runner log:\n%s", tr.logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !post() {
						b.Error("request failed")
						return
					}
				}
			})
		})
	}
}

// A sandboxed app with the tmp preset (a default) on a runner whose data
// dir lies under /tmp fails for good, saying why: the sandbox's own check
// of its config refuses an instance dir the preset would hide.
func TestSandboxedAppUnderTmpFailsForGood(t *testing.T) {
	t.Parallel()
	if !sandbox.Probe().Sandbox {
		t.Skip("sandbox unavailable: needs root and the pid, mount, ipc, uts and net namespaces")
	}
	base, err := os.MkdirTemp("/tmp", "narun-runner-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// Reachable by the app's uid, so that only /tmp stands in the way.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) { o.DataDir = base })
	c.deploy(t, "boxed", "1.0.0", probeBin, "mode = \"sandbox\"\n")
	in := tr.wait(t, "boxed", "failed", allIn(1, state.Failed))[0]
	if !strings.Contains(in.Reason, "is under /tmp") || in.Restarts != 0 {
		t.Errorf("reason %q after %d restarts, want one naming /tmp, at once", in.Reason, in.Restarts)
	}
}

// An app running as root reads every root-owned file a grant reaches: a
// grant holding the data dir gave it signing.key, with which it signed a
// spec of mode "exec" that every node trusting the key ran as root.
func TestSandboxRootGrantOfTheDataDirRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	c.deploy(t, "reader", "1.0.0", probeBin, "mode = \"sandbox\"\n[sandbox]\nuser = \"root\"\n[[sandbox.paths]]\npath = \"/\"\nmode = \"r\"\n")
	in := tr.wait(t, "reader", "failed", allIn(1, state.Failed))[0]
	if !strings.Contains(in.Reason, "signing.key") || in.Restarts != 0 {
		t.Errorf("instance %+v: want failed at once, naming signing.key", in)
	}
}

// A root app granted a directory that holds narun's own files finds those
// empty, and the rest of the directory as it is: granted /etc, it read
// narun.toml's NATS passwords and the secrets key beside it, with which it
// could log in as the runner or decrypt every app's secrets. The node's
// signing key is hidden with them.
func TestSandboxHidesNarunsFiles(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	etc := sandboxDataDir(t)
	conf, key, other := filepath.Join(etc, "narun.toml"), filepath.Join(etc, "signing.key"), filepath.Join(etc, "app.conf")
	for file, content := range map[string]string{conf: "[nats]\npassword = \"s3cret\"\n", key: "SUAKEY", other: "visible"} {
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tr := startSandboxRunner(t, c, func(o *Options) {
		o.Hidden = []string{conf, filepath.Join(etc, "missing.key")}
		o.SigningKeyFile = key
	})
	for app, file := range map[string]string{"conf": conf, "key": key, "other": other} {
		c.deploy(t, app, "1.0.0", probeBin, fmt.Sprintf("mode = \"sandbox\"\nargs = [\"cat\", %q]\n[sandbox]\nuser = \"root\"\n[[sandbox.paths]]\npath = %q\nmode = \"r\"\n", file, etc))
	}
	for app, want := range map[string]string{"conf": `cat "" mode 666`, "key": `cat "" mode 666`, "other": `cat "visible" mode 600`} {
		testutil.Eventually(t, 20*time.Second, app+" as the sandboxed app reads it", func() bool {
			return slices.Contains(tr.lines(app), want)
		})
	}
	if b, err := os.ReadFile(conf); err != nil || !strings.Contains(string(b), "s3cret") {
		t.Errorf("the host's %s reads %q (%v) after the app ran", conf, b, err)
	}
}
