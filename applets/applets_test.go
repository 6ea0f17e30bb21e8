package applets_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

// The test binary acts as narun when this variable is set, so symlinks to it
// exercise the real argv[0] dispatch.
const asNarun = "NARUN_TEST_AS_NARUN"

func TestMain(m *testing.M) {
	// The runner starts exec apps as the exec-app applet of
	// /proc/self/exe, this test binary, with the app's environment.
	if len(os.Args) > 1 && os.Args[1] == sandbox.ExecApplet {
		sandbox.ExecAppMain(os.Args[2:])
	}
	if os.Getenv(asNarun) == "1" {
		os.Exit(applets.Main(os.Args, applets.StdIO()))
	}
	if marker := os.Getenv(asHeldApp); marker != "" {
		testutil.HeldAppMain(marker)
	}
	os.Exit(m.Run())
}

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = applets.Main(args, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

func TestDispatchInProcess(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string
		notInError string
	}{
		{"unknown applet", []string{"narun", "bogus"}, 2, "", "unknown applet \"bogus\"", ""},
		{"no applet", []string{"narun"}, 2, "", "applets:", ""},
		{"flag before the applet", []string{"narun", "--config", "x", "up"}, 2, "", "narun: --config before the applet: flags follow it (narun APPLET --config ...)", "unknown applet"},
		{"help", []string{"narun", "--help"}, 0, "applets:", "", ""},
		{"help lists aliases", []string{"narun", "help"}, 0, "runner (node-runner)", "", ""},
		{"launcher is hidden", []string{"narun", "bogus"}, 2, "", "version", "launcher"},
		{"exec-app is hidden", []string{"narun", "bogus"}, 2, "", "version", "exec-app"},
		{"version", []string{"narun", "version"}, 0, runtime.GOOS + "/" + runtime.GOARCH, "", ""},
		{"version json", []string{"narun", "version", "--json"}, 0, `"go_version":"` + runtime.Version(), "", ""},
		{"version help", []string{"narun", "version", "--help"}, 0, "usage: narun version [--json]", "", ""},
		{"version -h", []string{"narun", "version", "-h"}, 0, "usage: narun version [--json]", "", ""},
		{"version flag error", []string{"narun", "version", "--bogus"}, 2, "", "usage: narun version [--json]", ""},
		{"version extra argument", []string{"narun", "version", "now"}, 2, "", "version takes no arguments, got 1", ""},
		{"--version before any applet", []string{"narun", "--version"}, 0, runtime.GOOS + "/" + runtime.GOARCH, "", ""},
		{"-v before any applet", []string{"narun", "-v"}, 0, runtime.GOOS + "/" + runtime.GOARCH, "", ""},
		{"--version of an applet", []string{"narun", "gw", "--version"}, 0, runtime.GOOS + "/" + runtime.GOARCH, "", ""},
		{"--version of a link", []string{"/usr/bin/narun-ctl", "--version"}, 0, runtime.GOOS + "/" + runtime.GOARCH, "", ""},
		{"install help", []string{"narun", "install", "--help"}, 0, "usage: narun install [DIR]", "", ""},
		{"install flag error", []string{"narun", "install", "--bogus"}, 2, "", "usage: narun install [DIR]", ""},
		{"by argv0 alias", []string{"/nowhere/narun-nats", "--help"}, 0, "embedded NATS server", "", ""},
		{"by argv0 applet name", []string{"nats", "--help"}, 0, "embedded NATS server", "", ""},
		{"applet flag error is usage", []string{"narun", "nats", "--no-such-flag"}, 2, "", "no-such-flag", ""},
		{"unknown binary name falls back to argv1", []string{"/x/narun-linux-amd64", "version"}, 0, "narun ", "", ""},
		{"help names the command as typed", []string{"/usr/bin/narun", "ctl", "deploy", "--help"}, 0, "narun ctl deploy [command options]", "", ""},
		{"help names the link as typed", []string{"/usr/bin/narun-gw", "--help"}, 0, "narun-gw [options]", "", ""},
		{"error names the command as typed", []string{"narun", "ctl", "app", "status"}, 2, "", "narun ctl: missing NAME (usage: narun ctl app status NAME)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout %q does not contain %q", out, tc.stdout)
			}
			if !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", errs, tc.stderr)
			}
			if tc.notInError != "" && strings.Contains(errs+out, tc.notInError) {
				t.Errorf("output mentions %q: %s%s", tc.notInError, out, errs)
			}
		})
	}
}

