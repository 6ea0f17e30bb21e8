package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// ExitSetupFailed is the launcher's exit code when it could not set the
// sandbox up; the reason travels over the status pipe. A supervisor
// should not restart quickly on it: the same config fails the same way.
const ExitSetupFailed = 121

// Environment variables naming the launcher's inherited descriptors; the
// only variables the launcher gets.
const (
	envConfigFD = "NARUN_LAUNCHER_CONFIG_FD"
	envStatusFD = "NARUN_LAUNCHER_STATUS_FD"
)

// launchMsg is what the runner sends the launcher.
type launchMsg struct {
	Config Config      `json:"config"`
	Cgroup *cgroupPlan `json:"cgroup,omitempty"`
	// ResolverPoll: the resolver keeper, if any, polls (takeWatch).
	ResolverPoll bool `json:"resolver_poll,omitempty"`
}

// statusMsg is one line the launcher sends back: a setup failure, the
// app's start, or the app's end.
type statusMsg struct {
	Stage       string `json:"stage,omitempty"` // set on setup failure
	Error       string `json:"error,omitempty"`
	Started     bool   `json:"started,omitempty"`
	LandlockABI int    `json:"landlock_abi,omitempty"` // ABI enforced; 0 = none (best-effort degrade)
	Exited      bool   `json:"exited,omitempty"`
	Code        int    `json:"code,omitempty"`
	Signal      int    `json:"signal,omitempty"`
}

// SetupError is a sandbox that could not be set up; the app never ran.
type SetupError struct {
	// Stage is the step that failed: "config", "cgroup", "mount",
	// "hostname", "keyring", "network", "bridge", "privileges", "landlock",
	// "seccomp", "exec", "namespaces" when the node cannot create them,
	// "user" when the app's uid or gid does not exist in narun's user
	// namespace, or "launcher" when it died without saying why.
	Stage string
	// Msg is the failure, as the launcher saw it.
	Msg string
}

func (e *SetupError) Error() string { return "sandbox setup: " + e.Reason() }

// Reason is the instance state reason, e.g. "landlock: path /x: no such file or directory".
func (e *SetupError) Reason() string { return e.Stage + ": " + e.Msg }

// ExitError is an app that ended unsuccessfully, or whose cgroup counted
// what its exit status does not tell: a process the OOM killer ended, a
// process or thread the pids limit refused.
type ExitError struct {
	// Code is the exit status; -1 when killed by a signal.
	Code int
	// Signal killed the app (or the launcher, if the supervisor killed it).
	Signal syscall.Signal
	// OOM is set when the kernel's OOM killer ended the app itself: it
	// died of SIGKILL while its cgroup counted an OOM kill.
	OOM bool
	// ChildOOM is set when the OOM killer ended another process of the
	// app, which then ended as Code or Signal say.
	ChildOOM bool
	// OOMKills is how many of the run's processes the OOM killer ended.
	OOMKills int64
	// PidsLimited is set when the kernel refused the app a process or
	// thread at a pids limit.
	PidsLimited bool
	// Limits are the app's, which the reason names.
	Limits Resources
}

func (e *ExitError) Error() string { return "app " + e.Reason() }

// OOMKillCount is how many processes of the run the kernel's OOM killer
// killed.
func (e *ExitError) OOMKillCount() int64 { return e.OOMKills }

