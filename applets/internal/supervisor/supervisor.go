// Package supervisor runs one instance of an app: it prepares it, starts its
// process through a command factory, restarts it by its policy, checks its
// health, stops it (stop signal, timeout, then SIGKILL, to its process group
// or to the processes the factory names) when asked or, if told to, when it
// keeps failing its checks, and keeps its last output lines. It knows
// nothing of NATS, sandboxes or cgroups.
package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"golang.org/x/sys/unix"
)

// ErrPermanent marks a preparation or start error that retrying cannot
// fix: the instance is reported failed at once.
var ErrPermanent = errors.New("permanent failure")

// ErrThreadTainted marks a start error after which the thread that ran
// Process.Start must not start anything again (one left in a cgroup it
// stepped into to fork): that thread ends, with what it forked.
var ErrThreadTainted = errors.New("the thread that started it cannot start another")

// ErrInconclusive marks a failed health check that says nothing of the
// app, such as a NATS ping while the runner itself is offline: it is
// reported like any failure but breaks the row that RestartAfter counts,
// since restarting the app would not bring the check back.
var ErrInconclusive = errors.New("health check inconclusive")

// Inconclusive marks err as ErrInconclusive, keeping its message.
func Inconclusive(err error) error { return inconclusive{err} }

type inconclusive struct{ error }

func (e inconclusive) Unwrap() error        { return e.error }
func (e inconclusive) Is(target error) bool { return target == ErrInconclusive }

// InstanceLaunch is everything needed to start the process of an instance.
type InstanceLaunch struct {
	App      string
	Node     string
	Instance string
	// Mode is "exec" or "sandbox".
	Mode string
	// Path is the verified, read-only binary, or a symlink to it: the
	// process is named after the path's last element (ps, pgrep).
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is the complete environment of the process.
	Env []string
	// Dir is the instance directory and the working directory.
	Dir string
	// Spec is the app spec the instance runs, for factories that need more
	// (a sandbox reads its [sandbox] table, a cgroup its [resources]); may be nil.
	Spec *spec.App
}

// Process is one start of an instance: a command and, for programs that
// need more than exec gives, hooks around it.
type Process struct {
	// Cmd is the command. The supervisor sets its standard streams and puts
	// it in a process group of its own with SIGKILL as parent-death signal;
	// stops signal that group, unless Signal is set.
	Cmd *exec.Cmd
	// Start starts Cmd; nil means Cmd.Start. A sandbox hands its launcher
	// the configuration here. It runs on a thread that outlives the child
	// (see spawn), so the parent-death signal is reliable, unless it
	// returns an ErrThreadTainted.
	Start func() error
	// Wait waits for the end; nil means Cmd.Wait. An error with a
	// Reason() string method explains the end better than an exit status
	// ("oom", "landlock: ...") and becomes the instance's reason.
	Wait func() error
	// Release frees what the run held (cgroups, sockets) once it ended;
	// nil means nothing to free.
	Release func()
	// Signal sends a signal to every process of the run: StopSignal and,
	// once StopTimeout is over, SIGKILL to stop it, and SIGKILL to what
	// is left once it ended. nil means Cmd's process group; a process
	// in a cgroup of its own signals the cgroup, which also holds the
	// processes that left the group.
	Signal func(syscall.Signal) error
	// Dial reaches the app's own addresses (127.0.0.1:port) from the host,
	// for health checks and the HTTP bridge; nil dials directly. A sandbox
	// with a network namespace of its own dials through its bridge sockets.
	Dial DialFunc
	// WaitEmpty returns once every process of the run has ended, or with
	// ctx's error: when a stop's Cmd process ended within StopTimeout,
	// the others (a daemon it started) get what is left of it before
	// SIGKILL, as systemd gives a service's cgroup. nil means a stop ends
	// with Cmd's process, and what it left is killed at once.
	WaitEmpty func(ctx context.Context) error
	// Procs lists every process of the run, wherever it is in the process
	// tree (those of a cgroup), for health checks (Target.Procs); nil
	// means the factory cannot tell them all.
	Procs func() ([]int, error)
}

// DialFunc connects to an address as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

