package embednats_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

func TestKVSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "survive"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s.Shutdown()

	s2, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	nc2, err := nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatalf("tcp connect to %s: %v", s2.ClientURL(), err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	kv2, err := js2.KeyValue(ctx, "survive")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value()) != "v1" {
		t.Fatalf("value after restart = %q, want v1", e.Value())
	}
}

// Every listener's address in use fails the start naming its key, which
// the applets place in the file; nats-server's own words named no key.
func TestPortTakenIsAClearError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().String()
	for _, tc := range []struct {
		key string
		cfg embednats.Config
	}{
		{"nats.listen", embednats.Config{Listen: held}},
		{"nats.http_listen", embednats.Config{Listen: "127.0.0.1:0", HTTPListen: held}},
		{"nats.cluster.listen", embednats.Config{Listen: "127.0.0.1:0", ServerName: "a",
			Cluster: embednats.Cluster{Name: "c", Listen: held, Routes: []string{"nats-route://" + held}}}},
		{"nats.leafnodes.listen", embednats.Config{Listen: "127.0.0.1:0", Leafnodes: embednats.Leafnodes{Listen: held}}},
	} {
		t.Run(tc.key, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			s, err := embednats.Start(tc.cfg)
			if err == nil {
				s.Shutdown()
				t.Fatal("start on a taken port succeeded")
			}
			var ke *embednats.KeyError
			if !errors.As(err, &ke) || ke.Key != tc.key {
				t.Errorf("error names no key %q: %v", tc.key, err)
			}
			if !strings.Contains(err.Error(), held) || !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("error does not name the address and the cause: %v", err)
			}
		})
	}
}

// Every taken port is named by one start, so that an operator who moved
// two listeners onto used ports learns of both at once.
func TestEveryTakenPortIsNamed(t *testing.T) {
	t.Parallel()
	var held []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		held = append(held, l.Addr().String())
	}
	s, err := embednats.Start(embednats.Config{Listen: held[0], HTTPListen: held[1], DataDir: t.TempDir()})
	if err == nil {
		s.Shutdown()
		t.Fatal("start on taken ports succeeded")
	}
	for i, key := range []string{"nats.listen", "nats.http_listen"} {
		if !strings.Contains(err.Error(), key+": listen on "+held[i]) {
			t.Errorf("error does not name %s on %s:\n%v", key, held[i], err)
		}
	}
}

func TestPortZeroPicksAFreePort(t *testing.T) {
	t.Parallel()
	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	// The kernel picks free ports from its ephemeral range, never 4222.
	if p := u.Port(); p == "" || p == "0" || p == "4222" {
		t.Fatalf("listen 127.0.0.1:0 serves on %s, want a free port", s.ClientURL())
	}
}

