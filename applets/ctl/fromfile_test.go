package ctl

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
)

// secret set --from-file FIFO waits for something to write to the FIFO
// (a way to hand a value over without it touching a disk), and Ctrl-C
// ends that wait: ctl catches SIGINT to cancel its context, so an open(2)
// blocked until a writer comes, which no context reaches, kept it running
// until killed. deploy of a spec file that is a FIFO waited the same way,
// and every secret command whose key file is one.
func TestFIFOWaitInterrupted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	for _, args := range [][]string{
		{"--key-file", key, "secret", "set", "db", "--from-file"},
		{"deploy"},
		{"secret", "rotate", "--key-file"},
	} {
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		what := strings.Join(args, " ") + " FIFO"
		cmd := exec.Command(os.Args[0], append(append([]string{"ctl", "--config", h.config, "--nats-url", h.url}, args...), fifo)...)
		cmd.Env = []string{asProcess + "=1", quickExit}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var waitErr error
		done := make(chan struct{})
		go func() { waitErr = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			select {
			case <-done:
			default:
				cmd.Process.Kill()
				<-done
			}
		})

		deadline := time.Now().Add(time.Minute)
		for !openingFIFO(t, cmd.Process.Pid) {
			select {
			case <-done:
				t.Fatalf("%s ended before it waited for the FIFO's writer: %v\n%s", what, waitErr, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never waited in the open of the FIFO", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), fifo+", a FIFO") {
				t.Errorf("%s interrupted in the open: %v, exit %d, stderr %q; want exit 1 naming the FIFO", what, waitErr, code, stderr.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s still waits for a writer to the FIFO after SIGINT", what)
		}
	}
	if _, ok := h.get(names.SecretsBucket, "db"); ok {
		t.Error("an interrupted secret set stored a value")
	}
}

// openingFIFO reports whether a thread of process pid waits in the open of
// a FIFO for a writer (wait_for_partner; fifo_open on older kernels).
func openingFIFO(t *testing.T, pid int) bool {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/wchan")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if w := string(b); w == "wait_for_partner" || w == "fifo_open" {
			return true
		}
	}
	return false
}

// What --from-file reads still works: a regular file, a FIFO something
// writes to, and bash's process substitution, <(cmd), a pipe named
// /dev/fd/N that the writer holds open already; deploy reads a spec from
// one too.
func TestSecretSetFromFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	ring, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(name, want string) {
		t.Helper()
		v, err := openSecret(context.Background(), h.kv(names.SecretsBucket), ring, name)
		if err != nil || string(v) != want {
			t.Errorf("secret %s: %q (%v), want %q", name, v, err, want)
		}
	}

	// Byte for byte: the trailing newline is the value's.
	h.ok("", "--key-file", key, "secret", "set", "regular", "--from-file", h.file("value", "from a file\n"))
	stored("regular", "from a file\n")

	fifo := filepath.Join(h.dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		// Opening for writing waits for ctl to open it for reading.
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString("through a fifo")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		wrote <- err
	}()
	h.ok("", "--key-file", key, "secret", "set", "fifo", "--from-file", fifo)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	stored("fifo", "through a fifo")

	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("no bash for process substitution: %v", err)
	}
	cmd := exec.Command(bash, "-c", `exec "$0" "$@" --from-file <(printf %s "substituted")`,
		os.Args[0], "ctl", "--config", h.config, "--nats-url", h.url, "--key-file", key, "secret", "set", "subst")
	cmd.Env = []string{asProcess + "=1", quickExit}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("secret set --from-file <(printf ...): %v\n%s", err, out)
	}
	stored("subst", "substituted")

	// deploy reads its spec file so too.
	spec := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n")
	cmd = exec.Command(bash, "-c", `exec "$0" "$@" <(cat "$SPEC")`,
		os.Args[0], "ctl", "--config", h.config, "--nats-url", h.url, "deploy", "--dry-run", "--binary", elfBinary(t))
	cmd.Env = []string{asProcess + "=1", quickExit, "SPEC=" + spec}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("deploy --dry-run <(cat app.toml): %v\n%s", err, out)
	}
}