// Reason is the instance state reason: "oom: ..." naming the memory that
// ran out, "exit status N" or "signal: NAME", followed by what the cgroup counted besides, e.g.
// "exit status 1; a process of the instance was OOM-killed at its memory
// limit of 64MiB ([resources] memory)".
func (e *ExitError) Reason() string {
	var r string
	switch {
	case e.OOM && e.Limits.MemoryMax > 0:
		// "oom" first, as events and the journal have always started.
		r = fmt.Sprintf("oom: killed at its memory limit of %s ([resources] memory)", memorySize(e.Limits.MemoryMax))
	case e.OOM:
		r = "oom: killed by the kernel's OOM killer, with no [resources] memory limit: the node (or a cgroup above the runner's) ran out of memory"
	case e.Signal != 0:
		r = "signal: " + e.Signal.String()
	default:
		r = "exit status " + strconv.Itoa(e.Code)
	}
	if e.ChildOOM {
		if e.Limits.MemoryMax > 0 {
			r += fmt.Sprintf("; a process of the instance was OOM-killed at its memory limit of %s ([resources] memory)", memorySize(e.Limits.MemoryMax))
		} else {
			r += "; a process of the instance was killed by the kernel's OOM killer, with no [resources] memory limit: the node (or a cgroup above the runner's) ran out of memory"
		}
	}
	if e.PidsLimited {
		if e.Limits.PidsMax > 0 {
			r += fmt.Sprintf("; hit its pids limit of %d ([resources] pids)", e.Limits.PidsMax)
		} else {
			r += "; hit the pids limit of a cgroup above the runner's, with no [resources] pids limit"
		}
	}
	return r
}

// exitError is how an app ended, its own exit code or signal, told with
// what its cgroup counted during the run (the cgroup is made afresh for
// each run, so its counters start at zero); nil for an exit 0 with
// nothing counted.
func exitError(code int, sig syscall.Signal, s Stats, r Resources) *ExitError {
	oom, pids := s.OOMKills > 0, s.PidsLimitHits > 0
	if code == 0 && sig == 0 && !oom && !pids {
		return nil
	}
	e := &ExitError{Code: code, Signal: sig, PidsLimited: pids, Limits: r, OOMKills: s.OOMKills}
	if sig != 0 {
		e.Code = -1
	}
	// The OOM killer sends SIGKILL: an app that ended any other way
	// survived the kill of another of its processes (a worker).
	e.OOM = oom && sig == syscall.SIGKILL
	e.ChildOOM = oom && !e.OOM
	return e
}

// memorySize writes n as a spec would: in the largest binary unit that
// divides it.
func memorySize(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.unit)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// Launch is one sandboxed run, built by Command. Set Cmd.Stdin, Cmd.Stdout
// and Cmd.Stderr before Start; the app writes to them directly. Use
// Start, Signal and Wait instead of the Cmd's own methods, and always
// call Cleanup at the end.
type Launch struct {
	// Cmd runs the launcher; the app is its child in the new namespaces.
	Cmd *exec.Cmd

	cfg      Config
	plan     *cgroupPlan
	configW  *os.File
	statusR  *os.File
	childFDs []*os.File
	abi      int
	exit     chan statusMsg // the app's end, or nothing if the launcher died
	startErr error          // what Start returned, for Wait after a failed Start
	watching bool           // its resolver keeper holds one of the runner's inotify slots (takeWatch)
}

// Command prepares the launcher for cfg: it validates cfg, plans the
// cgroups and creates the instance's data/, tmp/ and run/ directories
// owned by the app's user. Cancelling ctx kills the launcher, and with
// it every process of the sandbox.
func Command(ctx context.Context, cfg Config) (*Launch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	plan, err := planCgroups(&cfg)
	if err != nil {
		return nil, &SetupError{Stage: "cgroup", Msg: err.Error()}
	}
	if err := prepareDir(&cfg); err != nil {
		return nil, err
	}
	configR, configW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create config pipe: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		configR.Close()
		configW.Close()
		return nil, fmt.Errorf("create status pipe: %w", err)
	}
	flags := sandboxNamespaces
	if cfg.newNet() {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"narun", "launcher"}
	cmd.Dir = cfg.Dir
	cmd.Env = []string{envConfigFD + "=3", envStatusFD + "=4"}
	cmd.ExtraFiles = []*os.File{configR, statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: uintptr(flags),
		Setpgid:    true,
		// If the runner dies, so does the sandbox: the launcher is PID 1,
		// and the kernel kills the namespace with it.
		Pdeathsig: syscall.SIGKILL,
	}
	return &Launch{
		Cmd:      cmd,
		cfg:      cfg,
		plan:     plan,
		configW:  configW,
		statusR:  statusR,
		childFDs: []*os.File{configR, statusW},
		exit:     make(chan statusMsg, 1),
	}, nil
}