func TestWarnsWhenOpenToTheNetwork(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	verifying := embednats.TLS{Cert: cert, Key: key, CA: ca.File, Verify: true}
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		warn bool
	}{
		{"all interfaces, no auth", embednats.Config{Listen: "0.0.0.0:-1"}, true},
		{"loopback", embednats.Config{Listen: "127.0.0.1:-1"}, false},
		{"ipv6 loopback", embednats.Config{Listen: "[::1]:-1"}, false},
		{"ipv6 all interfaces, no auth", embednats.Config{Listen: "[::]:-1"}, true},
		{"all interfaces with users", embednats.Config{Listen: "0.0.0.0:-1", Users: []embednats.User{{User: "a", Password: "b"}}}, false},
		{"in-process only", embednats.Config{}, false},
		// A certificate of the CA is a login; TLS that asks for none is not.
		{"all interfaces, TLS verifying clients", embednats.Config{Listen: "0.0.0.0:-1", TLS: verifying}, false},
		{"all interfaces, TLS without verify", embednats.Config{Listen: "0.0.0.0:-1", TLS: embednats.TLS{Cert: cert, Key: key}}, true},
		{"cluster on all interfaces with route TLS", embednats.Config{Listen: "127.0.0.1:-1", Cluster: embednats.Cluster{Listen: "0.0.0.0:-1",
			TLS: embednats.TLS{Cert: cert, Key: key, CA: ca.File}}}, false},
		{"leafnodes on all interfaces, TLS verifying leaves", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "0.0.0.0:-1", TLS: verifying}}, false},
		{"cluster on all interfaces, no route auth", embednats.Config{Listen: "127.0.0.1:-1", Cluster: embednats.Cluster{Listen: "0.0.0.0:-1"}}, true},
		{"cluster on all interfaces with route auth", embednats.Config{Listen: "127.0.0.1:-1",
			Cluster: embednats.Cluster{Listen: "0.0.0.0:-1", User: "r", Password: "p"}}, false},
		{"cluster on loopback", embednats.Config{Listen: "127.0.0.1:-1", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1"}}, false},
		{"cluster on ipv6 loopback", embednats.Config{Listen: "[::1]:-1", Cluster: embednats.Cluster{Listen: "[::1]:-1"}}, false},
		{"cluster on ipv6 all interfaces, no route auth", embednats.Config{Listen: "[::1]:-1", Cluster: embednats.Cluster{Listen: "[::]:-1"}}, true},
		{"leafnodes on all interfaces, no auth", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "0.0.0.0:-1"}}, true},
		{"leafnodes on ipv6 all interfaces, no auth", embednats.Config{Listen: "[::1]:-1", Leafnodes: embednats.Leafnodes{Listen: "[::]:-1"}}, true},
		{"leafnodes on loopback", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "127.0.0.1:-1"}}, false},
		// A leaf logs in as a client: with client logins on it needs one.
		{"leafnodes on all interfaces with users", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "0.0.0.0:-1"},
			Users: []embednats.User{{User: "a", Password: "b"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Cluster.Listen != "" {
				// JetStream in a cluster wants names and a route; one
				// that nobody answers will do.
				tc.cfg.ServerName, tc.cfg.Cluster.Name = "a", "c"
				tc.cfg.Cluster.Routes = []string{"nats-route://" + natstest.FreeAddr(t)}
			}
			var logs bytes.Buffer
			tc.cfg.DataDir = t.TempDir()
			tc.cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, err := embednats.Start(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.Shutdown()
			if got := strings.Contains(logs.String(), "without authentication"); got != tc.warn {
				t.Errorf("warning logged: %v, want %v; logs:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}

// A store the server cannot use fails the start with the server's own
// reason, without waiting out the ready timeout (an hour here).
func TestUnusableDataDirFailsAtOnce(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := embednats.Start(embednats.Config{DataDir: file, ReadyTimeout: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("start on a file as data dir: %v, want the server's JetStream error", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		want string
	}{
		{"no data dir", embednats.Config{}, "data dir"},
		{"bad listen", embednats.Config{DataDir: "x", Listen: "4222"}, "listen"},
		{"bad route", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1", Routes: []string{"::bad"}}}, "nats.cluster.routes"},
		{"bad route with a login", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1", Routes: []string{"nats-route://r:route-secret@host:port"}}}, `invalid url "nats-route://r:xxxxx@host:port"`},
		// An '@' after a '/' may end a password with a '/' in it ("u:1/pw@h"
		// reads as host u, port 1): a log hides what precedes it.
		{"bad route with an '@' in its path", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1", Routes: []string{"nats-route://host:4222/x@y%zz"}}}, `invalid url "nats-route://host:xxxxx@y%zz"`},
		// A port that is none may be the start of a password with a '/'.
		{"bad route with a '/' in its password", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1", Routes: []string{"nats-route://r:Zm9v/YmFy@host:x"}}}, `invalid url "nats-route://r:xxxxx@host:x"`},
		{"bad leaf url with a token", embednats.Config{DataDir: "x", Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"nats-leaf://s3cr3t-token@hub:x"}}}}}, `nats.leafnodes.remotes[0].urls: invalid url "nats-leaf://xxxxx@hub:x"`},
		{"user without password", embednats.Config{DataDir: "x", Users: []embednats.User{{User: "a"}}}, "password"},
		{"huge payload", embednats.Config{DataDir: "x", MaxPayload: 1 << 30}, "max_payload"},
		{"tiny store", embednats.Config{DataDir: "x", JetStreamMaxStore: 1 << 10}, "nats.jetstream.max_store: want at least 8 MiB"},
		{"tiny payload", embednats.Config{DataDir: "x", MaxPayload: 1000}, "nats.max_payload: want 256 KiB to 64 MiB, got 1000 bytes"},
		{"users with an open cluster", embednats.Config{DataDir: "x", Users: []embednats.User{{User: "a", Password: "b"}},
			Cluster: embednats.Cluster{Listen: "127.0.0.1:-1"}}, "nats.cluster.user and nats.cluster.password"},
		{"nkeys with an open cluster", embednats.Config{DataDir: "x", NKeys: []embednats.NKey{{PublicKey: "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"}},
			Cluster: embednats.Cluster{Listen: "127.0.0.1:-1"}}, "nats.cluster.user and nats.cluster.password"},
		{"missing leaf credentials", embednats.Config{DataDir: "x", Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"nats-leaf://127.0.0.1:7422"}, Credentials: "/nonexistent/hub.creds"}}}}, "leafnodes.remotes[0].credentials: open /nonexistent/hub.creds"},
		{"leaf credentials a directory", embednats.Config{DataDir: "x", Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"nats-leaf://127.0.0.1:7422"}, Credentials: "/"}}}}, "leafnodes.remotes[0].credentials"},
		{"leaf url of another protocol", embednats.Config{DataDir: "x", Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"nats-leaf://127.0.0.1:7422"}}, {URLs: []string{"http://hub.example.com:7422"}}}}}, `leafnodes.remotes[1].urls: "http://hub.example.com:7422": scheme "http"`},
		// nats-server dials a route without a port as it is, and fails
		// ("missing port in address") at every retry, for as long as it
		// runs: the member never joins. A leaf URL gets 7422 instead.
		{"route without a port", embednats.Config{DataDir: "x", Listen: "127.0.0.1:-1", ServerName: "n1", Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1",
			Routes: []string{"nats-route://127.0.0.1:6222", "nats-route://r:route-secret@10.0.0.2"}}},
			`nats.cluster.routes: "nats-route://r:xxxxx@10.0.0.2": no port: want nats-route://host:port, e.g. nats-route://10.0.0.2:6222`},
		{"route without a port, IPv6", embednats.Config{DataDir: "x", Listen: "127.0.0.1:-1", ServerName: "n1", Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1",
			Routes: []string{"nats-route://[fd00::2]"}}}, `nats-route://[fd00::2]:6222`},
		{"routes without a route address", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Name: "narun", Routes: []string{"nats-route://127.0.0.1:6222"}}}, "nats.cluster.listen is empty"},
		{"cluster user without password", embednats.Config{DataDir: "x", Cluster: embednats.Cluster{Listen: "127.0.0.1:-1", User: "r"}}, "cluster.password"},
		{"user twice", embednats.Config{DataDir: "x", Users: []embednats.User{{User: "app", Password: "a"},
			{User: "app", Password: "b", Permissions: &embednats.Permissions{DenyPublish: []string{"x"}}}}}, `nats.users[1].user: user "app" is listed twice`},
		{"internal user name", embednats.Config{DataDir: "x", Users: []embednats.User{{User: "narun-internal", Password: "a"}}}, `"narun-internal" is reserved`},
		{"nkey twice", embednats.Config{DataDir: "x", NKeys: []embednats.NKey{{PublicKey: appNKey},
			{PublicKey: appNKey, Permissions: &embednats.Permissions{DenyPublish: []string{"x"}}, Key: "nats.app_nkeys"}}}, "nats.app_nkeys: " + appNKey + " is listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.DataDir != "" {
				tc.cfg.DataDir = t.TempDir()
			}
			s, err := embednats.Start(tc.cfg)
			if err == nil {
				s.Shutdown()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := natstest.StartConfig(t, embednats.Config{Users: []embednats.User{{User: "alice", Password: "s3cret"}}})
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Fatal("anonymous TCP client was let in")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("alice", "s3cret"))
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	nc.Close()
	inproc := natstest.Connect(t, s)
	if err := inproc.Flush(); err != nil {
		t.Fatalf("in-process connection with auth on: %v", err)
	}
}

