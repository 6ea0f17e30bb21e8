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