// prepareDir creates data/ and tmp/ for the app's user and run/ for the
// bridge sockets, which only root may enter, and lets the app's group
// into the instance dir.
func prepareDir(cfg *Config) error {
	for _, d := range []struct {
		name string
		mode os.FileMode
		own  bool
	}{{"data", 0o700, true}, {"tmp", 0o700, true}, {"run", 0o700, false}} {
		p := filepath.Join(cfg.Dir, d.name)
		if err := os.MkdirAll(p, d.mode); err != nil {
			return fmt.Errorf("create instance %s dir: %w", d.name, err)
		}
		if d.own {
			if err := os.Chown(p, int(cfg.UID), int(cfg.GID)); err != nil {
				return unmappedID(cfg, fmt.Errorf("give instance %s dir to uid %d: %w", d.name, cfg.UID, err))
			}
		}
	}
	if err := os.Chown(cfg.Dir, -1, int(cfg.GID)); err != nil {
		return unmappedID(cfg, fmt.Errorf("give instance dir to gid %d: %w", cfg.GID, err))
	}
	if err := os.Chmod(cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("open instance dir to its group: %w", err)
	}
	return nil
}

// unmappedID turns err, a chown that failed, into a setup error where
// the cause is a uid or gid that narun's user namespace does not map (in
// an unprivileged container), which chown refuses with EINVAL: such a
// uid exists nowhere, and the same spec fails the same way.
func unmappedID(cfg *Config, err error) error {
	if !errors.Is(err, syscall.EINVAL) {
		return err
	}
	if m, merr := readIDMap("/proc/self/uid_map"); merr == nil && !mapped(m, cfg.UID) {
		return &SetupError{Stage: "user", Msg: fmt.Sprintf(`uid %d is not mapped in this user namespace (narun runs in a container?): set [sandbox] user to a mapped uid or use mode = "exec"`, cfg.UID)}
	}
	if m, merr := readIDMap("/proc/self/gid_map"); merr == nil && !mapped(m, cfg.GID) {
		return &SetupError{Stage: "user", Msg: fmt.Sprintf(`gid %d is not mapped in this user namespace (narun runs in a container?): set [sandbox] group to a mapped gid or use mode = "exec"`, cfg.GID)}
	}
	return err
}

// Start creates the cgroups, starts the launcher, sends it the config
// and waits until the app runs. A sandbox that cannot be set up returns
// a *SetupError, and the launcher has then already been waited for.
func (l *Launch) Start() error {
	l.startErr = l.start()
	return l.startErr
}

func (l *Launch) start() error {
	if l.plan != nil {
		if err := l.plan.create(l.cfg.Resources); err != nil {
			l.closeAll()
			return &SetupError{Stage: "cgroup", Msg: err.Error()}
		}
	}
	err := l.Cmd.Start()
	for _, f := range l.childFDs {
		f.Close()
	}
	if err != nil {
		l.closeAll()
		// Probe should have kept the caller from here; a clone that
		// refuses the namespaces anyway (EINVAL from qemu-user, EPERM
		// from a container's profile) refuses them on every retry.
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EPERM) {
			return &SetupError{Stage: "namespaces", Msg: fmt.Sprintf("start launcher: %v: %s", err, noNamespaces)}
		}
		return fmt.Errorf("start launcher: %w", err)
	}
	msg := launchMsg{Config: l.cfg, Cgroup: l.plan}
	if hasPreset(&l.cfg, PresetDNS) && landlockABI() > 0 {
		if l.watching = takeWatch(); !l.watching {
			msg.ResolverPoll = true
		}
	}
	data, err := json.Marshal(msg)
	if err == nil {
		_, err = l.configW.Write(data)
	}
	l.configW.Close()
	if err != nil {
		// The launcher reports its own failure to read, if it got that far.
		_ = l.Cmd.Process.Kill()
	}
	dec := json.NewDecoder(l.statusR)
	var st statusMsg
	if derr := dec.Decode(&st); derr != nil || !st.Started {
		werr := l.Cmd.Wait()
		l.release()
		l.statusR.Close()
		if derr == nil && st.Error != "" {
			return &SetupError{Stage: st.Stage, Msg: st.Error}
		}
		return &SetupError{Stage: "launcher", Msg: fmt.Sprintf("ended during setup without a reason: %v", werr)}
	}
	l.abi = st.LandlockABI
	go func() {
		defer l.statusR.Close()
		var end statusMsg
		for dec.Decode(&end) == nil {
			if end.Exited {
				l.exit <- end
				return
			}
		}
		close(l.exit)
	}()
	return nil
}