// A user nkey for tests: the seed logs in, the public key is configured.
const (
	appNKeySeed = "SUALG5AJFUCQB2X5MPPJTGOXF4LBT3IDQBWBKT4RKOZLELNPZ6CSCCSBLM"
	appNKey     = "UBJDA5ZQ4WDOANDI24YSOUI5YSZPCSOGBCDOHZKRTX73YRZREI2WP34F"
)

// A login's DenyPublish subjects are refused, wildcards included, and
// everything else stays allowed; a login without permissions, the
// in-process one too, may publish anything.
func TestPermissionsDenyPublish(t *testing.T) {
	t.Parallel()
	deny := &embednats.Permissions{DenyPublish: []string{"state.>", "api.*.state"}}
	s := natstest.StartConfig(t, embednats.Config{
		Users: []embednats.User{{User: "admin", Password: "a"}, {User: "app", Password: "b", Permissions: deny}},
		NKeys: []embednats.NKey{{PublicKey: appNKey, Permissions: deny}},
	})
	seed := filepath.Join(t.TempDir(), "app.nk")
	if err := os.WriteFile(seed, []byte(appNKeySeed), 0o600); err != nil {
		t.Fatal(err)
	}
	nkeyOpt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(opt nats.Option) *nats.Conn {
		// The violations are read from LastError, not logged.
		nc, err := nats.Connect(s.ClientURL(), opt, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for name, nc := range map[string]*nats.Conn{"user": connect(nats.UserInfo("app", "b")), "nkey": connect(nkeyOpt)} {
		for _, subj := range []string{"state.x", "state.x.y", "api.delete.state"} {
			if err := natstest.PublishRefused(t, nc, subj); err == nil {
				t.Errorf("%s login with the deny list published to %s", name, subj)
			}
		}
		for _, subj := range []string{"state", "other.x", "api.delete.other", "api.delete.state.x"} {
			if err := natstest.PublishRefused(t, nc, subj); err != nil {
				t.Errorf("%s login with the deny list: %s: %v", name, subj, err)
			}
		}
	}
	for name, nc := range map[string]*nats.Conn{"admin": connect(nats.UserInfo("admin", "a")), "in-process": natstest.Connect(t, s)} {
		if err := natstest.PublishRefused(t, nc, "state.x"); err != nil {
			t.Errorf("%s login: %v", name, err)
		}
	}
}

func TestInProcessConnectionNamesTheListenURL(t *testing.T) {
	t.Parallel()
	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != s.ClientURL() {
		t.Fatalf("in-process connection reports URL %q, want the server's %q", got, s.ClientURL())
	}
}

func TestInProcessOnly(t *testing.T) {
	t.Parallel()
	s, err := embednats.Start(embednats.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if u := s.ClientURL(); u != "" {
		t.Fatalf("server without a listener reports client URL %q", u)
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Fatalf("JetStream over the in-process connection: %v", err)
	}
}

func TestLeafKeepsLocalSubjects(t *testing.T) {
	t.Parallel()
	local := []string{"logs.>", "$O.store.>"}
	leafAddr := natstest.FreeAddr(t)
	hub := natstest.StartConfig(t, embednats.Config{Leafnodes: embednats.Leafnodes{Listen: leafAddr}, JetStreamDomain: "hub"})
	leaf := natstest.StartConfig(t, embednats.Config{
		JetStreamDomain: "edge",
		Leafnodes: embednats.Leafnodes{
			Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + leafAddr}}},
			Local:   local,
		},
	})
	hubConn, leafConn := natstest.Connect(t, hub), natstest.Connect(t, leaf)
	for _, dir := range []struct {
		name     string
		from, to *nats.Conn
	}{
		{"hub to leaf", hubConn, leafConn},
		{"leaf to hub", leafConn, hubConn},
	} {
		t.Run(dir.name, func(t *testing.T) {
			// The receiver subscribes to the local subjects before the
			// marker, and one connection carries both ways in order: once
			// the marker arrives, a local message sent before it would have
			// (nats.go fills channel subscriptions in arrival order).
			leaked := make(chan *nats.Msg, 1000)
			for _, subject := range local {
				sub, err := dir.to.ChanSubscribe(subject, leaked)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
			}
			marker, err := dir.to.SubscribeSync("marker")
			if err != nil {
				t.Fatal(err)
			}
			defer marker.Unsubscribe()
			dir.to.Flush()
			deadline := time.Now().Add(10 * time.Second)
			for {
				dir.from.Publish("logs.app.node", []byte("line"))
				dir.from.Publish("$O.store.C.chunk", []byte("chunk"))
				dir.from.Publish("marker", nil)
				if _, err := marker.NextMsg(100 * time.Millisecond); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the marker never crossed the leaf connection")
				}
			}
			if len(leaked) > 0 {
				t.Fatalf("a local subject crossed the leaf connection: %s", (<-leaked).Subject)
			}
		})
	}
}

