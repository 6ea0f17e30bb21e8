package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// The test binary doubles as the supervised program when this variable names
// a behaviour, so the tests run real processes without building anything.
const childEnv = "SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		child(mode)
		return
	}
	os.Exit(m.Run())
}

func child(mode string) {
	if port, ok := strings.CutPrefix(mode, "listen:"); ok {
		listen(port)
	}
	term := make(chan os.Signal, 1)
	switch mode {
	case "serve":
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println("ready")
		<-term
		fmt.Println("bye")
		os.Exit(0)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		sleepForever()
	case "crash":
		fmt.Fprintln(os.Stderr, "dying")
		os.Exit(3)
	case "done":
		fmt.Println("done")
		os.Exit(0)
	case "longline":
		os.Stdout.WriteString(strings.Repeat("x", 5000) + "\nend\n")
		sleepForever()
	case "env":
		for _, e := range os.Environ() {
			fmt.Println("env:", e)
		}
		fmt.Println("end")
		sleepForever()
	case "grandchild":
		cmd := exec.Command(os.Args[0])
		cmd.Env = []string{childEnv + "=stubborn"}
		if err := cmd.Start(); err != nil {
			fmt.Println("start grandchild:", err)
			os.Exit(1)
		}
		fmt.Println("grandchild", cmd.Process.Pid)
		sleepForever()
	case "orphaner":
		cmd := exec.Command(os.Args[0])
		cmd.Env = []string{childEnv + "=stubborn"}
		if err := cmd.Start(); err != nil {
			fmt.Println("start grandchild:", err)
			os.Exit(1)
		}
		if err := os.WriteFile("grandchild.pid", []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
			fmt.Println("write grandchild.pid:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(2)
}

// listen answers TCP connections on port until SIGUSR1, then stays alive
// without answering: a hung app, for the health checks.
func listen(port string) {
	// Before the port opens: the test sends SIGUSR1 once a check passed,
	// and a Go program drops a signal it was not told to deliver.
	hang, term := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(hang, syscall.SIGUSR1)
	signal.Notify(term, syscall.SIGTERM)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	fmt.Println("ready")
	for {
		select {
		case <-hang:
			ln.Close()
			fmt.Println("hung")
		case <-term:
			fmt.Println("bye")
			os.Exit(0)
		}
	}
}

func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

type recorder struct {
	mu     sync.Mutex
	states []state.State
	// started are the reasons given as each process started running.
	started []string
	// upWithoutProcess are the changes that showed a live instance with
	// no process behind it.
	upWithoutProcess []state.Instance
	// changes are all the statuses published, as events are.
	changes []state.Instance
}

func (r *recorder) add(i state.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, i)
	if i.State.Up() && i.PID == 0 {
		r.upWithoutProcess = append(r.upWithoutProcess, i)
	}
	if n := len(r.states); n == 0 || r.states[n-1] != i.State {
		r.states = append(r.states, i.State)
		if i.State == state.Running {
			r.started = append(r.started, i.Reason)
		}
	}
}

func (r *recorder) all() []state.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

// reasons are the reasons published as the instance entered state st,
// once for each time it did.
func (r *recorder) reasons(st state.State) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	var prev state.State
	for _, c := range r.changes {
		if c.State == st && prev != st {
			out = append(out, c.Reason)
		}
		prev = c.State
	}
	return out
}

// backoffReasons are the reasons published as the instance entered
// backoff, with the time of the retry, which TestBackoffReasonSaysWhen
// checks, as HH:MM:SSZ.
func backoffReasons(r *recorder) []string {
	var out []string
	for _, why := range r.reasons(state.Backoff) {
		out = append(out, retryTime.ReplaceAllString(why, "retry at HH:MM:SSZ"))
	}
	return out
}

var retryTime = regexp.MustCompile(`retry at \d\d:\d\d:\d\dZ`)

var stopAt = regexp.MustCompile(`at \d\d:\d\d:\d\dZ`)

// start runs a supervisor of the test binary in the given child mode.
func start(t *testing.T, mode string, cfg Config) (*Supervisor, *recorder) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	cfg.Instance = state.Instance{App: "test", Node: "n1", ID: "0-test"}
	cfg.OnChange = rec.add
	if cfg.Prepare == nil {
		dir := t.TempDir()
		cfg.Prepare = func(context.Context) (InstanceLaunch, error) {
			return InstanceLaunch{Path: exe, Env: []string{childEnv + "=" + mode, "GREETING=hi"}, Dir: dir}, nil
		}
	}
	s := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	t.Cleanup(func() {
		cancel()
		<-s.Done()
	})
	return s, rec
}

// waitFor polls the supervisor's status until ok holds.
func waitFor(t *testing.T, s *Supervisor, what string, ok func(state.Instance) bool) state.Instance {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		ch := s.Changed()
		st := s.Status()
		if ok(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; status %+v; lines %+v", what, st, s.Lines())
		}
	}
}

func waitDone(t *testing.T, s *Supervisor) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("supervisor did not end; status %+v", s.Status())
	}
}

func inState(want state.State) func(state.Instance) bool {
	return func(i state.Instance) bool { return i.State == want }
}

func hasLine(s *Supervisor, stream, line string) bool {
	return slices.ContainsFunc(s.Lines(), func(l state.LogLine) bool { return l.Stream == stream && l.Line == line })
}

