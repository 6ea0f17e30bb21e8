package ctl

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/narun/narun/sandbox"
)

// asProcess in the environment makes this test binary run ctl with its
// arguments instead of the tests: runProcess starts ctl as a process of
// its own, as separate invocations on a device are.
const asProcess = "NARUN_CTL_TEST_AS_PROCESS"

func TestMain(m *testing.M) {
	// The runner starts exec apps as the exec-app applet of
	// /proc/self/exe, this test binary, with the app's environment.
	if len(os.Args) > 1 && os.Args[1] == sandbox.ExecApplet {
		sandbox.ExecAppMain(os.Args[2:])
	}
	if os.Getenv(asProcess) == "1" {
		// As narun's dispatcher runs an applet: SIGINT and SIGTERM end
		// its context, not the process.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		err := Main(ctx, cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(cli.ExitCode(err))
	}
	dir, err := os.MkdirTemp("", "narun-ctl-test-apps")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	appsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// appsDir holds the apps the tests build (goBuild).
var appsDir string

// harness is one embedded NATS server and a ctl that talks to it.
type harness struct {
	t      *testing.T
	srv    *embednats.Server
	url    string
	js     jetstream.JetStream
	dir    string
	config string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessOn(t, natstest.Start(t))
}

// newHarnessOn is newHarness on a server the test configured itself.
func newHarnessOn(t *testing.T, s *embednats.Server) *harness {
	t.Helper()
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "narun.toml")
	// A data dir of its own: ctl signs with a signing.key it finds there.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[ctl]\ntimeout = \"5s\"\n", filepath.Join(dir, "data"))), 0o644); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: s, url: s.ClientURL(), js: js, dir: dir, config: cfg}
}

// result is what one ctl run produced.
type result struct {
	out, err string
	code     int
	e        error
}

// run runs ctl as a process of its own, as separate invocations on a
// device are, with stdin, the given arguments and an empty environment.
// In-process runs could not overlap: urfave/cli v2 writes package
// variables (its help flag and command) as each run parses its flags, and
// the tests run in parallel.
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	return h.exec(stdin, nil, []string{asProcess + "=1", quickExit}, args)
}

// runSeen is run with ctl's stderr also copied to seen as ctl writes it,
// so that a test can act once ctl has said it got somewhere.
func (h *harness) runSeen(seen io.Writer, args ...string) result {
	h.t.Helper()
	return h.exec("", seen, []string{asProcess + "=1", quickExit}, args)
}

// runProcess runs ctl as run does, in the test's own environment.
func (h *harness) runProcess(args ...string) result {
	h.t.Helper()
	return h.exec("", nil, append(os.Environ(), asProcess+"=1", quickExit), args)
}

// quickExit keeps the race detector's options and drops its wait of a
// second at exit (for reports of goroutines still running), which each
// ctl run paid under -race.
var quickExit = "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")

func (h *harness) exec(stdin string, seen io.Writer, env, args []string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Without a url, ctl finds one as on a device: a test of that sets
	// no --nats-url.
	pre := []string{"ctl", "--config", h.config}
	if h.url != "" {
		pre = append(pre, "--nats-url", h.url)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], append(pre, args...)...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if seen != nil {
		cmd.Stderr = io.MultiWriter(&errb, seen)
	}
	err := cmd.Run()
	r := result{out: out.String(), err: errb.String(), e: err}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		h.t.Fatalf("run ctl as a process: %v", err)
	}
	return r
}