func TestLeafnodeJoinsHub(t *testing.T) {
	t.Parallel()
	leafAddr := natstest.FreeAddr(t)
	hub := natstest.StartConfig(t, embednats.Config{Leafnodes: embednats.Leafnodes{Listen: leafAddr}, JetStreamDomain: "hub"})
	leaf := natstest.StartConfig(t, embednats.Config{
		JetStreamDomain: "edge",
		Leafnodes:       embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + leafAddr}}}},
	})
	hubConn := natstest.Connect(t, hub)
	sub, err := hubConn.SubscribeSync("edge.hello")
	if err != nil {
		t.Fatal(err)
	}
	hubConn.Flush()
	leafConn := natstest.Connect(t, leaf)
	deadline := time.Now().Add(10 * time.Second)
	for {
		leafConn.Publish("edge.hello", []byte("hi"))
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			if string(m.Data) != "hi" {
				t.Fatalf("got %q", m.Data)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("message from the leaf never reached the hub")
		}
	}
}

// syncBuffer collects a server's log lines, written from its goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// With client logins on, a server that does not know the cluster's login
// must not join as a route: a route reads and publishes every subject.
func TestClusterRoutesNeedTheClusterLogin(t *testing.T) {
	t.Parallel()
	hubAddr, memberAddr := natstest.FreeAddr(t), natstest.FreeAddr(t)
	route := []string{"nats-route://" + hubAddr}
	var logs syncBuffer
	hub := natstest.StartConfig(t, embednats.Config{
		ServerName: "hub",
		Users:      []embednats.User{{User: "alice", Password: "s3cret"}},
		Cluster: embednats.Cluster{Name: "narun", Listen: hubAddr, User: "route", Password: "r0ute",
			Routes: []string{"nats-route://" + memberAddr}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})

	// An unauthenticated server, and one with the wrong password, dial
	// the hub's cluster port; the hub refuses each with an auth error.
	for _, tc := range []struct {
		name    string
		cluster embednats.Cluster
	}{
		{"anonymous", embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: route}},
		{"wrong password", embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: route, User: "route", Password: "guess"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "authentication error")
			rogue := natstest.StartConfig(t, embednats.Config{ServerName: "rogue", Cluster: tc.cluster})
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(logs.String(), "authentication error") == before {
				if time.Now().After(deadline) {
					t.Fatalf("the hub never refused the route; its log:\n%s", logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The rogue counts its half-open route until the hub's refusal
			// closes it; what must never happen is the hub keeping it.
			for rogue.NATS().NumRoutes() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("a route without the cluster login stayed: rogue has %d routes", rogue.NATS().NumRoutes())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := hub.NATS().NumRoutes(); n != 0 {
				t.Fatalf("the hub has %d routes, want none", n)
			}
			rogue.Shutdown()
		})
	}

	t.Run("member", func(t *testing.T) {
		member := natstest.StartConfig(t, embednats.Config{
			ServerName: "member",
			Users:      []embednats.User{{User: "alice", Password: "s3cret"}},
			Cluster:    embednats.Cluster{Name: "narun", Listen: memberAddr, Routes: route, User: "route", Password: "r0ute"},
		})
		hubConn, memberConn := natstest.Connect(t, hub), natstest.Connect(t, member)
		sub, err := hubConn.SubscribeSync("narun.hello")
		if err != nil {
			t.Fatal(err)
		}
		hubConn.Flush()
		deadline := time.Now().Add(10 * time.Second)
		for {
			memberConn.Publish("narun.hello", []byte("hi"))
			if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("a message from the member never crossed the route; hub log:\n%s", logs.String())
			}
		}
	})
}

