package ctl

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/testutil"
)

// A deploy interrupted (Ctrl-C, SIGTERM) during its upload says so, and
// that nothing is deployed, rather than "context canceled"; exit 1, as an
// interrupted --wait.
func TestDeployInterruptedDuringUpload(t *testing.T) {
	t.Parallel()
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		h := newHarness(t)
		// 4 MiB at 128 KiB/s: half a minute, interrupted long before.
		link := newSlowLink(t, h.url, 128<<10, 0, 0)
		elf, err := os.ReadFile(elfBinary(t))
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "app")
		if err := os.WriteFile(bin, append(elf, make([]byte, 4<<20)...), 0o755); err != nil {
			t.Fatal(err)
		}
		f := h.follow(link.url, "deploy", h.file("hello.toml", helloSpec), "--binary", bin)
		testutil.Eventually(t, 30*time.Second, "the upload under way", func() bool { return link.sent.Load() > 256<<10 })
		if err := f.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		var exit *exec.ExitError
		select {
		case err := <-f.done:
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("%v: deploy ended with %v, want exit 1", sig, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%v: deploy did not stop", sig)
		}
		if want := "deploy of hello stopped (interrupted) before its spec was stored: nothing deployed"; !strings.Contains(f.errs.String(), want) {
			t.Errorf("%v: %q, want %q", sig, f.errs.String(), want)
		}
		if _, ok := h.get(names.AppsBucket, "hello"); ok {
			t.Errorf("%v: an interrupted deploy stored the spec", sig)
		}
	}
}
