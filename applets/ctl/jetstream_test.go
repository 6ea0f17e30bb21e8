package ctl

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// startWithoutJetStream runs a NATS server with JetStream off on addr,
// as a cluster member looks to clients while its JetStream is starting.
func startWithoutJetStream(t *testing.T, addr string) *server.Server {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{Host: host, NoLog: true, NoSigs: true}
	if opts.Port, err = net.LookupPort("tcp", port); err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// A command sent while JetStream is not answering yet waits for it
// instead of failing with "no responders".
func TestWaitsForJetStream(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	early := startWithoutJetStream(t, addr)
	h := &harness{t: t, url: "nats://" + addr, dir: t.TempDir()}
	h.config = filepath.Join(h.dir, "narun.toml")
	if err := os.WriteFile(h.config, []byte("[ctl]\ntimeout = \"20s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() { done <- h.run("", "node", "list", "--json") }()
	// A client with a subscription (its reply inbox), not just a client: a
	// client counts from the accept, and a shutdown during the handshake
	// fails the connect itself.
	testutil.Eventually(t, 10*time.Second, "ctl connected and asking JetStream", func() bool {
		conns, err := early.Connz(nil)
		if err != nil {
			return false
		}
		for _, c := range conns.Conns {
			if c.NumSubs > 0 {
				return true
			}
		}
		return false
	})
	early.Shutdown()
	// Another test's probe for a free port may hold this one for an
	// instant (FreeAddr listens and closes): that is no failure.
	var back *embednats.Server
	testutil.Eventually(t, 5*time.Second, "the server back on its address", func() bool {
		s, err := embednats.Start(embednats.Config{Listen: addr, DataDir: t.TempDir()})
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("start embedded nats: %v", err)
		}
		back = s
		return err == nil
	})
	t.Cleanup(back.Shutdown)
	r := <-done
	if r.code != 0 || strings.TrimSpace(r.out) != "[]" {
		t.Fatalf("node list once JetStream answered: exit %d, out %q, err %s", r.code, r.out, r.err)
	}
}

// The error says, as the connection error does (urlSource), where the
// URL of the server that does not answer for JetStream came from: the
// operator of a node may not know that ctl reads its [nats] listen, nor
// that NARUN_NATS_URL is set in this shell.
func TestJetStreamNeverAnswers(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	startWithoutJetStream(t, addr)
	eachURLSource(t, addr, func(t *testing.T, r result, from string) {
		if want := "jetstream at nats://" + addr + " (from " + from + ") not answering within 300ms"; r.code != 1 || !strings.Contains(r.err, want) {
			t.Errorf("ctl node list: exit %d, stderr\n%s\nwant exit 1 and %q", r.code, r.err, want)
		}
	})
}

// A port that accepts but does not speak NATS (the gateway's HTTP port,
// say) fails fast with a hint instead of an unexplained EOF or timeout.
func TestConnectToAPortThatIsNotNATS(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		// Like an HTTP server: hold each connection, waiting for a
		// request that never comes.
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	h := &harness{t: t, url: "nats://" + l.Addr().String(), dir: t.TempDir()}
	h.config = filepath.Join(h.dir, "narun.toml")
	if err := os.WriteFile(h.config, []byte("[ctl]\ntimeout = \"300ms\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := h.fails(1, "", "node", "list")
	if !strings.Contains(r.err, "did not answer as a NATS server") {
		t.Errorf("error: %s", r.err)
	}
}

// A member that reaches no majority keeps its clients but not JetStream:
// ctl pointed at it alone says so instead of a bare timeout, whether the
// member has already noticed (JetStream does not answer at all) or not yet
// (it answers, and the bucket's request is the first to go unanswered).
func TestJetStreamOfAMemberWithoutMajority(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	c.Stop(1)
	c.Stop(2)
	h := &harness{t: t, url: c.Server(0).ClientURL(), dir: t.TempDir()}
	h.config = h.file("narun.toml", "[ctl]\ntimeout = \"1s\"\n")
	r := h.fails(1, "", "node", "list")
	if !strings.Contains(r.err, "reaches a majority of the members") {
		t.Errorf("error: %s", r.err)
	}
}

// A device that is down, listed first, costs a command nothing: ctl
// connects to the next server without waiting out the first one's dial
// timeout, its operation timeout up to 5s.
func TestConnectPassesOverADeviceThatIsDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.url = "nats://" + testutil.Unanswering(t) + "," + h.url
	done := make(chan result, 1)
	go func() { done <- h.run("", "node", "list", "--json") }()
	select {
	case r := <-done:
		if r.code != 0 {
			t.Fatalf("node list: exit %d, err %s", r.code, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node list not done within the dial timeout: ctl waited on the device that is down")
	}
}

// A dial that times out reaches no device at all (down, cut off): the
// hint about a wrong port would mislead, and another member is the way out.
func TestConnectErrorOfAnUnreachableDevice(t *testing.T) {
	t.Parallel()
	for _, timeout := range []error{os.ErrDeadlineExceeded, context.DeadlineExceeded} {
		dial := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(198, 18, 0, 12), Port: 4222}, Err: timeout}
		got := connectError("nats://198.18.0.12:4222", "", tlsGiven{}, dial).Error()
		if strings.Contains(got, "something listens there") || !strings.Contains(got, "the device is down or cut off") {
			t.Errorf("dial timeout (%v): %s", timeout, got)
		}
	}
	read := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	if got := connectError("nats://127.0.0.1:8080", "", tlsGiven{}, read).Error(); !strings.Contains(got, "did not answer as a NATS server") {
		t.Errorf("greeting timeout: %s", got)
	}
}

// A member that hangs, or is stopped (SIGSTOP, a debugger), still has its
// connections accepted by the kernel and greets nobody, as a port that is
// not NATS does: the hint names both, not only a wrong port.
func TestConnectErrorOfAHungServer(t *testing.T) {
	t.Parallel()
	read := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	if got := connectError("nats://127.0.0.1:4222", "", tlsGiven{}, read).Error(); !strings.Contains(got, "4222 by default?") || !strings.Contains(got, "or the server is hung or stopped") {
		t.Errorf("greeting timeout: %s", got)
	}
}

// A command sent while the cluster has no JetStream leader succeeds once
// one is elected, well within its timeout: the servers drop its requests
// meanwhile, so each is sent again rather than waited on for the whole
// timeout.
func TestRetriesThroughALeaderElection(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	leader := c.Leader()
	survivor, other := (leader+1)%3, (leader+2)%3
	js, err := jetstream.New(natstest.Connect(t, c.Server(survivor)))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, url: c.URL(), js: js, dir: t.TempDir()}
	h.config = h.file("narun.toml", "[ctl]\ntimeout = \"30s\"\n")
	h.heartbeat(state.Node{ID: "edge-1"})

	// Two of three members gone: the one left cannot elect itself.
	c.Stop(other)
	c.Stop(leader)
	done := make(chan result, 1)
	go func() { done <- h.run("", "node", "list", "--json") }()
	testutil.Eventually(t, 10*time.Second, "ctl asking JetStream", func() bool {
		conns, err := c.Server(survivor).NATS().Connz(nil)
		if err != nil {
			return false
		}
		for _, conn := range conns.Conns {
			if conn.Name == "narun-ctl" && conn.NumSubs > 0 {
				return true
			}
		}
		return false
	})
	c.Start(other)
	r := <-done
	if r.code != 0 || !strings.Contains(r.out, `"edge-1"`) {
		t.Fatalf("node list through the election: exit %d, out %q, err %s", r.code, r.out, r.err)
	}
}

// unansweredHistory is a bucket whose history is read while its cluster
// has no majority: the ordered consumer that reads it is never created,
// though a direct get of its value may still be answered by a replica.
type unansweredHistory struct{ emptyKV }

func (unansweredHistory) History(context.Context, string, ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	return nil, context.DeadlineExceeded
}

// Right after a cluster loses its majority, the value of a spec may still
// be read and its history not: the commands that read the history (app
// restart and deploy with a signing key, app rollback and history) say
// what the others say of an unanswered request, not a bare deadline.
func TestUnansweredHistoryNamesTheMajority(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	e := &env{nc: natstest.Connect(t, c.Server(0)), timeout: time.Second, log: slog.New(slog.DiscardHandler)}
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	kv := unansweredHistory{emptyKV{bucket: names.AppsBucket}}
	if _, err := e.readOrder(context.Background(), kv, "hello", key, specSequence); err == nil || !strings.Contains(err.Error(), "reaches a majority of the members") {
		t.Errorf("signed order: %v", err)
	}
	if _, err := e.history(context.Background(), kv, "hello"); err == nil || !strings.Contains(err.Error(), "reaches a majority of the members") {
		t.Errorf("revisions: %v", err)
	}
}
