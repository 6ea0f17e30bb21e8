package runner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"

	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/sandbox"
)

// execCommand runs an instance of mode "exec" as it is, in a cgroup of its
// own where the node can make one, as systemd runs a service: the cgroup
// holds the [resources] limits, stopping the instance signals every process
// of it and gives them all the stop timeout, and once the instance ended
// whatever is left there is killed, so a descendant that left its process
// group (setsid, a daemon's double fork) does not outlive it. The cgroup
// also tells the health check and the metrics which processes are the
// instance's. Without a cgroup only the process group is reached, and the
// journal names what outlives it. Either way it starts through narun's
// hidden exec-app applet (sandbox.StartApp), so that the app runs with
// sandbox.AppOOMScoreAdj from its first instruction.
func (r *Runner) execCommand(ctx context.Context, inst InstanceLaunch) (*supervisor.Process, error) {
	p, err := supervisor.Exec(ctx, inst)
	if err != nil {
		return nil, err
	}
	var limits sandbox.Resources
	if inst.Spec != nil {
		limits = cgroupLimits(inst.Spec)
	}
	cg, err := r.execCgroup(inst, limits)
	if err != nil {
		return nil, err
	}
	if cg == nil {
		p.Start = func() error {
			if err := sandbox.StartApp(p.Cmd, p.Cmd.Start); err != nil {
				return permanentExecFailure(err, inst.Path)
			}
			return nil
		}
		// Release runs once the group was killed: what still runs with
		// the instance's identity left the group.
		p.Release = func() {
			r.cpu.runEnded(inst.App, inst.Instance, func() float64 { return reapedCPU(p.Cmd.ProcessState) })
			if p.Cmd.Process != nil {
				r.warnEscaped(inst, p.Cmd.Process.Pid)
			}
		}
		return p, nil
	}
	p.Start = func() error {
		if err := sandbox.StartApp(p.Cmd, func() error { return cg.Start(p.Cmd) }); err != nil {
			if errors.Is(err, sandbox.ErrThreadStuck) {
				return fmt.Errorf("%w: %w", err, supervisor.ErrThreadTainted)
			}
			return permanentExecFailure(err, inst.Path)
		}
		r.execCgroups.set(inst.App, inst.Instance, cg)
		return nil
	}
	p.Wait = func() error {
		err := p.Cmd.Wait()
		// As a sandbox's: what the kernel killed or refused in the
		// cgroup, which the exit status does not say.
		if xe := cg.Explain(p.Cmd.ProcessState); xe != nil {
			return xe
		}
		return err
	}
	p.Signal = cg.Signal
	p.WaitEmpty = cg.WaitEmpty
	p.Procs = cg.Procs
	p.Release = func() {
		r.cpu.runEnded(inst.App, inst.Instance, func() float64 {
			r.execCgroups.set(inst.App, inst.Instance, nil)
			return cg.Stats().CPU.Seconds()
		})
		if err := cg.Remove(); err != nil {
			r.log.Warn("remove the instance's cgroup", "app", inst.App, "instance", inst.Instance, "err", err)
		}
	}
	return p, nil
}

// execCgroup makes the cgroup of an exec instance. Without limits it is
// nil when the node cannot (no cgroup hierarchy, a runner that is not
// root), which the journal says once; with limits that is the instance's
// failure, as a limit is never silently ignored.
func (r *Runner) execCgroup(inst InstanceLaunch, limits sandbox.Resources) (*sandbox.Cgroup, error) {
	err := sandbox.ErrNoCgroups
	var cg *sandbox.Cgroup
	if r.caps.CgroupVersion > 0 {
		if cg, err = sandbox.NewCgroup(r.instanceCgroup(inst), "", limits); err == nil {
			err = cg.Create()
		}
	}
	switch {
	case err == nil:
		return cg, nil
	case limits != sandbox.Resources{}:
		return nil, fmt.Errorf("[resources] limits need a cgroup of the instance's own, and this node cannot make one: %w: %w", err, supervisor.ErrPermanent)
	}
	r.noCgroup.Do(func() {
		// A runner that is not root can make neither: sending its user
		// to mode = "sandbox" would send them to a failure.
		remedy := `mode = "sandbox" reaches them`
		if !r.caps.Sandbox {
			remedy = "a runner run as root makes the cgroup"
		}
		r.log.Warn("exec instances run without a cgroup of their own: stopping one reaches only its process group, and processes that leave it outlive the instance; "+remedy,
			"err", err)
	})
	return nil, nil
}

// execCgroups holds the cgroup of each exec instance that runs in one,
// for the figures of its processes (metrics).
type execCgroups struct {
	mu sync.Mutex
	m  map[string]*sandbox.Cgroup
}

func (e *execCgroups) get(app, id string) *sandbox.Cgroup {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[instKey(app, id)]
}

// set records the cgroup of the instance's running process; nil forgets it.
func (e *execCgroups) set(app, id string, cg *sandbox.Cgroup) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cg == nil {
		delete(e.m, instKey(app, id))
		return
	}
	if e.m == nil {
		e.m = map[string]*sandbox.Cgroup{}
	}
	e.m[instKey(app, id)] = cg
}

// permanentExecFailure marks a start the kernel refused for the binary
// itself as permanent, with why: the same binary would be refused at every
// restart. That is a file it does not execute (ENOEXEC), or a dynamically
// linked one whose loader is not on the node, for which the kernel says
// ENOENT of a file that is there.
func permanentExecFailure(err error, path string) error {
	if errors.Is(err, syscall.ENOEXEC) {
		return fmt.Errorf("%w: %w: %w", err, execFormatHint(path), supervisor.ErrPermanent)
	}
	if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	loader := sandbox.Interpreter(path)
	if loader == "" {
		return err
	}
	if _, serr := os.Stat(loader); !errors.Is(serr, fs.ErrNotExist) {
		return err
	}
	return fmt.Errorf("%w: its ELF loader %s is not on this node: build it static (CGO_ENABLED=0 for Go): %w", err, loader, supervisor.ErrPermanent)
}