// storedApp is the spec of app as narun-apps holds it, parsed.
func (h *harness) storedApp(app string) *spec.App {
	h.t.Helper()
	stored, ok := h.get(names.AppsBucket, app)
	if !ok {
		h.t.Fatalf("%s not in %s", app, names.AppsBucket)
	}
	a, err := spec.Parse("stored", stored)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// ok runs ctl and fails the test unless it exits 0.
func (h *harness) ok(stdin string, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("ctl %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.out, r.err)
	}
	return r
}

// fails runs ctl and fails the test unless it exits with code.
func (h *harness) fails(code int, stdin string, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != code {
		h.t.Fatalf("ctl %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, r.out, r.err)
	}
	return r
}

func (h *harness) file(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// elfBinary writes the smallest file ctl takes as a binary for this
// machine's arch (an ELF header and one loadable segment, 120 bytes) and
// returns its path: the tests that upload binaries without running them
// once uploaded the test binary itself (35 MB, 45 MB under -race), which
// made most of the package's time.
func elfBinary(t *testing.T) string {
	t.Helper()
	machine, ok := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "riscv64": elf.EM_RISCV}[runtime.GOARCH]
	if !ok {
		t.Fatalf("no ELF machine for %s", runtime.GOARCH)
	}
	const headers = 64 + 56
	var b bytes.Buffer
	for _, part := range []any{
		elf.Header64{
			Ident:     [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
			Type:      uint16(elf.ET_EXEC),
			Machine:   uint16(machine),
			Version:   uint32(elf.EV_CURRENT),
			Entry:     0x400000 + headers,
			Phoff:     64,
			Ehsize:    64,
			Phentsize: 56,
			Phnum:     1,
		},
		elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x400000, Paddr: 0x400000, Filesz: headers, Memsz: headers, Align: 0x1000},
	} {
		if err := binary.Write(&b, binary.LittleEndian, part); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// env is a ctl environment connected to the harness's server, for tests
// that call a step of a command between writes of their own; what it
// prints to stderr goes to stderr.
func (h *harness) env(stderr io.Writer) *env {
	h.t.Helper()
	e := &env{stdio: cliIO(), log: slog.New(slog.DiscardHandler), timeout: 5 * time.Second}
	e.stdio.Stderr = stderr
	e.cfg.Ctl.NATSURL = h.url
	if err := e.connect(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(e.close)
	return e
}

func (h *harness) kv(bucket string) jetstream.KeyValue {
	h.t.Helper()
	kv, err := store.KV(context.Background(), h.js, bucket, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

func (h *harness) get(bucket, key string) ([]byte, bool) {
	h.t.Helper()
	e, err := h.kv(bucket).Get(context.Background(), key)
	if store.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return e.Value(), true
}

// objectCount counts objects in a store; a missing store counts 0.
func (h *harness) objectCount(bucket string) int {
	h.t.Helper()
	obs, err := h.js.ObjectStore(context.Background(), bucket)
	if store.IsNotFound(err) {
		return 0
	}
	if err != nil {
		h.t.Fatal(err)
	}
	list, err := obs.List(context.Background())
	if err != nil && !isNotFound(err) {
		h.t.Fatal(err)
	}
	return len(list)
}

// heartbeat writes a node heartbeat the way the runner does.
func (h *harness) heartbeat(n state.Node) {
	h.t.Helper()
	if n.Time.IsZero() {
		n.Time = time.Now().UTC()
	}
	if n.OS == "" {
		n.OS = "linux"
	}
	b, err := json.Marshal(n)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.kv(names.NodesBucket).Put(context.Background(), n.ID, b); err != nil {
		h.t.Fatal(err)
	}
}

// readiness is what app status --json says of app: desired and ready
// instances.
func (h *harness) readiness(app string) (desired, ready int) {
	h.t.Helper()
	r := h.ok("", "app", "status", app, "--json")
	var got struct{ Desired, Ready int }
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		h.t.Fatalf("decode %q: %v", r.out, err)
	}
	return got.Desired, got.Ready
}

func cliIO() cli.IO {
	return cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard}
}

// openSecret fetches and opens the secret called name, as a node does
// with the value it caches.
func openSecret(ctx context.Context, kv jetstream.KeyValue, r *secrets.Ring, name string) ([]byte, error) {
	e, err := kv.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	s, err := secrets.Unmarshal(e.Value())
	if err != nil {
		return nil, err
	}
	return r.Open(name, s)
}
