package runner

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// addThirdParty registers a NATS Micro service as a program not built on
// narun's consumer package does: without narun_instance metadata.
func addThirdParty(t *testing.T, c *cluster, name string) {
	t.Helper()
	nc := natstest.Connect(t, c.srv)
	svc, err := micro.AddService(nc, micro.Config{
		Name:     name,
		Version:  "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: name + ".echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	})
	if err != nil {
		t.Fatalf("add service %s: %v", name, err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
}

// A new replica of a service that does not name its instance is not
// vouched for by a replica that answered already: its check passes only
// once a responder appears that was not there when it started.
func TestMicroCheckNotPassedByAnotherReplica(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	addThirdParty(t, c, "thirdparty")
	tr := startRunner(t, c, nil)
	c.deploy(t, "thirdparty", "1.0.0", probeBin, "args = [\"listen\", \""+testutil.FreeAddr(t)+"\"]\n[health]\ntype = \"micro\"\nservice = \"thirdparty\"\nstart_grace = \"1m\"\n")
	l := tr.wait(t, "thirdparty", "a first check", func(l []state.Instance) bool {
		return len(l) == 1 && (l[0].State == state.Healthy || strings.Contains(l[0].Reason, "waiting for health check"))
	})
	if l[0].State == state.Healthy {
		t.Fatalf("instance healthy on the answer of a replica that ran before it; its own process never answered: %+v", l[0])
	}
	// The instance's own responder, as its process would register it.
	addThirdParty(t, c, "thirdparty")
	tr.wait(t, "thirdparty", "healthy", allIn(1, state.Healthy))
}

// A crash restart of an instance whose check passed on an answer naming
// it (narun_instance, as services built on narun's consumer set it) does
// not list the service's responders again: the same binary will name
// itself again, and the listing would add its 300 ms to every restart.
// Its first start still lists them, before any answer said how it names
// itself.
func TestMicroCheckRestartOfNamedInstanceNotListed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	var listings atomic.Int32
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		list := r.responders
		r.responders = func(ctx context.Context, service string) map[string]bool {
			listings.Add(1)
			return list(ctx, service)
		}
	})
	c.deploy(t, "hello", "1.0.0", helloBin, "[[routes]]\npath = \"/hello/\"\n")
	first := tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]
	if n := listings.Load(); n != 1 {
		t.Fatalf("first start listed the responders %d times, want 1", n)
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := tr.wait(t, "hello", "healthy in a new process", func(l []state.Instance) bool {
		return allIn(1, state.Healthy)(l) && l[0].PID != first.PID
	})[0]
	if again.ID != first.ID {
		t.Fatalf("after the kill: instance %s, want %s restarted", again.ID, first.ID)
	}
	if n := listings.Load(); n != 1 {
		t.Errorf("the restart of an instance that named itself listed the responders again (%d listings, want 1)", n)
	}
}

// An instance that serves its NATS Micro service under another name than
// the one its check pings (hello's binary deployed as "sb", whose route's
// service defaults to the app's name) is named with the service it does
// serve, found by its narun_instance metadata; a service of another
// instance is not taken for it.
func TestMicroCheckNamesTheServiceTheInstanceServes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	nc := natstest.Connect(t, c.srv)
	for name, inst := range map[string]string{"hello": "0-mine", "other": "0-theirs"} {
		svc, err := micro.AddService(nc, micro.Config{
			Name:     name,
			Version:  "1.0.0",
			Metadata: map[string]string{instanceMetadata: inst},
			Endpoint: &micro.EndpointConfig{Subject: name + ".echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
		})
		if err != nil {
			t.Fatalf("add service %s: %v", name, err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
	}
	sp, err := spec.Parse("sb.toml", []byte("name = \"sb\"\nversion = \"1\"\nnodes = [\""+node+"\"]\n[[routes]]\npath = \"/sb/\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{opts: Options{Conn: nc}}
	for id, want := range map[string]string{
		"0-mine":  `no answer from instance 0-mine to a ping of NATS Micro service "sb": it serves "hello" (set service = "hello" in [[routes]] and [health], or have the app serve "sb")`,
		"0-other": `no answer from instance 0-other to a ping of NATS Micro service "sb" (an app that serves plain HTTP needs [http] port)`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := r.healthCheck(sp, id, &microResponders{})(ctx, supervisor.Target{})
		cancel()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check of %s: %v\nwant it to say: %s", id, err, want)
		}
	}
}