// A second server on a data dir whose store a running server holds is
// refused before it opens the store, and starts once the first stopped.
func TestSecondServerOnADataDirIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	second, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on the data dir of a running one")
	}
	if !strings.Contains(err.Error(), "in use by another narun") {
		t.Errorf("error %q does not say the store is in use", err)
	}
	first.Shutdown()
	again, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start after the first server stopped: %v", err)
	}
	again.Shutdown()
}

// A data dir is free once Shutdown returns, though other goroutines start
// processes meanwhile: each holds a copy of the lock's descriptor until it
// execs, and a server started right after was refused as if another one
// held the store.
func TestDataDirFreeDespiteProcessStarts(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var starters sync.WaitGroup
	defer starters.Wait()
	defer cancel()
	for range 2 {
		starters.Go(func() {
			for ctx.Err() == nil {
				_ = exec.Command("/bin/true").Run()
			}
		})
	}
	for i := range 20 {
		s, err := embednats.Start(embednats.Config{DataDir: dir})
		if err != nil {
			t.Fatalf("start %d on the data dir the one before shut down: %v", i+1, err)
		}
		s.Shutdown()
	}
}

// A data dir of a server that ran alone is refused as a cluster member's:
// nats-server would hide its streams from the cluster and delete them as
// orphans. A member's own store, streams and all, starts again.
func TestClusterRefusesAStandaloneStore(t *testing.T) {
	t.Parallel()
	alone := t.TempDir()
	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: alone})
	if err != nil {
		t.Fatal(err)
	}
	putKey(t, s, jetstream.KeyValueConfig{Bucket: "specs"}, "k")
	s.Shutdown()
	routeAddr := natstest.FreeAddr(t)
	member := embednats.Config{Listen: "127.0.0.1:-1", DataDir: alone, ServerName: "m1",
		Cluster: embednats.Cluster{Name: "narun", Listen: routeAddr, Routes: []string{"nats-route://" + routeAddr}}}
	// --check says so before the operator restarts the device.
	checkErr := embednats.Check(member)
	s, err = embednats.Start(member)
	if err == nil {
		s.Shutdown()
		t.Fatal("a cluster member started on the store of a server that ran alone")
	}
	for _, err := range []error{err, checkErr} {
		for _, want := range []string{`nats.cluster.listen`, "KV_specs", "ran alone"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %q", err, want)
			}
		}
	}

	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	putKey(t, c.Server(0), jetstream.KeyValueConfig{Bucket: "specs"}, "k")
	c.Stop(0)
	c.Start(0) // fails the test if refused
}