// runLinked execs the test binary through a symlink named name in dir.
func runLinked(t *testing.T, path string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), asNarun+"=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", path, err)
	}
	return code, string(out)
}

func TestDispatchThroughSymlinks(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	narun := link("narun", self)
	natsLink := link("narun-nats", self)
	chained := link("my-nats", natsLink) // a link to a link: the last link names the applet
	other := link("something-else", self)
	versioned := t.TempDir()
	current := filepath.Join(versioned, "narun")
	if err := os.Symlink(self, current); err != nil {
		t.Fatal(err)
	}
	gwViaCurrent := filepath.Join(versioned, "narun-gw")
	if err := os.Symlink("narun", gwViaCurrent); err != nil {
		t.Fatal(err)
	}
	// A relative link reached through a symlinked directory: its ".."
	// is the real directory's parent, not the link's path's.
	tree := t.TempDir()
	for _, d := range []string{"real/bin", "real/lib"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{
		{"real/lib/narun-nats", self},
		{"real/bin/my-nats", "../lib/narun-nats"},
		{"bin", "real/bin"},
	} {
		if err := os.Symlink(l[1], filepath.Join(tree, l[0])); err != nil {
			t.Fatal(err)
		}
	}
	viaLinkedDir := filepath.Join(tree, "bin", "my-nats")
	ctlLink := link("narun-ctl", self)

	for _, tc := range []struct {
		name string
		path string
		args []string
		code int
		want string
	}{
		{"alias link", natsLink, []string{"--help"}, 0, "embedded NATS server"},
		{"chain resolves to last link", chained, []string{"--help"}, 0, "embedded NATS server"},
		{"alias link to a link to the binary", gwViaCurrent, []string{"--help"}, 0, "--admin-listen"},
		{"plain name with applet arg", narun, []string{"nats", "--help"}, 0, "embedded NATS server"},
		{"unknown link name uses argv1", other, []string{"version"}, 0, runtime.GOARCH},
		{"bogus applet", narun, []string{"bogus"}, 2, "applets:"},
		{"chain through a linked directory", viaLinkedDir, []string{"--help"}, 0, "The [nats] table of narun.toml"},
		// The hidden launcher is narun's first argument only, not an applet's.
		{"applet's first argument is not the launcher", ctlLink, []string{"launcher"}, 2, "launcher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runLinked(t, tc.path, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d (want %d), output %q should contain %q", code, tc.code, out, tc.want)
			}
		})
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "narun")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	created, err := applets.Install(bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"narun-nats", "narun-gw", "node-runner", "narun-ctl"}
	if len(created) != len(want) {
		t.Fatalf("created %v, want %v", created, want)
	}
	for _, name := range want {
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || target != "narun" {
			t.Errorf("%s -> %q (%v), want a relative link to narun", name, target, err)
		}
	}
	again, err := applets.Install(bin, dir)
	if err != nil || len(again) != 0 {
		t.Fatalf("second install changed %v (err %v); want nothing", again, err)
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "narun-gw"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = applets.Install(bin, other)
	if err == nil || !strings.Contains(err.Error(), "not a symlink") {
		t.Fatalf("install over a regular file: err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(other, "narun-gw")); string(b) != "precious" {
		t.Fatal("install overwrote a regular file")
	}
	if _, err := os.Lstat(filepath.Join(other, "narun-nats")); !os.IsNotExist(err) {
		t.Errorf("install made narun-nats beside a file in the way (lstat: %v); want no link at all", err)
	}
	if err := os.Remove(filepath.Join(other, "narun-gw")); err != nil {
		t.Fatal(err)
	}
	if _, err := applets.Install(bin, other); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(other, "narun-nats")); err != nil || target != bin {
		t.Errorf("link in another dir should be absolute: %q %v", target, err)
	}
}

