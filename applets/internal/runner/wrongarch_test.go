package runner

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/sandbox"
)

// A binary built for another architecture, deployed under this node's,
// fails for good with what to deploy instead: retrying an exec that the
// kernel refuses would go on forever.
func TestForeignArchBinaryFailsForGood(t *testing.T) {
	t.Parallel()
	foreign := "arm64"
	if runtime.GOARCH == "arm64" {
		foreign = "amd64"
	}
	bin := filepath.Join(t.TempDir(), "hello-"+foreign)
	cmd := exec.Command("go", "build", "-o", bin, "../../../testdata/apps/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+foreign)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hello for %s: %v\n%s", foreign, err, out)
	}
	c := newCluster(t, nil)
	ev := c.watchEvents(t, "hello")
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", bin, "")
	in := tr.wait(t, "hello", "failed", allIn(1, state.Failed))[0]
	want := "binary is linux/" + foreign + ", this node is linux/" + runtime.GOARCH + ": deploy a build for " + runtime.GOARCH
	if !strings.Contains(in.Reason, want) {
		t.Errorf("reason %q, want it to say %q", in.Reason, want)
	}
	for _, e := range ev.list() {
		if e.State == state.Starting || e.PID != 0 {
			t.Errorf("a binary for %s was started: %+v", foreign, e)
		}
	}
}

// A file the kernel does not execute at all fails at its first start, for
// good, with what it is.
func TestUnexecutableBinaryFailsForGood(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "notes")
	if err := os.WriteFile(bin, []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "notes", "1.0.0", bin, "")
	in := tr.wait(t, "notes", "failed", allIn(1, state.Failed))[0]
	for _, want := range []string{"exec format error", "not an ELF file"} {
		if !strings.Contains(in.Reason, want) {
			t.Errorf("reason %q does not say %q", in.Reason, want)
		}
	}
}

// A dynamically linked binary whose loader this node lacks makes the
// kernel answer "no such file or directory" for a file that is there:
// the reason names the loader and the remedy, and no restart retries it.
func TestMissingLoaderFailsForGood(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no dynamically linked program to copy: %v", err)
	}
	loader := sandbox.Interpreter("/bin/true")
	if loader == "" {
		t.Skip("/bin/true is static")
	}
	// The same length, so the ELF header's offsets still hold.
	missing := "/" + strings.Repeat("x", len(loader)-1)
	bin := filepath.Join(t.TempDir(), "dyn")
	if err := os.WriteFile(bin, bytes.Replace(src, []byte(loader+"\x00"), []byte(missing+"\x00"), 1), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := sandbox.Interpreter(bin); got != missing {
		t.Fatalf("loader of the copy is %q, want %q", got, missing)
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "dyn", "1.0.0", bin, "")
	in := tr.wait(t, "dyn", "failed", allIn(1, state.Failed))[0]
	want := "its ELF loader " + missing + " is not on this node: build it static (CGO_ENABLED=0 for Go)"
	if !strings.Contains(in.Reason, want) || in.Restarts != 0 {
		t.Errorf("failed after %d restarts with the reason %q, want none and it to say %q", in.Restarts, in.Reason, want)
	}
}
