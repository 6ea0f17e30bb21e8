package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
)

// What a heartbeat lists changes without any instance changing state when
// an instance that had ended (failed, stopped) is removed, as a rollback
// over a version that gave up removes it, and when a spec drops the
// instance an [http] port rollout stopped (rolledBack). Nothing else asks
// for a heartbeat then: narun ctl app status listed the removed instance,
// failed, beside the ones restored, until the next heartbeat_interval.
// The heartbeat goroutine is not running here, so the request stays in
// r.beat for the test to see.
func TestRemovalAsksForHeartbeat(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	r, err := New(Options{Config: config.Runner{NodeID: node}, DataDir: t.TempDir(), Conn: c.nc})
	if err != nil {
		t.Fatal(err)
	}
	asked := func() bool {
		select {
		case <-r.beat:
			return true
		default:
			return false
		}
	}

	t.Run("ended instance removed", func(t *testing.T) {
		a := newApp(r, "probe")
		sup := supervisor.New(supervisor.Config{
			Instance: state.Instance{App: a.name, Node: node, ID: "0-aaaaaa"},
			Prepare: func(context.Context) (supervisor.InstanceLaunch, error) {
				return supervisor.InstanceLaunch{}, fmt.Errorf("gave up: %w", supervisor.ErrPermanent)
			},
		})
		go sup.Run(context.Background())
		<-sup.Done()
		if st := sup.Status(); st.State != state.Failed {
			t.Fatalf("instance %+v, want it failed", st)
		}
		in := &instance{sup: sup, dir: filepath.Join(a.dir(), "0-aaaaaa"), logs: newLogLimit(r.publishLog, r.logTimer, a.log)}
		a.insts = []*instance{in}
		asked()
		a.stop([]*instance{in})
		if len(a.instanceList()) != 0 {
			t.Fatal("the instance was not removed")
		}
		if !asked() {
			t.Error("an ended instance was removed without asking for a heartbeat: the last one still lists it")
		}
	})

	t.Run("rolled back instance dropped", func(t *testing.T) {
		a := newApp(r, "web")
		a.rolledBack = &state.Instance{App: a.name, Node: node, ID: "0-bbbbbb", State: state.Failed, Reason: "rollout of 2.0.0 halted"}
		sp, err := spec.Parse("web.toml", []byte("name = \"web\"\nversion = \"1.0.0\"\nnodes = [\""+node+"\"]\nreplicas = 0\n"))
		if err != nil {
			t.Fatal(err)
		}
		asked()
		a.reconcile(context.Background(), sp)
		if _, ok := a.rolledBackState(); ok {
			t.Fatal("the rolled back instance is still listed")
		}
		if !asked() {
			t.Error("the instance an [http] port rollout stopped was dropped from the list without asking for a heartbeat: the last one still lists it")
		}
	})
}

// A deleted app's cached spec goes before its instances stop, which can
// take their stop_timeout: a runner that dies meanwhile (a power cut, a
// kill) and starts again without NATS would otherwise run the deleted app
// again from it, with its files and secrets.
func TestDeletedAppsSpecGoesBeforeItsStop(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "stubborn", "1.0.0", probeBin, "args = [\"stubborn\"]\nstop_timeout = \"10m\"\n")
	in := tr.wait(t, "stubborn", "healthy", allIn(1, state.Healthy))[0]
	tr.waitLine(t, "stubborn", ignoringTERM)
	cached := filepath.Join(tr.specsDir(), "stubborn.toml")
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("cached spec of the running app: %v", err)
	}
	c.remove(t, "stubborn")
	tr.wait(t, "stubborn", "stopping", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Stopping
	})
	_, err := os.Stat(cached)
	// The process ignores SIGTERM: the kill ends its stop now.
	if kerr := syscall.Kill(in.PID, syscall.SIGKILL); kerr != nil {
		t.Fatal(kerr)
	}
	if !os.IsNotExist(err) {
		t.Errorf("cached spec of the deleted app while its instance stops: %v, want it removed", err)
	}
}