// An install that finds every link in place says so, link by link: an
// operator checking a device gets a confirmation, not silence.
func TestInstallAgainConfirms(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := run("narun", "install", dir); code != 0 {
		t.Fatalf("install: exit %d: %s", code, errs)
	}
	code, out, errs := run("narun", "install", dir)
	if code != 0 {
		t.Fatalf("install again: exit %d: %s", code, errs)
	}
	for _, name := range []string{"narun-nats", "narun-gw", "node-runner", "narun-ctl"} {
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, name) + " -> " + target + " (already there)\n"; !strings.Contains(out, want) {
			t.Errorf("install again printed %q, want a line %q", out, want)
		}
	}
}

// install's errors name the directory quoted, once prefixed with the
// command, and an empty one is a usage error.
func TestInstallDirectoryErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		code      int
		stderr    string
	}{
		{"missing", missing, 1, fmt.Sprintf("narun install: directory %q does not exist\n", missing)},
		{"not a directory", file, 1, fmt.Sprintf("narun install: %q is not a directory\n", file)},
		{"empty", "", 2, "narun install: empty directory name: give DIR, or none for the binary's directory\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run("narun", "install", tc.dir)
			if code != tc.code || errs != tc.stderr {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, errs, tc.code, tc.stderr)
			}
		})
	}
	code, _, errs := run("narun", "install", "a", "b")
	if want := "narun install: at most one directory, got 2: \"a\" \"b\"\n"; code != 2 || errs != want {
		t.Errorf("two directories: exit %d, stderr %q; want 2, %q", code, errs, want)
	}
}

