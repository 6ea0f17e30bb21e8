package applets_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A bare argv[0] names no file: the caller found the binary through PATH,
// or did not look for it at all, as the runner re-execs /proc/self/exe as
// "narun exec-app" in an app's directory. Links there, as install makes
// them, must not choose the applet.
func TestBareArgv0IgnoresTheWorkingDirectory(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cwd := t.TempDir()
	for name, target := range map[string]string{"narun": "narun-1.2", "narun-gw": "narun", "my-gw": "narun-gw"} {
		if err := os.Symlink(target, filepath.Join(cwd, name)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := &exec.Cmd{Path: self, Args: []string{"my-gw", "version"}, Dir: cwd,
		Env: append(os.Environ(), asNarun+"=1", "PATH="+t.TempDir())}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), runtime.GOOS+"/"+runtime.GOARCH) {
		t.Fatalf("my-gw version beside a link my-gw -> narun-gw -> narun: %v, %q; want the version", err, out)
	}
}

// narun help APPLET is the applet's help, as narun APPLET --help: the
// list of applets instead left the name typed unanswered.
func TestHelpOfAnApplet(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"narun", "help", "gw"}, 0, "narun gw [options]", ""},
		{[]string{"narun", "--help", "up"}, 0, "narun up [options]", ""},
		{[]string{"narun", "help", "narun-ctl"}, 0, "narun ctl", ""},
		{[]string{"narun", "help", "version"}, 0, "usage: narun version [--json]", ""},
		{[]string{"narun", "help", "bogus"}, 2, "", `unknown applet "bogus"`},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			code, out, errs := run(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errs, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