func directDial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// Target is the process a health check probes.
type Target struct {
	// PID is the process the factory started, in the supervisor's PID
	// namespace: the app, or a sandbox launcher whose descendants the
	// app's processes are. A check that must tell the app's own sockets
	// from another program's looks for them there.
	PID int
	// Dial reaches the app's addresses from the host (see Process.Dial).
	Dial DialFunc
	// Procs lists every process of the instance, those that left PID's
	// tree (a daemon's double fork) included, where the factory can tell
	// them (Process.Procs); nil otherwise.
	Procs func() ([]int, error)
	// Starting says that the process has not been healthy yet and that its
	// StartGrace was not over when the check began: a failure then counts
	// for nothing and only the first one is reported, so a check may spare
	// the costly explanation of a failure.
	Starting bool
}

// CommandFactory builds the process of one start of an instance. ctx is
// never cancelled: the supervisor stops processes itself, gracefully.
type CommandFactory func(ctx context.Context, inst InstanceLaunch) (*Process, error)

// Exec is the plain command factory: the binary runs as is. argv[0] is its
// path, which programs that re-execute themselves through it rely on.
func Exec(_ context.Context, inst InstanceLaunch) (*Process, error) {
	return &Process{Cmd: &exec.Cmd{
		Path: inst.Path,
		Args: append([]string{inst.Path}, inst.Args...),
		Env:  inst.Env,
		Dir:  inst.Dir,
	}}, nil
}

// Health is how an instance's health is checked.
type Health struct {
	// Check probes the process t names; nil means healthy as soon as it
	// runs.
	Check func(ctx context.Context, t Target) error
	// Interval is the time between checks; 0 means 10s. Until the first
	// success, and only within StartGrace, checks run every 100ms, so
	// rollouts are quick.
	Interval time.Duration
	// Timeout bounds one check; 0 means 2s.
	Timeout time.Duration
	// Failures in a row that make a healthy instance unhealthy; 0 means 3.
	Failures int
	// StartGrace is how long a new process may take to become healthy before
	// that is reported as a problem; 0 means 30s.
	StartGrace time.Duration
	// RestartAfter is how many failed checks in a row make the supervisor
	// stop the process as unhealthy and apply the policy as after a crash;
	// 0 means never. Checks count once the process has been healthy or
	// StartGrace is over, so a slow start is not cut short.
	RestartAfter int
}

// Config describes one instance.
type Config struct {
	// Instance gives the identity fields of the status (App, Node, ID, Slot,
	// Version, Fingerprint); the rest is maintained by the supervisor.
	Instance state.Instance
	// Prepare fetches what the instance needs and returns how to start it;
	// it runs in state fetching before every start, restarts included, and
	// again with backoff while it fails.
	Prepare func(ctx context.Context) (InstanceLaunch, error)
	// Command builds the process; nil means Exec.
	Command CommandFactory
	Policy  Policy
	Health  Health
	// StopSignal asks the process to stop; 0 means SIGTERM.
	StopSignal syscall.Signal
	// StopTimeout is how long a stopping process may take before its group
	// is killed, with the processes it left if the factory can wait for
	// them (Process.WaitEmpty); 0 means 10s.
	StopTimeout time.Duration
	// OnChange is called with the status after every change, in order. It
	// must not block nor call the Supervisor.
	OnChange func(state.Instance)
	// OnLog is called for every output line. It must not block.
	OnLog func(state.LogLine)
	// MaxLine is the longest line kept whole (at least 16); 0 means 8 KiB.
	MaxLine int
	// KeepLines is how many of the last lines Lines returns; 0 means 100.
	KeepLines int
	// Logger receives the supervisor's own messages, with the instance id
	// added; nil discards them.
	Logger *slog.Logger
}

