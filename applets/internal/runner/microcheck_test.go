package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"net"
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
	"github.com/narun/narun/embednats"
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
	// myapi listens on the route's subject under a name of its own, as
	// a consumer with Config.Subject set does: the gateway reaches it, and
	// only the check, which pings by name, needs telling.
	for _, svc := range []struct{ name, inst, subject string }{
		{"hello", "0-mine", "hello.echo"},
		{"other", "0-theirs", "other.echo"},
		{"myapi", "0-subject", "sb"},
	} {
		name := svc.name
		svc, err := micro.AddService(nc, micro.Config{
			Name:     name,
			Version:  "1.0.0",
			Metadata: map[string]string{instanceMetadata: svc.inst},
			Endpoint: &micro.EndpointConfig{Subject: svc.subject, Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
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
		"0-mine":    `no answer from instance 0-mine to a ping of NATS Micro service "sb": it serves "hello" (set service = "hello" in [[routes]] and [health], or have the app serve "sb")`,
		"0-other":   `no answer from instance 0-other to a ping of NATS Micro service "sb" (an app that serves plain HTTP needs [http] port; one that uses NATS may not have reached it: see the app's log (narun ctl logs))`,
		"0-subject": `no answer from instance 0-subject to a ping of NATS Micro service "sb": it serves the subject "sb" under the name "myapi" (set [health] service = "myapi": the check pings a service by its name)`,
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
// at most once per check, and keeps what a lookup found for the rest of
// its streak of failed checks: it looks up again only after a check
// passed.
func TestMicroCheckLooksUpTheServedServiceOncePerStreak(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	// One subscription, so that what the runner sends is seen in the order
	// it sent it: each check pings "sb" from an inbox of its own, and a
	// lookup pings every service. An answer that names the instance to a
	// lookup reaches the watcher before anything the runner sent after it
	// read it.
	watch := natstest.Connect(t, c.srv)
	var (
		mu     sync.Mutex
		id     string
		inbox  = map[string]bool{}
		checks = map[string]bool{}
		// lookups counts the lookups; sinceCheck those since the last
		// check began; found the lookups when one found the service, and
		// checksFound the checks then; twice says a check looked up twice.
		lookups, sinceCheck, found, checksFound int
		twice                                   bool
	)
	if _, err := watch.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m.Subject == "$SRV.PING":
			lookups++
			sinceCheck++
			twice = twice || sinceCheck > 1
			inbox[m.Reply] = true
		case m.Subject == "$SRV.PING.sb" && !checks[m.Reply]:
			checks[m.Reply] = true
			sinceCheck = 0
		case inbox[m.Subject] && id != "":
			var p micro.Ping
			if json.Unmarshal(m.Data, &p) == nil && p.Metadata[instanceMetadata] == id && found != lookups {
				found, checksFound = lookups, len(checks)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	// foundThen3Checks waits for a lookup to find the service and 3 more
	// checks to fail, then says how many lookups there were then and
	// when it was found.
	foundThen3Checks := func(what string, after int) (int, int) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, what, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return found > after && len(checks) >= checksFound+3
		})
		mu.Lock()
		defer mu.Unlock()
		if twice {
			t.Errorf("a check looked the service up more than once")
		}
		return lookups, found
	}
	tr := startRunner(t, c, nil)
	c.deploy(t, "sb", "1.0.0", probeBin, "[[routes]]\npath = \"/sb/\"\n[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfailures = 1\nstart_grace = \"300ms\"\n")
	inst := tr.wait(t, "sb", "its grace over", func(l []state.Instance) bool {
		return len(l) == 1 && strings.Contains(l[0].Reason, "not healthy 300ms after start")
	})[0]
	mu.Lock()
	id = inst.ID
	mu.Unlock()
	// The service the instance serves under another name, as its process
	// would register it, late.
	other, err := micro.AddService(natstest.Connect(t, c.srv), micro.Config{
		Name:     "other",
		Version:  "1.0.0",
		Metadata: map[string]string{instanceMetadata: inst.ID},
		Endpoint: &micro.EndpointConfig{Subject: "other.echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Stop() })
	n, at := foundThen3Checks("a lookup to find the service, then more failed checks", 0)
	if n != at {
		t.Errorf("%d pings of every service by the time 3 checks had failed after the one that found the service, want %d", n, at)
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
	if n, _ := foundThen3Checks("the service found again, then more failed checks once healthy", at); n != at+1 {
		t.Errorf("%d pings of every service by the time 3 checks had failed in a second streak, want %d", n, at+1)
	}
}

// heldServer connects a client in process to srv; a read once hold is set
// returns only with the client's buffer full.
type heldServer struct {
	srv  nats.InProcessConnProvider
	hold atomic.Bool
}

func (h *heldServer) InProcessConn() (net.Conn, error) {
	c, err := h.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return &heldConn{Conn: c, hold: &h.hold}, nil
}

type heldConn struct {
	net.Conn
	hold *atomic.Bool
}

func (c *heldConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil || !c.hold.CompareAndSwap(true, false) {
		return n, err
	}
	m, err := io.ReadFull(c.Conn, p[n:])
	return n + m, err
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
	// The runner's client gets the first answers a full read buffer at a
	// time, as a busy client reads them: its read loop hands the reader
	// some 200 in a row, each faster than the reader decodes one, rather
	// than as few as the scheduler lets through between two reads.
	held := &heldServer{srv: srv}
	r := &Runner{opts: Options{Conn: natstest.Connect(t, srv, nats.InProcessServer(held))}}
	held.hold.Store(true)
	// The lookup lasts as long as it is given, whatever comes: long enough
	// here for the 1000 answers to be sent on a slow machine under the race
	// detector, where 300 ms saw 433 of them. Answers the reader dropped
	// would be missing however long it waited.
	before := r.respondersOf(context.Background(), "busy", 5*time.Second)
	if len(before) != n {
		t.Errorf("listed %d of the %d responders of the service", len(before), n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	known := &microResponders{}
	known.setBaseline(before)
	if err := r.pingInstance(ctx, "busy", "0-new", known, func() servedService { return servedService{} }); err == nil {
		t.Errorf("the check of a new instance passed on the answer of a replica that ran before its process started")
	}
}

// A lookup of the service an instance serves that finds nothing, as when
// the app registers its service late, is made again at the next failed
// check: the instance is not judged for the rest of its streak on what a
// lookup found before the app had registered. Once one finds the service,
// it is kept; a check within the start grace looks nothing up.
func TestMicroCheckLooksAgainForAServiceNotFound(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	run := countedChecks(t, srv, "0-late", 300*time.Millisecond)
	const serves = `it serves "hello"`
	if n, err := run(true); err == nil || n != 0 {
		t.Fatalf("check within the start grace: %v, %d lookups; want a failure and none", err, n)
	}
	if n, err := run(false); err == nil || strings.Contains(err.Error(), serves) || n != 1 {
		t.Fatalf("first check after the grace, nothing registered: %v, %d lookups; want a failure and 1", err, n)
	}
	// The app registers its service, under another name, only now.
	svc, err := micro.AddService(natstest.Connect(t, srv), micro.Config{
		Name:     "hello",
		Version:  "1.0.0",
		Metadata: map[string]string{instanceMetadata: "0-late"},
		Endpoint: &micro.EndpointConfig{Subject: "hello.echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if n, err := run(false); err == nil || !strings.Contains(err.Error(), serves) || n != 2 {
		t.Errorf("check once the app registered late: %v, %d lookups\nwant it to say %s after a second lookup", err, n, serves)
	}
	if n, err := run(false); err == nil || !strings.Contains(err.Error(), serves) || n != 2 {
		t.Errorf("check after the lookup found the service: %v, %d lookups\nwant it to say %s with no more lookup", err, n, serves)
	}
}

// An instance whose service never registers, under any name, does not
// ping every service on the account at each failed check: over a long
// streak of failures the lookups stay few, at failed checks 1, 2, 4, 8…
// of the streak.
func TestMicroCheckLookupsOfAServiceNeverFoundAreBounded(t *testing.T) {
	t.Parallel()
	run := countedChecks(t, natstest.Start(t), "0-never", 100*time.Millisecond)
	const checks = 12
	n := 0
	for i := range checks {
		var err error
		if n, err = run(false); err == nil {
			t.Fatalf("check %d passed with nothing registered", i+1)
		}
	}
	if want := bits.Len(checks); n > want {
		t.Errorf("%d pings of every service over %d failed checks of an instance whose service never registers, want at most %d", n, checks, want)
	}
}

// countedChecks makes the micro check of instance id of app sb, served by
// srv, and returns a run of it that checks the process once (within its
// start grace when starting) and says how many lookups of the service the
// instance serves (pings of every service) all the runs made: the flushes
// let every ping the runner sent reach the watcher's queue first.
func countedChecks(t *testing.T, srv *embednats.Server, id string, each time.Duration) func(starting bool) (int, error) {
	t.Helper()
	nc := natstest.Connect(t, srv)
	watch := natstest.Connect(t, srv)
	lookups, err := watch.SubscribeSync("$SRV.PING")
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	sp, err := spec.Parse("sb.toml", []byte("name = \"sb\"\nversion = \"1\"\nnodes = [\""+node+"\"]\n[[routes]]\npath = \"/sb/\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{opts: Options{Conn: nc}}
	check := r.healthCheck(sp, id, &microResponders{})
	return func(starting bool) (int, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), each)
		err := check(ctx, supervisor.Target{PID: 1, Starting: starting})
		cancel()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, perr := lookups.Pending()
		if perr != nil {
			t.Fatal(perr)
		}
		return n, err
	}
}