// JetStream counts a cluster's members by server_name, for good: a member
// started again on its store under another name (a narun.toml edited, a
// device's image cloned with its data dir) joins as one more peer, and its
// former name stays counted as down, which narun has no login to remove.
// Three devices would then need all three up for a quorum of four, and
// each stream that had a copy on the former name would lose its quorum
// with one more device down. The start is refused, naming both names;
// under its own name the member starts as before.
func TestClusterRefusesARenamedMember(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	c.WaitPlaceable(60 * time.Second)
	c.Stop(2)
	renamed := c.Config(2)
	renamed.ServerName = "n3-new"
	// --check says so before the operator restarts the device.
	checkErr := embednats.Check(renamed)
	s, err := embednats.Start(renamed)
	if err == nil {
		s.Shutdown()
		t.Fatal("a cluster member started on its store under another server_name")
	}
	for _, err := range []error{err, checkErr} {
		for _, want := range []string{"nats.server_name", `"n3-new"`, `cluster member "n3"`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %q", err, want)
			}
		}
	}
	c.Start(2) // fails the test if refused
}

// JetStream reads its store before the server accepts clients. A store
// that takes longer than ReadyTimeout to read (a big one rebuilt after a
// power cut, on an SD card) is waited for: a start cut short in the middle
// of it failed again at every restart, and the node never came up. A FIFO
// in place of a stream's metadata file holds the read for as long as the
// test wants.
func TestStartWaitsForTheStoreToBeRead(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	reading, release := natstest.HoldStoreRead(t, dir)

	const readyTimeout = 50 * time.Millisecond
	type result struct {
		s   *embednats.Server
		err error
	}
	started := make(chan result, 1)
	go func() {
		s, err := embednats.Start(embednats.Config{DataDir: dir, ReadyTimeout: readyTimeout})
		started <- result{s, err}
	}()
	reading()
	// The store takes ten ready timeouts to read.
	select {
	case r := <-started:
		if r.s != nil {
			r.s.Shutdown()
		}
		t.Fatalf("Start returned while JetStream was reading its store: %v", r.err)
	case <-time.After(10 * readyTimeout):
	}
	release()
	r := <-started
	if r.err != nil {
		t.Fatalf("Start after the store was read: %v", r.err)
	}
	defer r.s.Shutdown()
	js2, _ := jetstream.New(natstest.Connect(t, r.s))
	if _, err := js2.KeyValue(ctx, "slow"); err != nil {
		t.Fatalf("bucket after the slow read: %v", err)
	}
}