func waitLine(t *testing.T, s *Supervisor, stream, line string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !hasLine(s, stream, line) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s line %q in %+v", stream, line, s.Lines())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestStopGraceful(t *testing.T) {
	// A stop timeout far beyond the test's deadline proves the stop did not
	// wait for it.
	s, rec := start(t, "serve", Config{StopTimeout: time.Hour})
	st := waitFor(t, s, "healthy", inState(state.Healthy))
	waitLine(t, s, state.Stdout, "ready")
	s.Stop()
	waitDone(t, s)
	end := s.Status()
	if end.State != state.Stopped || end.ExitCode == nil || *end.ExitCode != 0 {
		t.Fatalf("after stop: %+v, want stopped with exit code 0", end)
	}
	if alive(st.PID) {
		t.Errorf("pid %d still alive after stop", st.PID)
	}
	if !hasLine(s, state.Stdout, "bye") {
		t.Errorf("the app's last line was not kept: %+v", s.Lines())
	}
	want := []state.State{state.Fetching, state.Starting, state.Running, state.Healthy, state.Stopping, state.Stopped}
	if got := rec.all(); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	s, rec := start(t, "stubborn", Config{StopTimeout: 100 * time.Millisecond})
	st := waitFor(t, s, "healthy", inState(state.Healthy))
	waitLine(t, s, state.Stdout, "ready")
	s.Stop()
	waitDone(t, s)
	end := s.Status()
	if end.State != state.Stopped || end.ExitCode == nil || *end.ExitCode != -1 {
		t.Fatalf("after stop: %+v, want stopped and killed", end)
	}
	// The operator reads app status and the events, not the node's
	// journal: an app that ignores its stop signal must be told apart
	// from one that stopped cleanly there too.
	const want = "killed, as it did not end within its stop_timeout of 100ms after SIGTERM"
	if end.Reason != want {
		t.Errorf("reason %q, want %q", end.Reason, want)
	}
	// A stop_timeout may be an hour: while it runs, the instance says
	// what it was sent and when it will be killed.
	stopping := stopAt.ReplaceAllString(strings.Join(rec.reasons(state.Stopping), ", "), "at HH:MM:SSZ")
	if want := "SIGTERM sent; killed at HH:MM:SSZ (stop_timeout 100ms) unless it ends before"; stopping != want {
		t.Errorf("stopping with the reason %q, want %q", stopping, want)
	}
	if alive(st.PID) {
		t.Errorf("pid %d still alive after stop", st.PID)
	}
}

