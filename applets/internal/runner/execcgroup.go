package runner

import (
	"context"

	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/sandbox"
)

// execCommand runs an instance of mode "exec" as it is, in a cgroup of its
// own where the node can make one, as systemd runs a service: stopping it
// signals every process of the cgroup, and once it ended whatever is left
// there is killed, so a descendant that left its process group (setsid, a
// daemon's double fork) does not outlive it. Without a cgroup only the
// process group is reached, and the journal names what outlives it.
func (r *Runner) execCommand(ctx context.Context, inst InstanceLaunch) (*supervisor.Process, error) {
	p, err := supervisor.Exec(ctx, inst)
	if err != nil {
		return nil, err
	}
	cg := r.execCgroup(inst)
	if cg == nil {
		// Release runs once the group was killed: what still runs with
		// the instance's identity left the group.
		p.Release = func() {
			if p.Cmd.Process != nil {
				r.warnEscaped(inst, p.Cmd.Process.Pid)
			}
		}
		return p, nil
	}
	p.Start = func() error { return cg.Start(p.Cmd) }
	p.Signal = cg.Signal
	p.Release = func() {
		if err := cg.Remove(); err != nil {
			r.log.Warn("remove the instance's cgroup", "app", inst.App, "instance", inst.Instance, "err", err)
		}
	}
	return p, nil
}

// execCgroup makes the cgroup of an exec instance; nil when the node cannot
// (no cgroup hierarchy, a runner that is not root), which the journal says
// once.
func (r *Runner) execCgroup(inst InstanceLaunch) *sandbox.Cgroup {
	err := sandbox.ErrNoCgroups
	var cg *sandbox.Cgroup
	if r.caps.CgroupVersion > 0 {
		if cg, err = sandbox.NewCgroup(r.instanceCgroup(inst), "", sandbox.Resources{}); err == nil {
			err = cg.Create()
		}
	}
	if err != nil {
		r.noCgroup.Do(func() {
			r.log.Warn(`exec instances run without a cgroup of their own: stopping one reaches only its process group, and processes that leave it outlive the instance; mode = "sandbox" reaches them`,
				"err", err)
		})
		return nil
	}
	return cg
}