// Supervisor runs one instance. Create it with New, then call Run.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	lines *ring[state.LogLine]

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	// retry cuts short the wait after a failed prepare (Retry).
	retry chan struct{}

	mu      sync.Mutex
	st      state.Instance
	changed chan struct{}
	dial    DialFunc
	// exitCode is the code of a process that has ended, held until the
	// state that follows its end is set.
	exitCode *int
	// oomKills counts the processes of ended runs that the kernel's OOM
	// killer killed.
	oomKills int64

	// lastExit is why the previous process ended (after lastExitPrefix), shown as the reason
	// while its successor runs: a crash loop between two status reads
	// would otherwise show only a restart count. Only run uses it.
	lastExit string

	// stopSignal and stopTimeout, under mu, start as the Config's and
	// follow SetStop; policy likewise follows SetPolicy.
	stopSignal  syscall.Signal
	stopTimeout time.Duration
	policy      Policy
}

// New returns a supervisor in state pending.
func New(cfg Config) *Supervisor {
	if cfg.Command == nil {
		cfg.Command = Exec
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = 8 << 10
	}
	cfg.MaxLine = max(cfg.MaxLine, 16)
	if cfg.KeepLines <= 0 {
		cfg.KeepLines = 100
	}
	h := &cfg.Health
	if h.Interval <= 0 {
		h.Interval = 10 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Failures <= 0 {
		h.Failures = 3
	}
	if h.StartGrace <= 0 {
		h.StartGrace = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := cfg.Instance
	st.State, st.Since = state.Pending, time.Now()
	return &Supervisor{
		cfg:         cfg,
		log:         log.With("instance", st.ID),
		lines:       newRing[state.LogLine](cfg.KeepLines),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		retry:       make(chan struct{}, 1),
		st:          st,
		changed:     make(chan struct{}),
		stopSignal:  cfg.StopSignal,
		stopTimeout: cfg.StopTimeout,
		policy:      cfg.Policy,
	}
}

// SetPolicy changes the restart policy the instance's next exit (or failed
// prepare) is judged by, with the failures counted so far: a spec that
// changes only [restart] restarts nothing, and an app restarting in a loop
// must stop at the max_failures or policy it now has, not run on under the
// ones it started with.
func (s *Supervisor) SetPolicy(p Policy) {
	s.mu.Lock()
	s.policy = p
	s.mu.Unlock()
}

func (s *Supervisor) policyNow() Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

// SetStop changes the signal and timeout of the instance's next stop (0
// means SIGTERM and 10s, as in Config). A spec that changes only
// stop_signal or stop_timeout restarts nothing, yet the stop that follows
// (a delete, a rollout, the runner's own stop) must do what the spec now
// says, as systemd stops a service with the TimeoutStopSec= of its last
// reload: an operator who lowers a timeout to fit the service manager's
// would otherwise still wait the old one. A stop under way keeps the
// values it began with.
func (s *Supervisor) SetStop(sig syscall.Signal, timeout time.Duration) {
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	s.mu.Lock()
	s.stopSignal, s.stopTimeout = sig, timeout
	s.mu.Unlock()
}

// StopTimeout is the timeout a stop begun now would use: that of the
// spec the instance was started with, or of its last SetStop.
func (s *Supervisor) StopTimeout() time.Duration {
	_, timeout := s.stopWith()
	return timeout
}

// stopWith is the signal and timeout a stop begun now uses.
func (s *Supervisor) stopWith() (syscall.Signal, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopSignal, s.stopTimeout
}

// Status returns the current status.
func (s *Supervisor) Status() state.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// OOMKills is how many processes of the runs that ended the kernel's OOM
// killer killed, as their cgroups counted; Process.Wait's error tells
// with an OOMKillCount() int64 method.
func (s *Supervisor) OOMKills() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oomKills
}

// Changed returns a channel closed at the next status change.
func (s *Supervisor) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Dial returns how to reach the app's addresses from the host, as the
// factory of its current process said.
func (s *Supervisor) Dial() DialFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dial == nil {
		return directDial
	}
	return s.dial
}

// Lines returns the last output lines, oldest first.
func (s *Supervisor) Lines() []state.LogLine { return s.lines.all() }