// The warning for an open leaf port says that a leaf reaches the store
// exactly when it does: nats-server keeps a leaf off the JetStream API,
// but not off the API under the server's JetStream domain.
func TestOpenLeafPortWarningSaysWhatALeafReaches(t *testing.T) {
	t.Parallel()
	for _, domain := range []string{"", "hub"} {
		t.Run("domain "+cmp.Or(domain, "none"), func(t *testing.T) {
			_, port, err := net.SplitHostPort(natstest.FreeAddr(t))
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			hub := natstest.StartConfig(t, embednats.Config{
				JetStreamDomain: domain,
				Leafnodes:       embednats.Leafnodes{Listen: "0.0.0.0:" + port},
				Logger:          slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if !strings.Contains(logs.String(), "accepts leaf nodes from the network without authentication") {
				t.Fatalf("no warning for the open leaf port; logs:\n%s", logs.String())
			}
			hubConn := natstest.Connect(t, hub)
			hubJS, err := jetstream.New(hubConn)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := hubJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "narun-apps"}); err != nil {
				t.Fatal(err)
			}

			// Anyone's nats-server, without JetStream of its own, so that
			// every JetStream request it forwards is the hub's to answer.
			u, err := url.Parse("nats-leaf://127.0.0.1:" + port)
			if err != nil {
				t.Fatal(err)
			}
			rogue, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
				LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
			if err != nil {
				t.Fatal(err)
			}
			go rogue.Start()
			t.Cleanup(func() { rogue.Shutdown(); rogue.WaitForShutdown() })
			if !rogue.ReadyForConnections(10 * time.Second) {
				t.Fatal("the leaf's server never got ready")
			}
			rogueConn, err := nats.Connect("", nats.InProcessServer(rogue))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(rogueConn.Close)

			// The hub sends a leaf its interest in the order it has it: once
			// a subscription made now crosses, the JetStream API's has.
			marker, err := hubConn.SubscribeSync("marker")
			if err != nil {
				t.Fatal(err)
			}
			hubConn.Flush()
			for {
				rogueConn.Publish("marker", nil)
				if _, err := marker.NextMsg(100 * time.Millisecond); err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatal("the leaf never joined the hub")
				}
			}
			rogueJS, err := jetstream.New(rogueConn)
			if domain != "" {
				rogueJS, err = jetstream.NewWithDomain(rogueConn, domain)
			}
			if err != nil {
				t.Fatal(err)
			}
			kv, err := rogueJS.KeyValue(ctx, "narun-apps")
			if err == nil {
				_, err = kv.Put(ctx, "web", []byte("spec"))
			}
			reached, warned := err == nil, strings.Contains(logs.String(), "deletes apps")
			if reached != warned {
				t.Fatalf("the leaf reached the store: %v (%v); the warning says so: %v; logs:\n%s", reached, err, warned, logs.String())
			}
		})
	}
}

// nats-server opens its route port only once it listens for clients: with
// no client port (nats.listen empty, in-process connections only) it never
// does, the server never gets ready, and a start waited for ever, saying
// that JetStream still read its store, and hung in its shutdown at the
// first SIGTERM. Start and Check refuse the pair, naming both keys.
func TestClusterNeedsAClientPort(t *testing.T) {
	t.Parallel()
	cfg := embednats.Config{DataDir: t.TempDir(), ServerName: "n1", ReadyTimeout: 2 * time.Second,
		Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:6222"}}}
	stop := make(chan struct{})
	cfg.Stop = stop
	started := make(chan error, 1)
	go func() {
		s, err := embednats.Start(cfg)
		if err == nil {
			s.Shutdown()
		}
		started <- err
	}()
	var err error
	select {
	case err = <-started:
	case <-time.After(15 * time.Second):
		close(stop)
		t.Fatal("Start with a cluster port and no client port did not return within 15s")
	}
	checkErr := embednats.Check(cfg)
	for _, err := range []error{err, checkErr} {
		for _, want := range []string{"nats.cluster.listen", "nats.listen is empty"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not mention %q", err, want)
			}
		}
	}
}