func TestStopKillsTheGroup(t *testing.T) {
	s, _ := start(t, "grandchild", Config{StopTimeout: 100 * time.Millisecond})
	var pid int
	deadline := time.Now().Add(20 * time.Second)
	for pid == 0 {
		for _, l := range s.Lines() {
			if f, ok := strings.CutPrefix(l.Line, "grandchild "); ok {
				pid, _ = strconv.Atoi(f)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no grandchild pid in %+v", s.Lines())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Stop()
	waitDone(t, s)
	deadline = time.Now().Add(10 * time.Second)
	for alive(pid) && !zombie(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the stop", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A process that exits leaving another in its group: the other is killed
// while the group's id, the leader's pid, is still held by the unreaped
// leader. Killed after the reap, the signal could reach a new process the
// kernel gave that pid and that leads a group of its own.
func TestGroupKilledBeforeLeaderReaped(t *testing.T) {
	killedFirst := make(chan bool, 1)
	s, _ := start(t, "orphaner", Config{
		Policy: Policy{Mode: Never},
		Command: func(ctx context.Context, inst InstanceLaunch) (*Process, error) {
			p, err := Exec(ctx, inst)
			if err != nil {
				return nil, err
			}
			p.Wait = func() error {
				var info unix.Siginfo
				if err := unix.Waitid(unix.P_PID, p.Cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
					t.Errorf("wait for the leader's exit: %v", err)
				}
				b, err := os.ReadFile(filepath.Join(inst.Dir, "grandchild.pid"))
				pid, _ := strconv.Atoi(string(b))
				if err != nil || pid == 0 {
					t.Errorf("grandchild.pid: %q, %v", b, err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for pid != 0 && alive(pid) && !zombie(pid) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				killedFirst <- pid != 0 && (!alive(pid) || zombie(pid))
				if pid != 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				return p.Cmd.Wait()
			}
			return p, nil
		},
	})
	waitDone(t, s)
	if !<-killedFirst {
		t.Fatal("the leader's group was not killed before the leader was reaped")
	}
}

// zombie reports whether pid has exited but is not yet reaped (by init,
// since its parent is gone).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

func TestCrashLoopGivesUp(t *testing.T) {
	s, rec := start(t, "crash", Config{Policy: Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond, GiveUp: 3}})
	waitDone(t, s)
	end := s.Status()
	if end.State != state.Failed || end.Restarts != 2 || !strings.Contains(end.Reason, "exit status 3") {
		t.Fatalf("end %+v, want failed after 2 restarts with exit status 3", end)
	}
	got := rec.all()
	for _, want := range []state.State{state.Crashed, state.Backoff, state.Failed} {
		if !slices.Contains(got, want) {
			t.Errorf("states %v lack %s", got, want)
		}
	}
	if !hasLine(s, state.Stderr, "dying") {
		t.Errorf("stderr line not kept: %+v", s.Lines())
	}
}

// A process that ends with status 0 under restart "always" (a job that
// finished its round) is restarted without being called crashed: it went
// straight to backoff, which says why, where "crashed (exit status 0)"
// sent the operator looking for a fault.
func TestCleanExitIsNoCrash(t *testing.T) {
	s, rec := start(t, "done", Config{Policy: Policy{Mode: Always, Initial: time.Millisecond, Max: 2 * time.Millisecond}})
	waitFor(t, s, "two restarts", func(i state.Instance) bool { return i.Restarts >= 2 })
	s.Stop()
	waitDone(t, s)
	if got := rec.all(); slices.Contains(got, state.Crashed) {
		t.Errorf("states %v: a clean exit counted as crashed", got)
	}
	reasons := backoffReasons(rec)
	if len(reasons) == 0 || !strings.HasPrefix(reasons[0], "exit status 0") {
		t.Errorf("backoff reasons %q, want them to start with the exit status", reasons)
	}
}

func TestJournalTellsTheCrashLoop(t *testing.T) {
	var out testutil.LogBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, _ := start(t, "crash", Config{Policy: Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond, GiveUp: 2}, Logger: log})
	waitDone(t, s)
	journal := out.String()
	for _, want := range []string{
		`level=INFO msg="instance started" instance=0-test pid=`,
		`level=WARN msg="instance exited" instance=0-test reason="exit status 3" restarts=0`,
		`level=ERROR msg="instance failed; not restarting it" instance=0-test reason="gave up after 2 failures in a row: exit status 3"`,
	} {
		if !strings.Contains(journal, want) {
			t.Errorf("journal lacks %s:\n%s", want, journal)
		}
	}
	for _, noise := range []string{"level=DEBUG", "instance healthy"} {
		if strings.Contains(journal, noise) {
			t.Errorf("journal has %q at level info, without a health check:\n%s", noise, journal)
		}
	}
}

func TestRestartAfterKill(t *testing.T) {
	s, rec := start(t, "serve", Config{})
	first := waitFor(t, s, "healthy", inState(state.Healthy))
	killed := time.Now()
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := waitFor(t, s, "restarted", func(i state.Instance) bool {
		return i.State == state.Healthy && i.PID != 0 && i.PID != first.PID
	})
	t.Logf("kill -9 to running again: %v", again.Started.Sub(killed))
	if again.Restarts != 1 || again.Reason != "last exit: killed by SIGKILL" {
		t.Errorf("restarts = %d, reason %q; want 1 and why the last process ended", again.Restarts, again.Reason)
	}
	// While the new process runs, status says why the last one ended.
	rec.mu.Lock()
	started := slices.Clone(rec.started)
	rec.mu.Unlock()
	if len(started) != 2 || started[0] != "" || started[1] != "last exit: killed by SIGKILL" {
		t.Errorf("reasons at each start: %q, want none, then the kill", started)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.upWithoutProcess) > 0 {
		t.Errorf("status showed a live instance without a process: %+v", rec.upWithoutProcess)
	}
}

func TestCleanEnvironment(t *testing.T) {
	t.Setenv("RUNNER_SECRET_KEY", "must-not-leak")
	s, _ := start(t, "env", Config{})
	waitLine(t, s, state.Stdout, "end")
	var env []string
	for _, l := range s.Lines() {
		if e, ok := strings.CutPrefix(l.Line, "env: "); ok {
			env = append(env, e)
		}
	}
	slices.Sort(env)
	want := []string{"GREETING=hi", childEnv + "=env"}
	if !slices.Equal(env, want) {
		t.Errorf("app environment %q, want exactly %q", env, want)
	}
}

func TestLongLinesSplit(t *testing.T) {
	s, _ := start(t, "longline", Config{MaxLine: 1024})
	waitLine(t, s, state.Stdout, "end")
	var whole strings.Builder
	parts := 0
	for _, l := range s.Lines() {
		if l.Line == "end" {
			break
		}
		if len(l.Line) > 1024 {
			t.Errorf("line of %d bytes exceeds the maximum", len(l.Line))
		}
		whole.WriteString(l.Line)
		parts++
	}
	if whole.String() != strings.Repeat("x", 5000) || parts != 5 {
		t.Errorf("long line came back as %d parts of total %d bytes", parts, whole.Len())
	}
}

func TestPrepare(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		mode      string
		giveUp    int
		errs      []error
		wantState state.State
		wantIn    string
	}{
		{"transient errors are retried", Always, 0, []error{errors.New("nats down"), errors.New("nats down")}, state.Healthy, ""},
		{"transient errors are retried with policy never", Never, 0, []error{errors.New("nats down")}, state.Healthy, ""},
		{"transient errors do not count as failures", Always, 2, []error{errors.New("nats down"), errors.New("nats down"), errors.New("nats down")}, state.Healthy, ""},
		{"permanent error fails at once", Always, 0, []error{fmt.Errorf("verify binary: sha256 mismatch: %w", ErrPermanent)}, state.Failed, "sha256 mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls int
			policy := Policy{Mode: tt.mode, Initial: time.Millisecond, GiveUp: tt.giveUp}
			s, rec := start(t, "", Config{
				Policy: policy,
				Prepare: func(context.Context) (InstanceLaunch, error) {
					calls++
					if calls <= len(tt.errs) {
						return InstanceLaunch{}, tt.errs[calls-1]
					}
					return InstanceLaunch{Path: exe, Env: []string{childEnv + "=serve"}, Dir: t.TempDir()}, nil
				},
			})
			end := waitFor(t, s, string(tt.wantState), inState(tt.wantState))
			if !strings.Contains(end.Reason, tt.wantIn) {
				t.Errorf("reason %q lacks %q", end.Reason, tt.wantIn)
			}
			if tt.wantState == state.Failed && slices.Contains(rec.all(), state.Starting) {
				t.Errorf("a failed preparation went on to start: %v", rec.all())
			}
		})
	}
}

// A restart prepares again, as the first start did: the runner checks the
// binary against its digest there, so a copy damaged while the process ran
// is never run, and it hands over the secrets and files the store holds now.
func TestRestartPreparesAgain(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	dir := t.TempDir()
	s, _ := start(t, "", Config{
		Prepare: func(context.Context) (InstanceLaunch, error) {
			if calls.Add(1) > 1 {
				return InstanceLaunch{}, fmt.Errorf("verify binary: sha256 mismatch: %w", ErrPermanent)
			}
			return InstanceLaunch{Path: exe, Env: []string{childEnv + "=serve"}, Dir: dir}, nil
		},
	})
	first := waitFor(t, s, "healthy", inState(state.Healthy))
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	end := waitFor(t, s, "failed", inState(state.Failed))
	if calls.Load() != 2 || !strings.Contains(end.Reason, "sha256 mismatch") {
		t.Errorf("Prepare ran %d times, end %q; want 2, and the restart refused for its reason", calls.Load(), end.Reason)
	}
}

func TestHealthCheck(t *testing.T) {
	ready := make(chan struct{})
	var checked atomic.Int64
	s, _ := start(t, "serve", Config{Health: Health{Check: func(ctx context.Context, target Target) error {
		checked.Store(int64(target.PID))
		select {
		case <-ready:
			return nil
		default:
			return errors.New("not yet")
		}
	}}})
	// The first failure shows at once, so that status and deploy --wait
	// can say why an instance is not ready before the grace period ends.
	st := waitFor(t, s, "running with the check's error", func(i state.Instance) bool {
		return i.State == state.Running && i.Reason != ""
	})
	if st.Healthy || st.Reason != "waiting for health check: not yet" {
		t.Fatalf("before the check passed: %+v", st)
	}
	close(ready)
	st = waitFor(t, s, "healthy", func(i state.Instance) bool { return i.State == state.Healthy && i.Healthy })
	if st.Reason != "" {
		t.Errorf("healthy instance keeps the reason %q", st.Reason)
	}
	if got := checked.Load(); got != int64(st.PID) {
		t.Errorf("the check was given pid %d, the process is %d", got, st.PID)
	}
}

// An instance that was healthy and then fails its checks says so, not that
// it never became healthy after its start: its grace period is long over.
func TestHealthFailingAfterHealthy(t *testing.T) {
	var calls atomic.Int64
	var failing atomic.Bool
	s, _ := start(t, "serve", Config{Health: Health{
		Interval:   10 * time.Millisecond,
		Failures:   1,
		StartGrace: time.Millisecond,
		Check: func(ctx context.Context, _ Target) error {
			calls.Add(1)
			if failing.Load() {
				return errors.New("no answer")
			}
			return nil
		},
	}})
	waitFor(t, s, "healthy", inState(state.Healthy))
	failing.Store(true)
	waitFor(t, s, "unhealthy", inState(state.Running))
	unhealthy := s.Status()
	// Each check's outcome is in the status before the next check starts.
	n := calls.Load()
	testutil.Eventually(t, 20*time.Second, "more failed checks", func() bool { return calls.Load() >= n+3 })
	st := s.Status()
	if st.State != state.Running || st.Reason != "health check failing: no answer" {
		t.Fatalf("a once healthy instance failing its checks: %+v", st)
	}
	// Without RestartAfter it is left running: the same process, never
	// restarted.
	if st.PID != unhealthy.PID || st.Restarts != 0 || !alive(st.PID) {
		t.Errorf("an unhealthy instance without RestartAfter was restarted: %+v, was %+v", st, unhealthy)
	}
}

// tcpCheck is the health check of the runner's type "tcp".
func tcpCheck(port string) func(context.Context, Target) error {
	return func(ctx context.Context, t Target) error {
		c, err := t.Dial(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// A process that answered its checks, then hangs (alive, not answering),
// is stopped with the stop signal after RestartAfter failed checks and
// started again, and every status on the way says it was unhealthy.
func TestUnhealthyRestarted(t *testing.T) {
	// Not a fixed port: a test binary of another run (the race stage,
	// another checkout) listening on it would pass the first process's
	// checks before that process opened it, or keep it from opening it.
	_, port, err := net.SplitHostPort(testutil.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.LogBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, rec := start(t, "listen:"+port, Config{
		Policy: Policy{Initial: time.Millisecond},
		Health: Health{
			Check:        tcpCheck(port),
			Interval:     10 * time.Millisecond,
			Failures:     1,
			RestartAfter: 2,
			// Counting starts with the first success, not with the grace.
			StartGrace: time.Hour,
		},
		Logger: log,
	})
	first := waitFor(t, s, "healthy", inState(state.Healthy))
	if err := syscall.Kill(first.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	again := waitFor(t, s, "healthy again in a new process", func(i state.Instance) bool {
		return i.State == state.Healthy && i.PID != first.PID
	})
	if again.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", again.Restarts)
	}
	why := "unhealthy after 2 failed health checks in a row: dial tcp 127.0.0.1:" + port + ": connect: connection refused"
	rec.mu.Lock()
	i := slices.IndexFunc(rec.changes, func(c state.Instance) bool { return c.PID == again.PID })
	startedWith := rec.changes[i].Reason
	rec.mu.Unlock()
	if startedWith != "last exit: "+why {
		t.Errorf("the new process started with reason %q, want %q", startedWith, "last exit: "+why)
	}
	if !hasLine(s, state.Stdout, "bye") {
		t.Errorf("the hung process was not stopped by its stop signal: %+v", s.Lines())
	}
	if alive(first.PID) {
		t.Errorf("hung process %d still alive", first.PID)
	}
	if got := rec.reasons(state.Stopping); !slices.Equal(got, []string{why}) {
		t.Errorf("stopping reasons %q, want %q", got, why)
	}
	if got := backoffReasons(rec); !slices.Equal(got, []string{why + "; retry at HH:MM:SSZ (1ms backoff)"}) {
		t.Errorf("backoff reasons %q, want the unhealthy reason", got)
	}
	if slices.Contains(rec.all(), state.Crashed) {
		t.Errorf("an instance restarted as unhealthy was reported crashed: %v", rec.all())
	}
	journal := out.String()
	if want := `level=WARN msg="instance unhealthy, stopping it" instance=0-test pid=` + strconv.Itoa(first.PID) + ` reason="` + why + `"`; !strings.Contains(journal, want) {
		t.Errorf("journal lacks %s:\n%s", want, journal)
	}
}

// Stops as unhealthy feed the restart policy as crashes do: backoff grows
// with each, max failures gives up, and policy never leaves it failed.
func TestUnhealthyUnderPolicy(t *testing.T) {
	const why = "unhealthy after 1 failed health check: no answer"
	tests := []struct {
		name     string
		policy   Policy
		reason   string
		restarts int
		backoffs []string
	}{
		{"max failures", Policy{Mode: OnFailure, Initial: time.Millisecond, Max: time.Second, GiveUp: 3},
			"gave up after 3 failures in a row: " + why, 2, []string{why + "; retry at HH:MM:SSZ (1ms backoff)", why + "; retry at HH:MM:SSZ (2ms backoff)"}},
		{"max failures 1", Policy{Mode: OnFailure, Initial: time.Millisecond, Max: time.Second, GiveUp: 1},
			"gave up after 1 failure: " + why, 0, nil},
		{"never", Policy{Mode: Never}, why + " (restart policy never)", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, rec := start(t, "serve", Config{
				Policy: tt.policy,
				Health: Health{
					Check:        func(context.Context, Target) error { return errors.New("no answer") },
					Interval:     10 * time.Millisecond,
					StartGrace:   time.Millisecond,
					RestartAfter: 1,
				},
			})
			waitDone(t, s)
			end := s.Status()
			if end.State != state.Failed || end.Reason != tt.reason || end.Restarts != tt.restarts {
				t.Errorf("ended %s (%q) after %d restarts, want failed (%q) after %d; states %v",
					end.State, end.Reason, end.Restarts, tt.reason, tt.restarts, rec.all())
			}
			if got := backoffReasons(rec); !slices.Equal(got, tt.backoffs) {
				t.Errorf("backoff reasons %q, want %q", got, tt.backoffs)
			}
			if n := len(rec.reasons(state.Stopping)); n != tt.restarts+1 {
				t.Errorf("%d stops as unhealthy, want %d", n, tt.restarts+1)
			}
		})
	}
}

// Failed checks do not count toward RestartAfter during the grace of a
// process that never was healthy, nor when the check cannot tell
// (ErrInconclusive); a conclusive failure after them does.
func TestUnhealthyNotCounted(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	verdict := errors.New("not yet")
	set := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		verdict = err
	}
	s, rec := start(t, "serve", Config{
		Policy: Policy{Initial: time.Millisecond},
		Health: Health{
			Interval:     10 * time.Millisecond,
			StartGrace:   time.Hour,
			RestartAfter: 1,
			Check: func(context.Context, Target) error {
				calls.Add(1)
				mu.Lock()
				defer mu.Unlock()
				return verdict
			},
		},
	})
	first := waitFor(t, s, "waiting for its check", func(i state.Instance) bool { return i.State == state.Running && i.Reason != "" })
	checks := func(what string) {
		t.Helper()
		n := calls.Load()
		testutil.Eventually(t, 20*time.Second, what, func() bool { return calls.Load() >= n+3 })
	}
	checks("failed checks in the grace")
	if st := s.Status(); st.PID != first.PID || st.Restarts != 0 {
		t.Fatalf("restarted for failed checks during its start grace: %+v", st)
	}
	set(nil)
	waitFor(t, s, "healthy", inState(state.Healthy))
	set(Inconclusive(errors.New("nats not reachable")))
	// Reported as any failure...
	waitFor(t, s, "unhealthy", func(i state.Instance) bool { return i.Reason == "health check failing: nats not reachable" })
	checks("inconclusive checks")
	// ...but not restarted for.
	if st := s.Status(); st.PID != first.PID || st.Restarts != 0 {
		t.Fatalf("restarted for inconclusive checks: %+v", st)
	}
	set(errors.New("no answer"))
	waitFor(t, s, "restarted", func(i state.Instance) bool { return i.Restarts == 1 })
	if got, want := rec.reasons(state.Stopping), []string{"unhealthy after 1 failed health check: no answer"}; !slices.Equal(got, want) {
		t.Errorf("stopped with reasons %q, want %q", got, want)
	}
}

type reasonErr string

func (e reasonErr) Error() string  { return string(e) }
func (e reasonErr) Reason() string { return string(e) }

// TestProcessHooks runs the start, wait and release hooks a sandbox uses.
func TestProcessHooks(t *testing.T) {
	var mu sync.Mutex
	starts, releases := 0, 0
	s, _ := start(t, "crash", Config{
		Policy: Policy{Initial: time.Millisecond, GiveUp: 2},
		Command: func(ctx context.Context, inst InstanceLaunch) (*Process, error) {
			p, err := Exec(ctx, inst)
			if err != nil {
				return nil, err
			}
			p.Start = func() error {
				mu.Lock()
				starts++
				mu.Unlock()
				return p.Cmd.Start()
			}
			p.Wait = func() error {
				if err := p.Cmd.Wait(); err != nil {
					return fmt.Errorf("app: %w", reasonErr("oom"))
				}
				return nil
			}
			p.Release = func() {
				mu.Lock()
				releases++
				mu.Unlock()
			}
			return p, nil
		},
	})
	waitDone(t, s)
	end := s.Status()
	mu.Lock()
	defer mu.Unlock()
	if end.State != state.Failed || !strings.Contains(end.Reason, "oom") {
		t.Errorf("end %+v, want failed with the reason of the wait hook", end)
	}
	if starts != 2 || releases != 2 {
		t.Errorf("%d starts and %d releases, want 2 of each", starts, releases)
	}
}

// A factory's Signal hook, not the process group, gets the stop signal
// and SIGCONT, SIGKILL at the stop timeout, and SIGKILL once the process ended, for
// what it left behind.
func TestSignalHook(t *testing.T) {
	command, signals := signalRecorder(nil)
	s, _ := start(t, "stubborn", Config{StopTimeout: 100 * time.Millisecond, Command: command})
	waitFor(t, s, "healthy", inState(state.Healthy))
	waitLine(t, s, state.Stdout, "ready")
	s.Stop()
	waitDone(t, s)
	// The last SIGKILL finds the process gone.
	if got, want := signals(), []syscall.Signal{syscall.SIGTERM, syscall.SIGCONT, syscall.SIGKILL, syscall.SIGKILL}; !slices.Equal(got, want) {
		t.Errorf("signals %v, want %v", got, want)
	}
}

// signalRecorder is a Command that runs Exec with a Signal hook recording
// each signal before it passes it on to the process, and waitEmpty as its
// WaitEmpty hook; signals returns those recorded so far.
func signalRecorder(waitEmpty func(context.Context) error) (command func(context.Context, InstanceLaunch) (*Process, error), signals func() []syscall.Signal) {
	var mu sync.Mutex
	var got []syscall.Signal
	command = func(ctx context.Context, inst InstanceLaunch) (*Process, error) {
		p, err := Exec(ctx, inst)
		if err != nil {
			return nil, err
		}
		p.Signal = func(sig syscall.Signal) error {
			mu.Lock()
			got = append(got, sig)
			mu.Unlock()
			_ = p.Cmd.Process.Signal(sig)
			return nil
		}
		p.WaitEmpty = waitEmpty
		return p, nil
	}
	signals = func() []syscall.Signal {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	return command, signals
}

// A factory's WaitEmpty hook extends a stop's grace past the end of the
// process to the rest of the run: the supervisor waits for it within the
// stop timeout, and kills what is left only once it is over.
func TestWaitEmptyHook(t *testing.T) {
	// hooked runs the serve child, which ends at the stop signal, with
	// hooks that record the signals and hand WaitEmpty's calls to wait.
	hooked := func(t *testing.T, timeout time.Duration, wait func(context.Context) error) (*Supervisor, func() []syscall.Signal) {
		command, signals := signalRecorder(wait)
		s, _ := start(t, "serve", Config{StopTimeout: timeout, Command: command})
		waitLine(t, s, state.Stdout, "ready")
		return s, signals
	}

	t.Run("grace", func(t *testing.T) {
		called, empty := make(chan bool, 1), make(chan struct{})
		s, signals := hooked(t, time.Hour, func(ctx context.Context) error {
			_, bounded := ctx.Deadline()
			called <- bounded
			select {
			case <-empty:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		pid := s.Status().PID
		s.Stop()
		if bounded := <-called; !bounded {
			t.Error("WaitEmpty got no deadline: the stop timeout does not bound it")
		}
		if alive(pid) {
			t.Errorf("WaitEmpty called while the process %d runs", pid)
		}
		select {
		case <-s.Done():
			t.Fatal("the stop ended before the run was empty")
		default:
		}
		if got := signals(); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGCONT}) {
			t.Errorf("signals while the run empties: %v, want only SIGTERM and SIGCONT", got)
		}
		close(empty)
		waitDone(t, s)
		if end := s.Status(); end.State != state.Stopped || end.ExitCode == nil || *end.ExitCode != 0 {
			t.Errorf("after stop: %+v, want stopped with exit code 0", end)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		s, signals := hooked(t, 100*time.Millisecond, func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
		s.Stop()
		waitDone(t, s)
		// SIGKILL at the timeout, for what is left, then once the run ended.
		if got, want := signals(), []syscall.Signal{syscall.SIGTERM, syscall.SIGCONT, syscall.SIGKILL, syscall.SIGKILL}; !slices.Equal(got, want) {
			t.Errorf("signals %v, want %v", got, want)
		}
	})
}

// TestHungStartBlocksNoOther holds one start in its hook and shows that
// another instance still starts, and that a start failing after the fork
// leaves no process.
func TestHungStartBlocksNoOther(t *testing.T) {
	release := make(chan struct{})
	forked := make(chan int, 1)
	hung, _ := start(t, "serve", Config{
		Policy: Policy{Mode: Never},
		Command: func(ctx context.Context, inst InstanceLaunch) (*Process, error) {
			p, err := Exec(ctx, inst)
			if err != nil {
				return nil, err
			}
			p.Start = func() error {
				if err := p.Cmd.Start(); err != nil {
					return err
				}
				forked <- p.Cmd.Process.Pid
				<-release
				return fmt.Errorf("setup failed: %w", ErrPermanent)
			}
			return p, nil
		},
	})
	pid := <-forked
	other, _ := start(t, "serve", Config{})
	waitFor(t, other, "healthy while another start hangs", inState(state.Healthy))
	close(release)
	waitDone(t, hung)
	if st := hung.Status(); st.State != state.Failed || !strings.Contains(st.Reason, "setup failed") {
		t.Errorf("hung start ended %+v, want failed with its reason", st)
	}
	// Killed and reaped: not even a zombie is left.
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d of the failed start survived or was not reaped", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEndStates runs programs that end by themselves under each restart
// mode and checks where the instance ends up.
func TestEndStates(t *testing.T) {
	tests := []struct {
		mode, child string
		want        state.State
		restarts    int
		reason      string
	}{
		{Never, "crash", state.Failed, 0, "exit status 3 (restart policy never)"},
		{Never, "done", state.Stopped, 0, "exit status 0"},
		{OnFailure, "done", state.Stopped, 0, "exit status 0"},
		{OnFailure, "crash", state.Failed, 1, "gave up after 2 failures in a row: exit status 3"},
		{Always, "done", state.Stopped, 2, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.mode+"/"+tt.child, func(t *testing.T) {
			s, rec := start(t, tt.child, Config{Policy: Policy{Mode: tt.mode, Initial: time.Millisecond, GiveUp: 2}})
			if tt.mode == Always {
				// Never ends by itself: stop it after two restarts.
				waitFor(t, s, "2 restarts", func(i state.Instance) bool { return i.Restarts >= 2 })
				s.Stop()
			}
			waitDone(t, s)
			end := s.Status()
			if end.State != tt.want || end.Reason != tt.reason || (tt.mode != Always && end.Restarts != tt.restarts) {
				t.Errorf("ended %s (%q) after %d restarts, want %s (%q) after %d; states %v",
					end.State, end.Reason, end.Restarts, tt.want, tt.reason, tt.restarts, rec.all())
			}
		})
	}
}

// A stop while a restart prepares ends an instance that has run as
// "stopped", as a stop in its backoff does; "stopped before start" is for
// one that never ran.
func TestStopWhileRestartPrepares(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var calls atomic.Int32
	s, _ := start(t, "done", Config{
		Policy: Policy{Mode: Always, Initial: time.Millisecond},
		Prepare: func(ctx context.Context) (InstanceLaunch, error) {
			if calls.Add(1) > 1 {
				<-ctx.Done()
				return InstanceLaunch{}, ctx.Err()
			}
			return InstanceLaunch{Path: exe, Env: []string{childEnv + "=done"}, Dir: dir}, nil
		},
	})
	waitFor(t, s, "a restart preparing", func(i state.Instance) bool { return i.Restarts >= 1 && i.State == state.Fetching })
	s.Stop()
	waitDone(t, s)
	if end := s.Status(); end.State != state.Stopped || end.Reason != "stopped" {
		t.Errorf("ended %s (%q), want stopped (\"stopped\")", end.State, end.Reason)
	}
}

// A check cut by its timeout says so and names the setting, not only
// "context deadline exceeded".
func TestCheckTimeoutNamesTheSetting(t *testing.T) {
	s, _ := start(t, "serve", Config{Health: Health{
		Timeout:    50 * time.Millisecond,
		Interval:   100 * time.Millisecond,
		StartGrace: 200 * time.Millisecond,
		Check: func(ctx context.Context, _ Target) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}})
	waitFor(t, s, "a reason naming [health] timeout", func(i state.Instance) bool {
		return strings.Contains(i.Reason, "no answer within 50ms ([health] timeout)")
	})
}

// A check is told whether the process is starting as the supervisor then
// takes its failure: within the grace, or as the failure reported at the
// end of the grace and those of a process once healthy.
func TestCheckToldWhetherStarting(t *testing.T) {
	check := func(passing *atomic.Bool) func(context.Context, Target) error {
		var n atomic.Int64
		return func(_ context.Context, t Target) error {
			if passing.Load() {
				return nil
			}
			return fmt.Errorf("check %d, starting %v", n.Add(1), t.Starting)
		}
	}
	var never atomic.Bool
	s, _ := start(t, "serve", Config{Health: Health{Interval: time.Hour, StartGrace: time.Hour, Check: check(&never)}})
	waitFor(t, s, "its first failure", func(i state.Instance) bool {
		return i.Reason == "waiting for health check: check 1, starting true"
	})
	var passing atomic.Bool
	s, _ = start(t, "serve", Config{Health: Health{
		Interval:   10 * time.Millisecond,
		Failures:   1,
		StartGrace: 200 * time.Millisecond,
		Check:      check(&passing),
	}})
	st := waitFor(t, s, "its grace over", func(i state.Instance) bool { return strings.HasPrefix(i.Reason, "not healthy 200ms after start: ") })
	if !strings.HasSuffix(st.Reason, ", starting false") {
		t.Errorf("the failure reported at the end of the grace was of a check told it was starting: %q", st.Reason)
	}
	passing.Store(true)
	waitFor(t, s, "healthy", inState(state.Healthy))
	passing.Store(false)
	st = waitFor(t, s, "failing", func(i state.Instance) bool { return strings.HasPrefix(i.Reason, "health check failing: ") })
	if !strings.HasSuffix(st.Reason, ", starting false") {
		t.Errorf("a process once healthy was checked as starting: %q", st.Reason)
	}
}

// TestDialHook shows that health checks reach the app the way its factory
// says (a sandbox with its own network namespace dials through a socket).
func TestDialHook(t *testing.T) {
	s, _ := start(t, "serve", Config{
		Command: func(ctx context.Context, inst InstanceLaunch) (*Process, error) {
			p, err := Exec(ctx, inst)
			if err != nil {
				return nil, err
			}
			p.Dial = func(_ context.Context, _, address string) (net.Conn, error) {
				if address != "app:80" {
					return nil, fmt.Errorf("unexpected address %q", address)
				}
				c, peer := net.Pipe()
				peer.Close()
				return c, nil
			}
			return p, nil
		},
		Health: Health{Check: func(ctx context.Context, t Target) error {
			c, err := t.Dial(ctx, "tcp", "app:80")
			if err != nil {
				return err
			}
			return c.Close()
		}},
	})
	waitFor(t, s, "healthy through the factory's dialer", inState(state.Healthy))
}

// A process that never turns healthy, or stopped being so, is probed at the
// app's interval once its grace period is over, not every 100ms for as long
// as it runs.
// A process that was healthy once is checked every interval after it
// fails too, not at the quick pace of a start: restart_after would
// otherwise count its strikes ten a second.
func TestOnceHealthyCheckedAtInterval(t *testing.T) {
	const interval = 300 * time.Millisecond
	calls := make(chan time.Time, 16)
	var n atomic.Int32
	start(t, "serve", Config{Health: Health{
		Interval:   interval,
		Timeout:    time.Second,
		Failures:   1,
		StartGrace: time.Minute,
		Check: func(context.Context, Target) error {
			select {
			case calls <- time.Now():
			default:
			}
			if n.Add(1) == 1 {
				return nil
			}
			return errors.New("no answer")
		},
	}})
	var at [3]time.Time
	for i := range at {
		select {
		case at[i] = <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("check %d did not come", i+1)
		}
	}
	if gap := at[2].Sub(at[1]); gap < interval {
		t.Errorf("the check after a failure came %s after it; want the interval, %s", gap, interval)
	}
}

func TestHealthCheckPace(t *testing.T) {
	h := Health{Interval: 10 * time.Second, StartGrace: 30 * time.Second}
	for _, c := range []struct {
		name    string
		healthy bool
		since   time.Duration
		want    time.Duration
	}{
		{"starting", false, time.Second, 100 * time.Millisecond},
		{"never healthy after the grace", false, time.Minute, 10 * time.Second},
		{"healthy", true, time.Second, 10 * time.Second},
		{"healthy after the grace", true, time.Minute, 10 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := h.nextCheck(c.healthy, c.since); got != c.want {
				t.Errorf("next check in %s, want %s", got, c.want)
			}
		})
	}
	if got := (Health{Interval: 50 * time.Millisecond, StartGrace: time.Second}).nextCheck(false, 0); got != 50*time.Millisecond {
		t.Errorf("an interval shorter than the start pace: next check in %s", got)
	}
}

// A backoff's reason is published once and read for as long as the backoff
// lasts (heartbeats, app status): it names when the retry comes, which
// stays true, not a countdown that does not move.
func TestBackoffReasonSaysWhen(t *testing.T) {
	const delay = 29356 * time.Millisecond
	s, rec := start(t, "crash", Config{Policy: Policy{Initial: delay, Max: time.Hour}})
	waitFor(t, s, "backoff", inState(state.Backoff))
	rec.mu.Lock()
	var crashed, backoff state.Instance
	for _, c := range rec.changes {
		switch c.State {
		case state.Crashed:
			crashed = c
		case state.Backoff:
			backoff = c
		}
	}
	rec.mu.Unlock()
	// The retry is due delay after a moment between the crash and the
	// backoff's start, shown to the second it falls in.
	var want []string
	for _, since := range []time.Time{crashed.Since, backoff.Since} {
		want = append(want, "exit status 3; retry at "+since.Add(delay).UTC().Format("15:04:05Z")+" (29s backoff)")
	}
	if !slices.Contains(want, backoff.Reason) {
		t.Errorf("backoff reason %q, want one of %q", backoff.Reason, want)
	}
}

func TestRoughly(t *testing.T) {
	for _, c := range []struct{ d, want time.Duration }{
		{time.Millisecond, time.Millisecond},
		{160*time.Millisecond + 400*time.Microsecond, 160 * time.Millisecond},
		{1234 * time.Millisecond, 1200 * time.Millisecond},
		{29356 * time.Millisecond, 29 * time.Second},
		{4*time.Minute + 32500*time.Millisecond, 4*time.Minute + 33*time.Second},
	} {
		if got := roughly(c.d); got != c.want {
			t.Errorf("roughly(%s) = %s, want %s", c.d, got, c.want)
		}
	}
}

// With a JSON journal, the stop timeouts read as durations ("1h0m0s"), not
// as nanoseconds, and carry no err that only repeats that the wait timed
// out; a wait for leftovers that fails otherwise gives its error.
func TestStopTimeoutJournal(t *testing.T) {
	// The leftovers' wait fails at once, as it does at the stop timeout: a
	// long timeout leaves the serve child, which ends at the stop signal,
	// all the time it needs to, however slow the machine.
	timedOut := func(context.Context) error { return context.DeadlineExceeded }
	const leftovers = "stop timeout, killing what the instance's process left"
	for _, c := range []struct {
		name, mode string
		policy     Policy
		timeout    time.Duration
		waitEmpty  func(context.Context) error
		stop       bool
		// msg is the journal's line; with err, it gives that and no timeout.
		msg, err string
	}{
		{"process ignores the stop signal", "stubborn", Policy{}, 100 * time.Millisecond, nil, true, "stop timeout, killing", ""},
		{"leftovers outlive a stop", "serve", Policy{}, time.Hour, timedOut, true, leftovers, ""},
		{"leftovers outlive an exit", "done", Policy{Mode: Never}, time.Hour, timedOut, false, leftovers, ""},
		{"leftovers cannot be told", "serve", Policy{}, time.Hour, func(context.Context) error { return errors.New("read cgroup.events: gone") }, true,
			"wait for what the instance's process left; killing it", "read cgroup.events: gone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out testutil.LogBuffer
			command, _ := signalRecorder(c.waitEmpty)
			s, _ := start(t, c.mode, Config{
				StopTimeout: c.timeout,
				Policy:      c.policy,
				Command:     command,
				Logger:      slog.New(slog.NewJSONHandler(&out, nil)),
			})
			if c.stop {
				waitLine(t, s, state.Stdout, "ready")
				s.Stop()
			}
			waitDone(t, s)
			var found bool
			for line := range strings.Lines(out.String()) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("journal line %q: %v", line, err)
				}
				if rec["msg"] != c.msg {
					continue
				}
				found = true
				if c.err != "" {
					if rec["err"] != c.err || rec["timeout"] != nil {
						t.Errorf("logged err %#v and timeout %#v, want err %q and no timeout: %s", rec["err"], rec["timeout"], c.err, line)
					}
					continue
				}
				if rec["timeout"] != c.timeout.String() {
					t.Errorf("timeout logged as %#v, want %q: %s", rec["timeout"], c.timeout.String(), line)
				}
				if err, ok := rec["err"]; ok {
					t.Errorf("err %#v logged beside a message that says it timed out: %s", err, line)
				}
			}
			if !found {
				t.Errorf("journal lacks %q:\n%s", c.msg, out.String())
			}
		})
	}
}

// A prepare that failed for want of NATS backs off, up to minutes after a
// long outage; Retry, which the runner calls once NATS is back, cuts that
// wait short and starts the backoff again from its first step, so that the
// instance starts within moments of the store answering.
func TestRetryCutsAPrepareBackoffShort(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var online atomic.Bool
	var calls atomic.Int32
	s, _ := start(t, "", Config{
		Policy: Policy{Initial: time.Hour, Max: time.Hour},
		Prepare: func(context.Context) (InstanceLaunch, error) {
			calls.Add(1)
			if !online.Load() {
				return InstanceLaunch{}, errors.New("fetch binary: nats not reachable")
			}
			return InstanceLaunch{Path: exe, Env: []string{childEnv + "=serve"}, Dir: dir}, nil
		},
	})
	waitFor(t, s, "backing off", inState(state.Backoff))
	online.Store(true)
	s.Retry()
	waitFor(t, s, "healthy once retried", inState(state.Healthy))
	if n := calls.Load(); n != 2 {
		t.Errorf("Prepare ran %d times, want 2", n)
	}
}

// A process stopped by SIGSTOP (a debugger, an operator's kill -STOP, a
// freezer) cannot act on its stop signal until it is continued. systemd
// sends SIGCONT right after the stop signal; without it a suspended app
// that would have ended cleanly waits out its whole stop_timeout and is
// killed, while NATS keeps handing it requests.
func TestStopWakesASuspendedProcess(t *testing.T) {
	for _, hooked := range []bool{false, true} {
		t.Run(map[bool]string{false: "group", true: "hook"}[hooked], func(t *testing.T) {
			cfg := Config{StopTimeout: time.Hour}
			if hooked {
				cfg.Command, _ = signalRecorder(nil)
			}
			s, _ := start(t, "serve", cfg)
			waitLine(t, s, state.Stdout, "ready")
			pid := s.Status().PID
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// Before start's cleanup, which waits for the stop: a failing
			// run must not wait out the hour.
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			waitProcState(t, pid, 'T')
			s.Stop()
			waitDone(t, s)
			if end := s.Status(); end.ExitCode == nil || *end.ExitCode != 0 {
				t.Errorf("after stop: %+v, want a clean exit (code 0)", end)
			}
		})
	}
}

// waitProcState waits until /proc/PID/stat shows the process in state.
func waitProcState(t *testing.T, pid int, want byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command name, which is in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never in state %c: %s", pid, want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoppedAsUnhealthyIsNotHealthy stops an instance for its failed
// checks before they reached [health] failures: the stop says why, and
// the status it shows meanwhile (heartbeats, narun_runner_instance_healthy)
// must not still call the instance healthy.
func TestStoppedAsUnhealthyIsNotHealthy(t *testing.T) {
	_, port, err := net.SplitHostPort(testutil.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	s, rec := start(t, "listen:"+port, Config{
		Policy: Policy{Initial: time.Millisecond},
		Health: Health{
			Check:        tcpCheck(port),
			Interval:     10 * time.Millisecond,
			Failures:     3,
			RestartAfter: 1,
			StartGrace:   time.Hour,
		},
	})
	first := waitFor(t, s, "healthy", inState(state.Healthy))
	if err := syscall.Kill(first.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, "healthy again in a new process", func(i state.Instance) bool {
		return i.State == state.Healthy && i.PID != first.PID
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.changes {
		if c.State == state.Stopping && c.Healthy {
			t.Errorf("stopping as unhealthy, yet healthy: %+v", c)
		}
	}
}