// Retry cuts short the wait after a prepare that failed, and starts its
// backoff again from the first step: the runner calls it when NATS is
// back, which a fetch waited for, so that an instance that backed off
// through a long outage (up to Policy.Max) starts within moments. It does
// nothing to an instance that is not waiting to prepare again.
func (s *Supervisor) Retry() {
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// Stop asks the instance to stop; Done is closed once it has.
func (s *Supervisor) Stop() { s.stopOnce.Do(func() { close(s.stop) }) }

// Done is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// update applies f to the status and publishes the result.
func (s *Supervisor) update(f func(st *state.Instance)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.st
	f(&s.st)
	if s.st.State != prev.State {
		s.st.Since = time.Now()
		s.logChange(prev.State, s.st)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(s.st)
	}
}

// logChange writes the transitions an operator reading the node's journal
// needs (start, health, exit, give-up, stop) at the level they deserve; the
// same changes also go to narun.events, but the journal is what is left when
// NATS is not reachable.
func (s *Supervisor) logChange(prev state.State, cur state.Instance) {
	switch cur.State {
	case state.Running:
		if prev == state.Healthy {
			s.log.Warn("instance unhealthy", "pid", cur.PID, "reason", cur.Reason)
		} else {
			s.log.Info("instance started", "pid", cur.PID, "version", cur.Version)
		}
	case state.Healthy:
		// Without a check an instance is healthy as soon as it runs: the
		// line would only repeat "started".
		if s.cfg.Health.Check != nil {
			s.log.Info("instance healthy", "pid", cur.PID)
		}
	case state.Crashed:
		s.log.Warn("instance exited", "reason", cur.Reason, "restarts", cur.Restarts)
	case state.Failed:
		s.log.Error("instance failed; not restarting it", "reason", cur.Reason, "restarts", cur.Restarts)
	case state.Stopped:
		s.log.Info("instance stopped", "reason", cur.Reason)
	default:
		s.log.Debug("instance state", "state", cur.State, "reason", cur.Reason)
	}
}

func (s *Supervisor) set(st state.State, reason string) {
	s.update(func(i *state.Instance) {
		i.State, i.Reason = st, reason
		if !st.Up() {
			i.PID, i.Started, i.Healthy = 0, time.Time{}, false
			if s.exitCode != nil {
				i.ExitCode, s.exitCode = s.exitCode, nil
			}
		}
	})
}

// Run supervises the instance until Stop is called, ctx is cancelled (both
// stop the process gracefully) or it ends for good, stopped or failed.
func (s *Supervisor) Run(ctx context.Context) {
	defer close(s.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	var streak Streak
	for restarts := 0; ; restarts++ {
		if restarts > 0 {
			s.update(func(i *state.Instance) { i.Restarts = restarts })
		}
		// Every start prepares again: the binary on disk is checked
		// against its digest before each exec, not only the first, and a
		// restart gets the secrets and files the store holds now.
		launch, ok := s.prepare(ctx, restarts > 0)
		if !ok {
			return
		}
		s.set(state.Starting, "")
		exit, err := s.runOnce(ctx, launch)
		if ctx.Err() != nil {
			s.set(state.Stopped, cmp.Or(exit.Killed, "stopped"))
			return
		}
		if err != nil {
			if errors.Is(err, ErrPermanent) {
				s.set(state.Failed, err.Error())
				return
			}
			exit = Exit{Code: -1}
		}
		policy := s.policyNow()
		d := policy.Decide(exit, streak, rand.Float64())
		streak = d.Streak
		reason := exit.String()
		if err != nil {
			reason = err.Error()
		}
		if !d.Restart {
			switch {
			case d.GaveUp && policy.Mode == Never:
				s.set(state.Failed, reason+" (restart policy never)")
			case d.GaveUp:
				s.set(state.Failed, fmt.Sprintf("gave up after %s: %s", inARow(streak.Crashes, "failure", "failures"), reason))
			default:
				s.set(state.Stopped, reason)
			}
			return
		}
		// A process stopped as unhealthy, or that ended with status 0
		// under restart "always", did not crash: backoff, with the
		// reason, says what happened.
		if !exit.Unhealthy && exit.Failure() {
			s.set(state.Crashed, reason)
		}
		s.lastExit = reason
		if _, ok := s.backoff(ctx, d.Delay, reason, nil); !ok {
			return
		}
	}
}

// prepare runs Prepare until it succeeds or fails with ErrPermanent,
// backing off between attempts whatever the restart mode and however many
// failures the policy tolerates: those count what the process did, and a
// fetch that fails (NATS away, a full disk) says nothing about it. again
// says the instance ran before.
func (s *Supervisor) prepare(ctx context.Context, again bool) (InstanceLaunch, bool) {
	var failures Streak
	for {
		retry := s.policyNow()
		retry.Mode, retry.GiveUp = Always, 0
		// A Retry sent before this attempt is answered by it, and must
		// not cut the wait after it short.
		select {
		case <-s.retry:
		default:
		}
		s.set(state.Fetching, "")
		launch, err := s.cfg.Prepare(ctx)
		if ctx.Err() != nil {
			// A stop while a restart prepares ends an instance that ran,
			// as one during its backoff does.
			if again {
				s.set(state.Stopped, "stopped")
			} else {
				s.set(state.Stopped, "stopped before start")
			}
			return launch, false
		}
		if err == nil {
			return launch, true
		}
		s.log.Warn("prepare instance", "err", err)
		if errors.Is(err, ErrPermanent) {
			s.set(state.Failed, err.Error())
			return launch, false
		}
		d := retry.Decide(Exit{Code: 1}, failures, rand.Float64())
		failures = d.Streak
		cut, ok := s.backoff(ctx, d.Delay, err.Error(), s.retry)
		if !ok {
			return launch, false
		}
		if cut {
			failures = Streak{}
		}
	}
}

// backoff waits before a retry, or until cut receives (cut); ok false
// means a stop ended the wait.
func (s *Supervisor) backoff(ctx context.Context, d time.Duration, reason string, cut <-chan struct{}) (cutShort, ok bool) {
	// The reason is read for as long as the wait lasts (heartbeats, app
	// status), so it names the moment of the retry, which stays true, in
	// UTC, since the node's time zone is not the reader's.
	at := time.Now().Add(d).UTC().Format("15:04:05Z")
	s.set(state.Backoff, fmt.Sprintf("%s; retry at %s (%s backoff)", reason, at, roughly(d)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, true
	case <-cut:
		return true, true
	case <-ctx.Done():
		s.set(state.Stopped, "stopped")
		return false, false
	}
}

// roughly rounds a wait to what a reader needs of it: whole seconds from
// 10s, tenths of a second from 1s, milliseconds below.
func roughly(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// runOnce starts the process and waits for it to exit, stopping it when ctx
// is cancelled.
func (s *Supervisor) runOnce(ctx context.Context, launch InstanceLaunch) (Exit, error) {
	if err := ctx.Err(); err != nil {
		return Exit{}, err
	}
	p, err := s.cfg.Command(context.WithoutCancel(ctx), launch)
	if err != nil {
		return Exit{}, fmt.Errorf("build command: %w", err)
	}
	cmd := p.Cmd
	if p.Release != nil {
		defer p.Release()
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return Exit{}, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Exit{}, fmt.Errorf("stderr pipe: %w", err)
	}
	// Files, not writers: the child writes straight into the pipes, so
	// Wait returns when the process exits, whoever still holds them open.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, outW, errW
	start, wait := p.Start, p.Wait
	if start == nil {
		start = cmd.Start
	}
	if wait == nil {
		wait = cmd.Wait
	}
	err = spawn(cmd, start)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		if cmd.Process != nil {
			// Started, then failed (a sandbox's setup): nothing of it
			// stays, not even a zombie.
			s.signalGroup(cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
		return Exit{}, fmt.Errorf("start %s: %w", launch.Path, err)
	}
	pid := cmd.Process.Pid
	var signal func(syscall.Signal)
	if p.Signal == nil {
		g := &group{s: s, pid: pid}
		signal, wait = g.signal, g.waitThen(wait)
	} else {
		signal = func(sig syscall.Signal) {
			if err := p.Signal(sig); err != nil {
				s.log.Warn("signal the instance's processes", "pid", pid, "signal", sig, "err", err)
			}
		}
	}
	started := time.Now()
	reason := ""
	if s.lastExit != "" {
		reason = lastExitPrefix + s.lastExit
	}
	s.update(func(i *state.Instance) {
		i.State, i.Reason, i.PID, i.Started, i.ExitCode, i.Healthy = state.Running, reason, pid, started, nil, false
		s.dial = p.Dial
	})

	var readers sync.WaitGroup
	for _, o := range []struct {
		r      *os.File
		stream string
	}{{outR, state.Stdout}, {errR, state.Stderr}} {
		readers.Go(func() {
			defer o.r.Close()
			s.forward(o.r, o.stream)
		})
	}
	waited := make(chan error, 1)
	go func() { waited <- wait() }()
	hctx, hcancel := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	sick := make(chan string, 1)
	go func() {
		defer close(healthDone)
		s.watchHealth(hctx, pid, p.Procs, started, sick)
	}()

	var werr error
	unhealthy, killed, exited := "", "", false
	select {
	case werr = <-waited:
		exited = true
	case unhealthy = <-sick:
		s.log.Warn("instance unhealthy, stopping it", "pid", pid, "reason", unhealthy)
		// restart_after may come before [health] failures turned it
		// unhealthy: a stop for failing its checks must not show it
		// healthy for as long as the stop lasts.
		s.update(func(i *state.Instance) { i.State, i.Reason, i.Healthy = state.Stopping, unhealthy, false })
		sig, timeout := s.stopWith()
		_, werr = s.terminate(pid, sig, timeout, signal, waited, p.WaitEmpty)
	case <-ctx.Done():
		sig, timeout := s.stopWith()
		// A stop_timeout may be long: app status says, meanwhile, why
		// the instance still runs and when it will be killed.
		s.set(state.Stopping, fmt.Sprintf("%s sent; killed at %s (stop_timeout %s) unless it ends before",
			signalName(sig), time.Now().Add(timeout).UTC().Format("15:04:05Z"), timeout))
		killed, werr = s.terminate(pid, sig, timeout, signal, waited, p.WaitEmpty)
	}
	hcancel()
	<-healthDone
	if exited {
		s.endLeftovers(pid, signal, p.WaitEmpty)
	}
	// Whatever the app left behind goes with it (a process group's
	// leftovers went before its leader was reaped: group.waitThen).
	if p.Signal != nil {
		signal(syscall.SIGKILL)
	}
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(time.Second):
		// A process that left the group keeps the pipe open; its lines
		// keep flowing, but the instance does not wait for it.
	}

	exit := Exit{Code: -1, Ran: time.Since(started), Killed: killed}
	if ps := cmd.ProcessState; ps != nil {
		exit.Code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// "SIGKILL", not Go's "killed": "killed by killed" says nothing.
			exit.Code, exit.Signal = -1, cmp.Or(unix.SignalName(ws.Signal()), ws.Signal().String())
		}
	}
	var explained interface{ Reason() string }
	if errors.As(werr, &explained) {
		exit.Reason = explained.Reason()
	}
	var ooms interface{ OOMKillCount() int64 }
	if errors.As(werr, &ooms) {
		s.mu.Lock()
		s.oomKills += ooms.OOMKillCount()
		s.mu.Unlock()
	}
	if unhealthy != "" {
		// However the stopped process exited, it ended because it failed
		// its checks, and that counts as a failure.
		exit.Reason, exit.Unhealthy = unhealthy, true
	}
	// The exit is recorded with the state the caller decides next, in one
	// change: a status read in between must not show a healthy instance
	// without a process.
	code := exit.Code
	s.mu.Lock()
	s.exitCode = &code
	s.mu.Unlock()
	return exit, nil
}

// terminate stops the process: the stop signal, then SIGKILL once
// StopTimeout is over, each to every process signal reaches. With
// waitEmpty (Process.WaitEmpty), the timeout is the whole run's: the
// process that ended in time waits, within it, for the others. It
// returns what waited gives and, when the process had to be killed, the
// reason that says so.
func (s *Supervisor) terminate(pid int, sig syscall.Signal, timeout time.Duration, signal func(syscall.Signal), waited <-chan error, waitEmpty func(context.Context) error) (killed string, err error) {
	sendStop(signal, sig)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case err = <-waited:
	case <-ctx.Done():
		s.log.Warn("stop timeout, killing", "pid", pid, "timeout", timeout.String())
		signal(syscall.SIGKILL)
		killed = fmt.Sprintf("killed, as it did not end within its stop_timeout of %s after %s", timeout, signalName(sig))
		return killed, <-waited
	}
	if waitEmpty == nil {
		return "", err
	}
	if werr := waitEmpty(ctx); werr != nil {
		s.killLeftovers(pid, signal, timeout, werr)
	}
	return "", err
}

// sendStop sends the stop signal, then SIGCONT, as systemd does: a
// suspended process (kill -STOP, a debugger) acts on the stop signal only
// once continued, and would otherwise be killed at the stop timeout
// without a chance to end cleanly.
func sendStop(signal func(syscall.Signal), sig syscall.Signal) {
	signal(sig)
	if sig != syscall.SIGKILL && sig != syscall.SIGCONT {
		signal(syscall.SIGCONT)
	}
}

// signalName is "SIGTERM", not Go's "terminated".
func signalName(sig syscall.Signal) string { return cmp.Or(unix.SignalName(sig), sig.String()) }

// endLeftovers stops what the process left running when it ended on its
// own (a daemon it started), as systemd stops a service whose main process
// exited: the stop signal, then SIGKILL once StopTimeout is over. Only a
// run whose processes can all be told (waitEmpty, Process.WaitEmpty) has
// any to wait for; one that left none goes on at once.
func (s *Supervisor) endLeftovers(pid int, signal func(syscall.Signal), waitEmpty func(context.Context) error) {
	if waitEmpty == nil {
		return
	}
	now, cancel := context.WithCancel(context.Background())
	cancel()
	if waitEmpty(now) == nil {
		return
	}
	s.set(state.Stopping, "its process exited; stopping what it left running")
	sig, timeout := s.stopWith()
	sendStop(signal, sig)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := waitEmpty(ctx); err != nil {
		s.killLeftovers(pid, signal, timeout, err)
	}
}

// killLeftovers kills what the process of pid left once waiting for it to
// end failed with err: at the stop timeout, or for another reason, which
// the journal then gives instead.
func (s *Supervisor) killLeftovers(pid int, signal func(syscall.Signal), timeout time.Duration, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("stop timeout, killing what the instance's process left", "pid", pid, "timeout", timeout.String())
	} else {
		s.log.Warn("wait for what the instance's process left; killing it", "pid", pid, "err", err)
	}
	signal(syscall.SIGKILL)
}

// group signals the process group a process leads. The group's id is the
// leader's pid, which the kernel may give to a new process once the leader
// is reaped; a signal to the group after that could reach a stranger. So
// the group is signalled only while its leader, alive or a zombie, still
// holds the pid, and what it left behind is killed before it is reaped.
type group struct {
	s      *Supervisor
	pid    int
	mu     sync.Mutex
	reaped bool
}

func (g *group) signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.reaped {
		g.s.signalGroup(g.pid, sig)
	}
}