// release gives back what the launcher held of the runner's shares, once
// it has ended.
func (l *Launch) release() {
	if l.watching {
		l.watching = false
		releaseWatch()
	}
}

func (l *Launch) closeAll() {
	for _, f := range append(l.childFDs, l.configW, l.statusR) {
		f.Close()
	}
}

// LandlockABI is the Landlock ABI the app runs under once started; 0
// means unconfined (best-effort on a kernel without Landlock).
func (l *Launch) LandlockABI() int { return l.abi }

// Pid is the launcher's pid in the runner's namespace; signalling it
// reaches the app.
func (l *Launch) Pid() int {
	if l.Cmd.Process == nil {
		return 0
	}
	return l.Cmd.Process.Pid
}

// Signal sends sig to the launcher, which forwards SIGTERM, SIGINT,
// SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the app's process group.
// SIGKILL ends the launcher and so every process of the sandbox.
func (l *Launch) Signal(sig os.Signal) error {
	if l.Cmd.Process == nil {
		return errors.New("sandbox not started")
	}
	return l.Cmd.Process.Signal(sig)
}

// Wait waits for the sandbox to end: nil when the app exited 0 and its
// cgroup counted nothing, else an *ExitError (with OOM set when the
// memory limit killed the app itself).
func (l *Launch) Wait() error {
	if l.startErr != nil || l.Cmd.Process == nil {
		return errors.Join(errors.New("sandbox not started"), l.startErr)
	}
	werr := l.Cmd.Wait()
	l.release()
	end, ok := <-l.exit
	var st Stats
	if l.plan != nil {
		st = l.plan.stats()
	}
	if ok {
		if e := exitError(end.Code, syscall.Signal(end.Signal), st, l.cfg.Resources); e != nil {
			return e
		}
		return nil
	}
	var xe *exec.ExitError
	if errors.As(werr, &xe) {
		ws, _ := xe.Sys().(syscall.WaitStatus)
		var sig syscall.Signal
		if ws.Signaled() {
			sig = ws.Signal()
		}
		if e := exitError(ws.ExitStatus(), sig, st, l.cfg.Resources); e != nil {
			// The launcher is outside the app's cgroup, so a kill
			// counted there was of a process of the app, not of the
			// launcher.
			e.ChildOOM, e.OOM = e.ChildOOM || e.OOM, false
			return e
		}
	}
	if werr != nil {
		return fmt.Errorf("wait for launcher: %w", werr)
	}
	return nil
}

// Stats reads the app's resource use from its cgroup; zero without cgroups.
func (l *Launch) Stats() Stats {
	if l.plan == nil {
		return Stats{}
	}
	return l.plan.stats()
}

// Cleanup kills whatever is left in the sandbox's cgroups and removes
// them, and removes the inbound bridge sockets. Call it after Wait, or
// after a failed Start.
func (l *Launch) Cleanup() error {
	var errs []error
	if l.plan != nil {
		errs = append(errs, l.plan.destroy())
	}
	for _, b := range l.cfg.Inbound {
		if err := os.Remove(b.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove bridge socket: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Reason turns an error of Start or Wait into an instance state reason:
// "oom", "landlock: ...", "exit status 3"; "" for nil.
func Reason(err error) string {
	var se *SetupError
	var xe *ExitError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se):
		return se.Reason()
	case errors.As(err, &xe):
		return xe.Reason()
	}
	return err.Error()
}

// writeStatus sends one status line; errors are ignored because the
// runner may be gone, and then nobody is left to tell.
func writeStatus(w io.Writer, m statusMsg) {
	data, _ := json.Marshal(m)
	_, _ = w.Write(append(data, '\n'))
}
