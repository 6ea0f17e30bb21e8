package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// An instance whose NATS Micro check keeps failing looks up the service it
// serves (a ping of every service, which each one on the account answers)
// once per streak of failed checks, not at every check: not during its
// start grace, whose failures are not reported but the first, and once
// more only after a check passed.
func TestMicroCheckLooksUpTheServedServiceOncePerStreak(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	// One subscription, so that the pings are counted in the order the
	// runner sent them: each check pings "sb" from an inbox of its own.
	watch := natstest.Connect(t, c.srv)
	var mu sync.Mutex
	lookups, checks := 0, map[string]bool{}
	if _, err := watch.Subscribe("$SRV.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch m.Subject {
		case "$SRV.PING":
			lookups++
		case "$SRV.PING.sb":
			checks[m.Reply] = true
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return lookups, len(checks)
	}
	// afterChecks waits for n more checks, then says how many lookups
	// there were.
	afterChecks := func(what string, n int) int {
		t.Helper()
		_, from := counts()
		testutil.Eventually(t, 30*time.Second, what, func() bool { _, now := counts(); return now >= from+n })
		l, _ := counts()
		return l
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "sb", "1.0.0", probeBin, "[[routes]]\npath = \"/sb/\"\n[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfailures = 1\nstart_grace = \"300ms\"\n")
	tr.wait(t, "sb", "its grace over", func(l []state.Instance) bool {
		return len(l) == 1 && strings.Contains(l[0].Reason, "not healthy 300ms after start")
	})
	if n := afterChecks("more failed checks", 3); n != 1 {
		t.Errorf("%d pings of every service by the time 3 checks had failed after the start grace, want 1", n)
	}
	// The instance's responder, as a process would register it.
	svc, err := micro.AddService(natstest.Connect(t, c.srv), micro.Config{
		Name:     "sb",
		Version:  "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "sb.echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "sb", "healthy", allIn(1, state.Healthy))
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "sb", "failing again", func(l []state.Instance) bool {
		return len(l) == 1 && strings.HasPrefix(l[0].Reason, "health check failing")
	})
	if n := afterChecks("more failed checks once healthy", 3); n != 2 {
		t.Errorf("%d pings of every service by the time 3 checks had failed in a second streak, want 2", n)
	}
}

// A service with more responders across a cluster than a check reads at
// once (the old channel held 64 answers) has every one of them in the
// list taken before a new instance's process starts, so that none of them
// passes the new instance's check for it.
func TestMicroCheckListsEveryResponderOfABusyService(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	replicas := natstest.Connect(t, srv)
	// Far more than 64, so that the answers, arriving together as they do
	// from across a cluster, outrun a reader that decodes each one.
	const n = 1000
	answers := make([][]byte, n)
	for i := range answers {
		var err error
		if answers[i], err = json.Marshal(micro.Ping{
			ServiceIdentity: micro.ServiceIdentity{Name: "busy", ID: fmt.Sprintf("replica-%d", i), Version: "1.0.0"},
			Type:            micro.PingResponseType,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := replicas.Subscribe("$SRV.PING.busy", func(m *nats.Msg) {
		for _, a := range answers {
			_ = m.Respond(a)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := replicas.Flush(); err != nil {
		t.Fatal(err)
	}
	r := &Runner{opts: Options{Conn: natstest.Connect(t, srv)}}
	before := r.respondersOf(context.Background(), "busy", 300*time.Millisecond)
	if len(before) != n {
		t.Errorf("listed %d of the %d responders of the service", len(before), n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	known := &microResponders{}
	known.setBaseline(before)
	if err := r.pingInstance(ctx, "busy", "0-new", known, func() string { return "" }); err == nil {
		t.Errorf("the check of a new instance passed on the answer of a replica that ran before its process started")
	}
}