// waitThen returns a wait that waits for the leader's exit without reaping
// it (waitid with WNOWAIT), kills the rest of its group, then reaps it with
// reap.
func (g *group) waitThen(reap func() error) func() error {
	return func() error {
		var err error = unix.EINTR
		for errors.Is(err, unix.EINTR) {
			var info unix.Siginfo
			err = unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if err != nil {
			g.s.log.Warn("wait for the instance's process without reaping it; its group is not signalled again", "pid", g.pid, "err", err)
		} else {
			g.s.signalGroup(g.pid, syscall.SIGKILL)
		}
		g.reaped = true
		return reap()
	}
}

func (s *Supervisor) signalGroup(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.log.Warn("signal process group", "pid", pid, "signal", sig, "err", err)
	}
}

func (s *Supervisor) forward(r io.Reader, stream string) {
	id := s.cfg.Instance
	splitLines(r, s.cfg.MaxLine, func(b []byte, partial bool) {
		l := state.LogLine{
			Time: time.Now(), App: id.App, Node: id.Node, Instance: id.ID,
			Stream: stream, Line: string(b), Partial: partial,
		}
		s.lines.add(l)
		if s.cfg.OnLog != nil {
			s.cfg.OnLog(l)
		}
	})
}

// watchHealth checks the process with pid until ctx is done and reflects
// the result in the status. Once RestartAfter checks in a row have failed,
// it sends why on sick and stops checking.
func (s *Supervisor) watchHealth(ctx context.Context, pid int, procs func() ([]int, error), started time.Time, sick chan<- string) {
	h := s.cfg.Health
	if h.Check == nil {
		s.setHealth(pid, true, "")
		return
	}
	// noted and warned say whether the first failed check and the end of
	// the grace period were reported: once each per process, so a starting
	// app does not publish a change every retry. Both are about a start: once
	// the process was healthy, its failure keeps the reason that says so.
	healthy, fails, noted, warned := false, 0, false, false
	// strikes are the failed checks in a row that RestartAfter counts: only
	// once the process has been healthy or its grace is over.
	wasHealthy, strikes := false, 0
	for {
		// The grace is judged when a check begins, so that the check is
		// told what its failure will count for.
		since := time.Since(started)
		starting := !wasHealthy && since <= h.StartGrace
		cctx, cancel := context.WithTimeout(ctx, h.Timeout)
		err := h.Check(cctx, Target{PID: pid, Dial: s.Dial(), Procs: procs, Starting: starting})
		if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrInconclusive) {
			err = fmt.Errorf("no answer within %s ([health] timeout): %w", h.Timeout, err)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil, errors.Is(err, ErrInconclusive):
			strikes = 0
		case !starting:
			strikes++
		}
		switch {
		case err == nil:
			fails = 0
			wasHealthy = true
			if !healthy {
				healthy = true
				s.setHealth(pid, true, "")
			}
		case healthy:
			fails++
			if fails >= h.Failures {
				healthy, noted, warned = false, true, true
				s.setHealth(pid, false, "health check failing: "+err.Error())
			}
		case !warned && !starting:
			warned, noted = true, true
			s.setHealth(pid, false, fmt.Sprintf("not healthy %s after start: %v", h.StartGrace, err))
		case !noted:
			noted = true
			s.setHealth(pid, false, "waiting for health check: "+err.Error())
		}
		if h.RestartAfter > 0 && strikes >= h.RestartAfter {
			sick <- fmt.Sprintf("unhealthy after %s: %v", inARow(strikes, "failed health check", "failed health checks"), err)
			return
		}
		t := time.NewTimer(h.nextCheck(wasHealthy, since))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// nextCheck is the time until the next check. Until the first success
// and within the grace period checks run every 100ms, so rollouts are
// quick; after it, an instance that never got healthy or stopped being so
// is checked every Interval like a healthy one, so a hung app does not
// draw ten probes a second for as long as it runs.
func (h Health) nextCheck(succeeded bool, sinceStart time.Duration) time.Duration {
	if !succeeded && sinceStart <= h.StartGrace {
		return min(h.Interval, 100*time.Millisecond)
	}
	return h.Interval
}

func (s *Supervisor) setHealth(pid int, healthy bool, reason string) {
	s.mu.Lock()
	current := s.st.PID == pid && (s.st.State == state.Running || s.st.State == state.Healthy)
	s.mu.Unlock()
	if !current {
		return
	}
	s.update(func(i *state.Instance) {
		if i.PID != pid || (i.State != state.Running && i.State != state.Healthy) {
			return
		}
		// A health check with nothing to say keeps why the previous
		// process ended: "healthy" would otherwise hide a crash loop
		// between two status reads. It is taken from the record, not from
		// the reason shown: the checks that failed while this process
		// started replaced that. (lastExit is written only between two
		// processes, before this one's checks began.)
		if reason == "" && s.lastExit != "" {
			reason = lastExitPrefix + s.lastExit
		}
		i.Healthy, i.Reason = healthy, reason
		i.State = state.Running
		if healthy {
			i.State = state.Healthy
		}
	})
}

// lastExitPrefix starts the reason of a process started again after an
// exit: it names why the one before ended.
const lastExitPrefix = "last exit: "

// inARow counts n of something for a reason an operator reads: "3
// failures in a row", but "1 failure", where max_failures or
// restart_after = 1 leaves no row to speak of.
func inARow(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s in a row", n, many)
}