// A leaf remote's credentials file that is not one (a truncated copy, a
// JWT without its seed, a seed that does not decode) failed only at each
// connection to the hub, logged and retried for as long as the server
// ran: --check and the start took it. Both refuse it now, naming the key
// and not the content; a well-formed file passes.
func TestLeafCredentialsMalformed(t *testing.T) {
	t.Parallel()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds := func(seed string) string {
		return "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVIn0.c2ln\n------END NATS USER JWT------\n\n" +
			"-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n"
	}
	for _, tc := range []struct {
		name, content string
		ok            bool
	}{
		{"well formed", creds(string(seed)), true},
		{"not a credentials file", "qwerty-content\n", false},
		{"jwt without seed", strings.SplitAfter(creds(string(seed)), "------END NATS USER JWT------\n")[0], false},
		{"seed that does not decode", creds("SUAbogus"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "hub.creds")
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := embednats.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:-1",
				Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://127.0.0.1:1"}, Credentials: file}}}}
			checkErr := embednats.Check(cfg)
			s, err := embednats.Start(cfg)
			if err == nil {
				s.Shutdown()
			}
			for _, err := range []error{checkErr, err} {
				if tc.ok {
					if err != nil {
						t.Errorf("refused a well-formed credentials file: %v", err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), "nats.leafnodes.remotes[0].credentials") {
					t.Errorf("error = %v, want one naming nats.leafnodes.remotes[0].credentials", err)
				} else if strings.Contains(err.Error(), "SUA") || strings.Contains(err.Error(), "qwerty") {
					t.Errorf("error quotes the file: %v", err)
				}
			}
		})
	}
}

// Check names every independent problem of the configuration, each as a
// KeyError naming its key, so that an operator fixes them in one go; a
// check that needs a value refused (a route login with no pair to it)
// is not made.
func TestCheckNamesEveryProblem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		keys []string
	}{
		{"values, addresses, remotes and logins", embednats.Config{
			ServerName: "a b", JetStreamDomain: "a.b", JetStreamMaxStore: 1 << 10, MaxPayload: 1,
			Listen: "1.2.3.4.5:4222", HTTPListen: "nohost",
			Leafnodes: embednats.Leafnodes{TLS: embednats.TLS{Cert: "c.pem", Key: "k.pem"},
				Remotes: []embednats.LeafRemote{{URLs: []string{"http://h:1", "ftp://h:2"}}}},
			Users: []embednats.User{{User: "", Password: "p"}, {User: "narun-internal", Password: "p"}, {User: "u", Password: "p"}, {User: "u", Password: "q"}},
		}, []string{"nats.server_name", "nats.jetstream.domain", "nats.jetstream.max_store", "nats.max_payload",
			"nats.listen", "nats.http_listen", "nats.leafnodes.tls", "nats.leafnodes.remotes[0].urls", "nats.leafnodes.remotes[0].urls",
			"nats.users[0]", "nats.users[1].user", "nats.users[3].user"}},
		{"cluster", embednats.Config{
			Listen: "127.0.0.1:0",
			Cluster: embednats.Cluster{Listen: "a b:6222", Password: "p", Name: "c d",
				Routes: []string{"nats-route://127.0.0.1", "nats-route://127.0.0.1:1"}},
			Users: []embednats.User{{User: "u", Password: "p"}},
		}, []string{"nats.cluster.listen", "nats.cluster", "nats.cluster.name", "nats.cluster.routes", "nats.cluster.listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			err := embednats.Check(tc.cfg)
			parts := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				parts = j.Unwrap()
			}
			var keys []string
			for _, part := range parts {
				var ke *embednats.KeyError
				if !errors.As(part, &ke) {
					t.Errorf("a problem names no key: %v", part)
					continue
				}
				keys = append(keys, ke.Key)
			}
			if !slices.Equal(keys, tc.keys) {
				t.Errorf("problems name keys %q, want %q:\n%v", keys, tc.keys, err)
			}
		})
	}
}

// A second server with the same configuration as a running one finds its
// port taken too; what it is told is that the store is in use, the cause
// that names the running server.
func TestSecondServerWithTheSameConfigNamesTheStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Shutdown()
	second, err := embednats.Start(embednats.Config{Listen: strings.TrimPrefix(first.ClientURL(), "nats://"), DataDir: dir})
	if err == nil {
		second.Shutdown()
		t.Fatal("a second server started with the configuration of a running one")
	}
	if !strings.Contains(err.Error(), "in use by another narun") {
		t.Errorf("error %q does not say the store is in use", err)
	}
}