// Install makes each link under a temporary name and renames it into
// place; a file of the user's that happens to have a name like that one
// must survive, and nothing of Install's may be left beside the links.
func TestInstallLeavesOtherFilesAlone(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "narun")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The name Install used for its temporary link up to now.
	precious := filepath.Join(dir, "narun-gw.narun-tmp")
	if err := os.WriteFile(precious, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := applets.Install(bin, dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "precious" {
		t.Errorf("%s after install: %q, %v; want the user's file untouched", precious, b, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"narun", "narun-ctl", "narun-gw", "narun-gw.narun-tmp", "narun-nats", "node-runner"}
	if !slices.Equal(names, want) {
		t.Errorf("files after install: %v, want %v", names, want)
	}

	// A directory is refused as a regular file is, and left as it was.
	other := t.TempDir()
	if err := os.Mkdir(filepath.Join(other, "narun-gw"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := applets.Install(bin, other); err == nil || !strings.Contains(err.Error(), "not a symlink") {
		t.Fatalf("install over a directory: err = %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(other, "narun-gw")); err != nil || !fi.IsDir() {
		t.Errorf("install changed the directory in the way: %v %v", fi, err)
	}
}

// TestFatalErrorIsALogLine makes an applet fail at start with JSON logging
// chosen (by flag or by the file): its error must be a JSON log line of
// level ERROR, as every other line, so a log shipper parses it; with text
// logging it stays the plain "narun gw: ..." line.
func TestFatalErrorIsALogLine(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	listen := "listen = \"" + testutil.FreeAddr(t) + "\"\nadmin_listen = \"" + testutil.FreeAddr(t) + "\"\n"
	route := "[[gateway.routes]]\npath = \"/a/\"\nservice = \"a\"\n"
	unknown := write("unknown.toml", "[gateway]\nlistn = \":1\"\n")
	duplicate := write("duplicate.toml", "[gateway]\n"+listen+route+route)
	jsonInFile := write("json.toml", "log_format = \"json\"\n[gateway]\n"+listen+route+route)
	jsonInBroken := write("broken.toml", "log_format = \"json\"\n[gateway\n"+listen)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--log-format", "json", "--config", unknown}, `unknown key "gateway.listn"`},
		{"duplicate route", []string{"--log-format", "json", "--config", duplicate}, "duplicate route"},
		{"json from the file", []string{"--config", jsonInFile}, "duplicate route"},
		{"json from a file that does not parse", []string{"--config", jsonInBroken}, "to end table name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(append([]string{"narun", "gw", "--nats-url", srv.ClientURL()}, tc.args...)...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			found := false
			for line := range strings.Lines(errs) {
				var rec struct {
					Level, Msg, Err string
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("not a JSON line: %q (%v)", line, err)
					continue
				}
				if rec.Level == "ERROR" && strings.Contains(rec.Err, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no ERROR line with %q in err:\n%s", tc.want, errs)
			}
		})
	}
	t.Run("text", func(t *testing.T) {
		code, _, errs := run("narun", "gw", "--nats-url", srv.ClientURL(), "--config", unknown)
		if want := "narun gw: " + unknown + `:2: unknown key "gateway.listn" (did you mean "gateway.listen"?)` + "\n"; code != 1 || errs != want {
			t.Errorf("exit code %d, stderr %q; want 1, %q", code, errs, want)
		}
	})
}

// narun install run through a link to the binary (narun -> narun-1.2, the
// link an upgrade moves) puts the applet links beside that link and points
// them at it, so that they follow it to the next version.
func TestInstallBesideTheInvokedLink(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	narun := filepath.Join(dir, "narun")
	if err := os.Symlink(self, narun); err != nil {
		t.Fatal(err)
	}
	code, out := runLinked(t, narun, "install")
	if code != 0 {
		t.Fatalf("install: exit %d: %s", code, out)
	}
	gw := filepath.Join(dir, "narun-gw")
	if !strings.Contains(out, gw+" -> narun\n") {
		t.Errorf("install printed %q, want %s -> narun, what the link holds", out, gw)
	}
	if target, err := os.Readlink(gw); err != nil || target != "narun" {
		t.Fatalf("%s -> %q (%v), want a link to narun beside it", gw, target, err)
	}
	if code, out := runLinked(t, gw, "--help"); code != 0 || !strings.Contains(out, "--admin-listen") {
		t.Errorf("narun-gw --help: exit %d: %s", code, out)
	}
}

// With --log-format json on the command line, or log_format = "json" in
// the configuration file the command line names, a wrong flag or argument,
// which fails before the configuration is read, is a JSON log line too.
func TestUsageErrorIsALogLine(t *testing.T) {
	jsonConfig := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(jsonConfig, []byte("log_format = \"json\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"narun", "gw", "--log-format=json", "--bogus"}, "bogus"},
		{[]string{"narun", "up", "--log-format", "json", "extra"}, `unexpected argument \"extra\"`},
		{[]string{"narun", "nats", "-log-format", "json", "--listen"}, "listen"},
		{[]string{"narun", "gw", "--config", jsonConfig, "--bogus"}, "bogus"},
		{[]string{"narun", "runner", "--config=" + jsonConfig, "extra"}, `unexpected argument \"extra\"`},
		{[]string{"narun", "ctl", "--config", jsonConfig, "app", "bogus"}, `unknown command \"bogus\"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errs := run(tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if errs == "" {
				t.Fatal("nothing on stderr")
			}
			for line := range strings.Lines(errs) {
				var rec struct{ Level string }
				if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level != "ERROR" || !strings.Contains(line, tc.want) {
					t.Errorf("want one JSON ERROR line naming %q, got %q", tc.want, line)
				}
			}
		})
	}
}

// Ctrl-C on a deploy --wait stops the following, not the rollout: the
// spec is stored and the runners roll it out. The exit must not be 4,
// which tells a script that the rollout failed or timed out, and the
// error must say what happened instead of "context canceled".
func TestInterruptedWaitIsNoFailedRollout(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	spec := filepath.Join(dir, "ghost.toml")
	if err := os.WriteFile(spec, []byte("name = \"ghost\"\nversion = \"1\"\nnodes = [\"ghost-node\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out testutil.LogBuffer
	cmd := exec.Command(os.Args[0], "ctl", "--config", "/dev/null", "--data-dir", filepath.Join(dir, "data"), "--nats-url", srv.ClientURL(),
		"deploy", spec, "--binary", os.Args[0], "--wait", "--timeout", "10m")
	cmd.Env = append(os.Environ(), asNarun+"=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	ctl := startChild(t, cmd)
	// The warning comes once the spec is stored, before the wait.
	testutil.Eventually(t, 30*time.Second, "ctl waiting for the rollout", func() bool {
		return strings.Contains(out.String(), "ghost-node sends no heartbeat")
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitErr := ctl.wait(30 * time.Second)
	var exit *exec.ExitError
	if !errors.As(waitErr, &exit) || exit.ExitCode() == 4 || exit.ExitCode() == 0 {
		t.Errorf("exit after SIGINT: %v, want an error other than 4 (rollout failed)\n%s", waitErr, out.String())
	}
	if s := out.String(); strings.Contains(s, "context canceled") || !strings.Contains(s, "narun ctl app status ghost") {
		t.Errorf("the error should say the rollout goes on and how to follow it:\n%s", s)
	}
}

// fewInodes mounts, on a new temporary directory, a tmpfs that holds n
// inodes, its root among them: each symlink takes one, so the (n-1)th
// file made in it is the last that fits. It skips the test where mounting
// is not allowed.
func fewInodes(t *testing.T, n int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=1m,nr_inodes=%d", n)); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// A link that fails once others are made (here the file system runs out
// of inodes at the third) leaves the directory as it was: the links made
// so far are removed, the one it replaced points where it did, the one
// already in place stays, and the error is the failure's.
func TestInstallFailingPartwayUndoesItsLinks(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "narun")
	// Room for the root, the two links below and one more.
	dir := fewInodes(t, 4)
	if err := os.Symlink(bin, filepath.Join(dir, "narun-ctl")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/elsewhere", filepath.Join(dir, "narun-nats")); err != nil {
		t.Fatal(err)
	}
	created, err := applets.Install(bin, dir)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "install "+filepath.Join(dir, "node-runner")) {
		t.Errorf("Install = %v, want the failure to create node-runner (no space left)", err)
	}
	if len(created) != 0 {
		t.Errorf("Install says it made %q, want none left", created)
	}
	want := map[string]string{"narun-ctl": bin, "narun-nats": "/elsewhere"}
	entries, rerr := os.ReadDir(dir)
	if rerr != nil {
		t.Fatal(rerr)
	}
	got := map[string]string{}
	for _, en := range entries {
		got[en.Name()], _ = os.Readlink(filepath.Join(dir, en.Name()))
	}
	if !maps.Equal(got, want) {
		t.Errorf("after the failed install, %s holds %v; want %v as before", dir, got, want)
	}
}

// A first link that fails undid nothing, as none was made: the error is
// the failure's alone, not one that says links were undone.
func TestInstallFailingAtTheFirstLinkUndoesNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "narun")
	// Room for the root alone.
	dir := fewInodes(t, 1)
	created, err := applets.Install(bin, dir)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Install = %v, want no space left", err)
	}
	if len(created) != 0 {
		t.Errorf("Install says it made %q, want none", created)
	}
	if strings.Contains(err.Error(), "undone") {
		t.Errorf("Install = %q, which says links were undone where none was made", err)
	}
}

// narun's hidden exec-app applet, reached through the dispatcher's hidden
// table, sets its OOM score and execs the app in its place. The runner
// starts it as "narun exec-app ...", which TestMain answers itself for the
// tests that start apps; named by argv[0] here, it reaches the table.
func TestExecAppDispatch(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat to read its own oom_score_adj")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := &exec.Cmd{Path: self, Args: []string{sandbox.ExecApplet, "3", "0", cat, "cat", "/proc/self/oom_score_adj"},
		Env: append(os.Environ(), asNarun+"=1"), ExtraFiles: []*os.File{w}}
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(sandbox.AppOOMScoreAdj) {
		t.Fatalf("cat through exec-app read its oom_score_adj as %q (%v), want %d", out, err, sandbox.AppOOMScoreAdj)
	}
}
