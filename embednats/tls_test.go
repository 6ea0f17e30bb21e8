package embednats_test

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// crosses publishes on from until sub, a subscription of another server,
// receives it: the servers are linked.
func crosses(t *testing.T, from *nats.Conn, sub *nats.Subscription, what func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := from.Publish(sub.Subject, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			if string(m.Data) != "hi" {
				t.Fatalf("got %q", m.Data)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message crossed; %s", what())
		}
	}
}

// waitLogged waits for the count of text in logs to pass before.
func waitLogged(t *testing.T, logs *syncBuffer, text string, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), text) == before {
		if time.Now().After(deadline) {
			t.Fatalf("%q never logged; the log:\n%s", text, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Routes carry every subject, deploys included, between devices: over TLS
// each member proves itself with a certificate of the cluster's CA, and a
// server that knows the route login but holds no such certificate is
// refused.
func TestRoutesOverTLS(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	tlsOf := func(name string) embednats.TLS {
		cert, key := ca.Issue(t, name)
		return embednats.TLS{Cert: cert, Key: key, CA: ca.File}
	}
	hubAddr, memberAddr := natstest.FreeAddr(t), natstest.FreeAddr(t)
	routes := []string{"nats-route://" + hubAddr, "nats-route://" + memberAddr}
	var logs syncBuffer
	hub := natstest.StartConfig(t, embednats.Config{
		ServerName: "hub",
		Cluster:    embednats.Cluster{Name: "narun", Listen: hubAddr, Routes: routes, User: "route", Password: "r0ute", TLS: tlsOf("hub")},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	member := natstest.StartConfig(t, embednats.Config{
		ServerName: "member",
		Cluster:    embednats.Cluster{Name: "narun", Listen: memberAddr, Routes: routes, User: "route", Password: "r0ute", TLS: tlsOf("member")},
	})
	sub, err := natstest.Connect(t, hub).SubscribeSync("narun.hello")
	if err != nil {
		t.Fatal(err)
	}
	crosses(t, natstest.Connect(t, member), sub, func() string { return "hub log:\n" + logs.String() })
	routesBefore := hub.NATS().NumRoutes()

	other := natstest.NewCA(t)
	otherCert, otherKey := other.Issue(t, "rogue")
	for _, tc := range []struct {
		name string
		tls  embednats.TLS
	}{
		{"no TLS", embednats.TLS{}},
		{"certificate of another CA", embednats.TLS{Cert: otherCert, Key: otherKey, CA: other.File}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "TLS")
			rogue := natstest.StartConfig(t, embednats.Config{ServerName: "rogue",
				Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: routes[:1], User: "route", Password: "r0ute", TLS: tc.tls}})
			waitLogged(t, &logs, "TLS", before)
			if n := hub.NATS().NumRoutes(); n != routesBefore {
				t.Fatalf("the hub has %d routes after the rogue dialed, want %d", n, routesBefore)
			}
			rogue.Shutdown()
		})
	}
}

// A leaf node's link to its hub crosses the network: with TLS on the
// hub's leaf port, a leaf checks the hub's certificate and, with verify,
// must present one of its own.
func TestLeafOverTLS(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	hubCert, hubKey := ca.Issue(t, "hub")
	leafCert, leafKey := ca.Issue(t, "leaf")
	leafAddr := natstest.FreeAddr(t)
	var logs syncBuffer
	hub := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "hub", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Leafnodes: embednats.Leafnodes{Listen: leafAddr, TLS: embednats.TLS{Cert: hubCert, Key: hubKey, CA: ca.File, Verify: true}}})
	sub, err := natstest.Connect(t, hub).SubscribeSync("edge.hello")
	if err != nil {
		t.Fatal(err)
	}

	before := strings.Count(logs.String(), "TLS")
	nameless := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge",
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + leafAddr}, TLS: embednats.TLS{CA: ca.File}}}}})
	waitLogged(t, &logs, "TLS", before)
	if n := hub.NATS().NumLeafNodes(); n != 0 {
		t.Fatalf("a leaf without a certificate joined: the hub has %d leaf nodes", n)
	}
	nameless.Shutdown()

	leaf := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge",
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + leafAddr}, TLS: embednats.TLS{Cert: leafCert, Key: leafKey, CA: ca.File}}}}})
	crosses(t, natstest.Connect(t, leaf), sub, func() string { return "hub log:\n" + logs.String() })
}

// The client port over TLS: a client must trust the server's CA, and
// narun's own in-process connections go on without TLS.
func TestClientPortOverTLS(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	s := natstest.StartConfig(t, embednats.Config{TLS: embednats.TLS{Cert: cert, Key: key}})
	url := s.ClientURL()

	if nc, err := nats.Connect(url, nats.RootCAs(ca.File)); err != nil {
		t.Fatalf("a client trusting the CA: %v", err)
	} else {
		if tls, err := nc.TLSConnectionState(); err != nil || !tls.HandshakeComplete {
			t.Fatalf("connected without TLS: %v", err)
		}
		nc.Close()
	}
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the CA connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("error = %v, want one about the certificate", err)
	}
	nc := natstest.Connect(t, s)
	if err := nc.Flush(); err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	otherCA := natstest.NewCA(t)
	fifo := filepath.Join(t.TempDir(), "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	serverOnly, serverOnlyKey := ca.IssueFor(t, "server-only", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster := func(tls embednats.TLS) embednats.Config {
		return embednats.Config{ServerName: "a", Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:1"}, TLS: tls}}
	}
	remote := func(tls embednats.TLS) embednats.Config {
		return embednats.Config{Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"tls://127.0.0.1:1"}}, {URLs: []string{"tls://127.0.0.1:1"}, TLS: tls}}}}
	}
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		want string
	}{
		{"client port: key without cert", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Key: key}}, "nats.tls.key: set, but cert is empty"},
		{"client port: cert without key", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: cert}}, "nats.tls.cert: set, but key is empty"},
		{"client port: only a CA", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{CA: ca.File}}, "nats.tls: cert and key are empty"},
		{"client port: verify without a CA", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: cert, Key: key, Verify: true}}, "nats.tls.verify: set, but ca is empty"},
		{"client port: missing cert", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: "/nonexistent/server.pem", Key: key}}, "nats.tls.cert: load /nonexistent/server.pem with key " + key + ": open /nonexistent/server.pem"},
		{"client port: key of another cert", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: cert, Key: ca.File}}, "nats.tls.cert: load " + cert},
		{"client port: a CA file without a certificate", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: cert, Key: key, CA: notPEM, Verify: true}}, "nats.tls.ca: " + notPEM + " holds no PEM certificate"},
		{"in-process only", embednats.Config{TLS: embednats.TLS{Cert: cert, Key: key}}, "nats.tls: set, but nats.listen is empty"},
		{"routes without a CA", cluster(embednats.TLS{Cert: cert, Key: key}), "nats.cluster.tls: ca is empty"},
		{"routes with verify", cluster(embednats.TLS{Cert: cert, Key: key, CA: ca.File, Verify: true}), "nats.cluster.tls.verify: not for this table"},
		{"routes: missing CA", cluster(embednats.TLS{Cert: cert, Key: key, CA: "/nonexistent/ca.pem"}), "nats.cluster.tls.ca: open /nonexistent/ca.pem"},
		// One CA often signs the apps' certificates too: route TLS is no
		// route login.
		{"client logins, route TLS, no route login", embednats.Config{ServerName: "a", Users: []embednats.User{{User: "u", Password: "p"}},
			Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1", Routes: []string{"nats-route://127.0.0.1:1"}, TLS: embednats.TLS{Cert: cert, Key: key, CA: ca.File}}},
			"nats.cluster.user and nats.cluster.password"},
		// A route dials as a client: Go would refuse the certificate at
		// every handshake, after a start that found nothing wrong.
		{"certificate path a FIFO", embednats.Config{Listen: "127.0.0.1:-1", TLS: embednats.TLS{Cert: fifo, Key: key}}, fifo + " is not a regular file"},
		// Two files swapped: the start fails, not every route after it.
		{"route certificate of another CA", cluster(embednats.TLS{Cert: cert, Key: key, CA: otherCA.File}),
			"nats.cluster.tls.cert: " + cert + ": not signed by the CA it must be"},
		{"route certificate for servers only", cluster(embednats.TLS{Cert: serverOnly, Key: serverOnlyKey, CA: ca.File}),
			"nats.cluster.tls.cert: " + serverOnly + ": its extended key usage lacks clientAuth"},
		{"client port and routes share a certificate for servers only", func() embednats.Config {
			c := cluster(embednats.TLS{Cert: serverOnly, Key: serverOnlyKey, CA: ca.File})
			c.Listen, c.TLS = "127.0.0.1:-1", embednats.TLS{Cert: serverOnly, Key: serverOnlyKey}
			return c
		}(), "nats.cluster.tls.cert: " + serverOnly + ": its extended key usage lacks clientAuth"},
		{"remote certificate for servers only", remote(embednats.TLS{Cert: serverOnly, Key: serverOnlyKey}), "nats.leafnodes.remotes[1].tls.cert: " + serverOnly + ": its extended key usage lacks clientAuth"},
		{"route TLS without routes", embednats.Config{Cluster: embednats.Cluster{TLS: embednats.TLS{Cert: cert, Key: key, CA: ca.File}}}, "nats.cluster.tls: set, but nats.cluster.listen is empty"},
		{"leaf port TLS without a leaf port", embednats.Config{Leafnodes: embednats.Leafnodes{TLS: embednats.TLS{Cert: cert, Key: key}}}, "nats.leafnodes.tls: set, but nats.leafnodes.listen is empty"},
		{"remote: cert without key", remote(embednats.TLS{Cert: cert}), "nats.leafnodes.remotes[1].tls.cert: set, but key is empty"},
		{"remote: verify", remote(embednats.TLS{CA: ca.File, Verify: true}), "nats.leafnodes.remotes[1].tls.verify: not for this table"},
		{"remote: missing CA", remote(embednats.TLS{CA: "/nonexistent/hub-ca.pem"}), "nats.leafnodes.remotes[1].tls.ca: open /nonexistent/hub-ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			s, err := embednats.Start(tc.cfg)
			if err == nil {
				s.Shutdown()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one with %q", err, tc.want)
			}
		})
	}
}

// A renewed certificate is taken without a restart, for the connections
// made after it. A pair that does not load (a certificate whose key is
// not written yet), or one that expired (a backup put back), leaves the
// one in use in place and is said each time it appears; a restart of the
// server meanwhile (after a full disk) keeps the pair in use too.
func TestCertificateRenewedWithoutRestart(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	certA, keyA := ca.Issue(t, "server-a")
	certB, keyB := ca.Issue(t, "server-b")
	stale, staleKey := ca.IssueValid(t, "server-stale", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	put := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".new", to); err != nil {
			t.Fatal(err)
		}
	}
	put(certA, certFile)
	put(keyA, keyFile)
	var logs syncBuffer
	s := natstest.StartConfig(t, embednats.Config{TLS: embednats.TLS{Cert: certFile, Key: keyFile}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	presented := func() (string, *nats.Conn) {
		t.Helper()
		nc, err := nats.Connect(s.ClientURL(), nats.RootCAs(ca.File))
		if err != nil {
			t.Fatal(err)
		}
		state, err := nc.TLSConnectionState()
		if err != nil {
			t.Fatal(err)
		}
		return state.PeerCertificates[0].Subject.CommonName, nc
	}
	presents := func(want, when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			name, nc := presented()
			nc.Close()
			if name == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s, the server presents %q, want %q; log:\n%s", when, name, want, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	name, first := presented()
	defer first.Close()
	if name != "server-a" {
		t.Fatalf("server presents %q, want server-a", name)
	}
	const refused = "NATS certificate not reloaded"

	put(certB, certFile)
	waitLogged(t, &logs, refused, 0)
	presents("server-a", "with the new certificate but the old key")
	if err := s.Restart(); err != nil {
		t.Fatalf("restart during the renewal: %v", err)
	}
	presents("server-a", "after a restart during the renewal")

	put(keyB, keyFile)
	presents("server-b", "once the key is written too")
	if !strings.Contains(logs.String(), "NATS certificate reloaded") {
		t.Errorf("the reload was not logged:\n%s", logs.String())
	}
	// The first failure's files again, after a pair loaded: said again.
	before := strings.Count(logs.String(), refused)
	put(keyA, keyFile)
	waitLogged(t, &logs, refused, before)

	// An expired pair: refused too, saying why.
	put(stale, certFile)
	put(staleKey, keyFile)
	waitLogged(t, &logs, "expired on", 0)
	presents("server-b", "with an expired pair written")

	put(certA, certFile)
	put(keyA, keyFile)
	presents("server-a", "once the first pair is back")
	if err := first.Flush(); err != nil {
		t.Errorf("a connection made before the renewal: %v", err)
	}
}

// A remote given a tls:// URL joins its hub over TLS or not at all: a hub
// that offers none is refused, not joined in clear text.
func TestLeafTLSURLRequiresTLS(t *testing.T) {
	t.Parallel()
	leafAddr := natstest.FreeAddr(t)
	hub := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "hub", Leafnodes: embednats.Leafnodes{Listen: leafAddr}})
	var logs syncBuffer
	natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"tls://" + leafAddr}}}}})
	waitLogged(t, &logs, "Leafnode connection closed: TLS Handshake Failure", 0)
	if n := hub.NATS().NumLeafNodes(); n != 0 {
		t.Fatalf("the leaf joined a hub without TLS: %d leaf nodes", n)
	}
}

// A client or leaf port that verifies certificates but has no logins lets
// every certificate holder, apps given one included, do everything: said
// at start, and not once logins are on.
func TestWarnsThatEveryCertificateMayDeploy(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	verifying := embednats.TLS{Cert: cert, Key: key, CA: ca.File, Verify: true}
	const client, leaf = "every client whose certificate nats.tls.ca signed do everything", "every holder of a certificate nats.leafnodes.tls.ca signed join as a leaf node"
	logins := []embednats.User{{User: "app", Password: "p"}}
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		want string
	}{
		{"client port, no logins", embednats.Config{Listen: "0.0.0.0:-1", TLS: verifying}, client},
		{"client port, logins", embednats.Config{Listen: "0.0.0.0:-1", TLS: verifying, Users: logins}, ""},
		{"leaf port, no logins", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "0.0.0.0:-1", TLS: verifying}}, leaf},
		{"leaf port, logins", embednats.Config{Listen: "127.0.0.1:-1", Leafnodes: embednats.Leafnodes{Listen: "0.0.0.0:-1", TLS: verifying}, Users: logins}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			tc.cfg.DataDir, tc.cfg.Logger = t.TempDir(), slog.New(slog.NewTextHandler(&logs, nil))
			s, err := embednats.Start(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.Shutdown()
			for _, w := range []string{client, leaf} {
				if got := strings.Contains(logs.String(), w); got != (w == tc.want) {
					t.Errorf("warning %q logged: %v, want %v:\n%s", w, got, w == tc.want, logs.String())
				}
			}
		})
	}
}

// An expired certificate at start is said, not refused: a leaf device kept
// off longer than its certificates live still serves its own apps, and
// takes the renewed pair when it comes. A route certificate that outlives
// its CA's certificate chains now, as peers check it, and is taken.
func TestCertificateDatesAtStart(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	expired, expiredKey := ca.IssueValid(t, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	long, longKey := ca.IssueValid(t, "long", time.Now().Add(-time.Hour), time.Now().Add(30*24*time.Hour))
	var logs syncBuffer
	natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"tls://127.0.0.1:1"}, TLS: embednats.TLS{Cert: expired, Key: expiredKey, CA: ca.File}}}}})
	if !strings.Contains(logs.String(), "NATS certificate "+expired+" expired on") {
		t.Errorf("the expired certificate was not said at start:\n%s", logs.String())
	}
	natstest.StartConfig(t, embednats.Config{ServerName: "a", Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1",
		Routes: []string{"nats-route://127.0.0.1:1"}, TLS: embednats.TLS{Cert: long, Key: longKey, CA: ca.File}}})
}

// putFiles replaces the file to with the contents of from, concatenated,
// as a renewal does: written beside it, then renamed over it.
func putFiles(t *testing.T, to string, from ...string) {
	t.Helper()
	var b []byte
	for _, f := range from {
		part, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, part...)
	}
	if err := os.WriteFile(to+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".new", to); err != nil {
		t.Fatal(err)
	}
}

// A CA is rotated one file write at a time: the new CA added beside the
// old, then the certificates renewed from it, then the old one removed.
// Each step reaches the running server: a client port that verifies
// clients accepts a certificate of a CA added to its file, connections
// made before stay, and a file that does not read leaves the CAs in use.
func TestClientCAFileReloadedWithoutRestart(t *testing.T) {
	t.Parallel()
	oldCA, newCA := natstest.NewCA(t), natstest.NewCA(t)
	cert, key := oldCA.Issue(t, "server")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	putFiles(t, caFile, oldCA.File)
	var logs syncBuffer
	// With logins, as docs/CLUSTER.md advises: the reload keeps them, the
	// in-process one included.
	s := natstest.StartConfig(t, embednats.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Users: []embednats.User{{User: "ops", Password: "s3cret"}},
		TLS:   embednats.TLS{Cert: cert, Key: key, CA: caFile, Verify: true}})
	inProcess := natstest.Connect(t, s, nats.MaxReconnects(0))
	js, err := jetstream.New(inProcess)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(t.Context(), "k", "before"); err != nil {
		t.Fatal(err)
	}
	connectWith := func(ca *natstest.CA, name string) (*nats.Conn, error) {
		c, k := ca.Issue(t, name)
		return nats.Connect(s.ClientURL(), nats.RootCAs(oldCA.File), nats.ClientCert(c, k), nats.UserInfo("ops", "s3cret"), nats.MaxReconnects(0))
	}
	accepted := func(ca *natstest.CA, name, when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			nc, err := connectWith(ca, name)
			if err == nil {
				nc.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a client of %s is refused: %v; log:\n%s", when, name, err, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	before, err := connectWith(oldCA, "before")
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if nc, err := connectWith(newCA, "new"); err == nil {
		nc.Close()
		t.Fatal("a client certificate of a CA not in the file was accepted")
	}

	putFiles(t, caFile, oldCA.File, newCA.File)
	accepted(newCA, "new", "with the new CA added to the file")
	accepted(oldCA, "old", "with the new CA added to the file")
	if !strings.Contains(logs.String(), "NATS CA files reloaded") {
		t.Errorf("the reload was not logged:\n%s", logs.String())
	}

	if err := os.WriteFile(caFile, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitLogged(t, &logs, "NATS CA file not reloaded", 0)
	accepted(newCA, "new", "with the CA file broken")
	for name, nc := range map[string]*nats.Conn{"a connection made before the CA changed": before, "the in-process connection": inProcess} {
		if err := nc.Flush(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The reload leaves JetStream as it was.
	if e, err := kv.Get(t.Context(), "k"); err != nil || string(e.Value()) != "before" {
		t.Errorf("a key stored before the reload: %v", err)
	}
	if _, err := kv.PutString(t.Context(), "k", "after"); err != nil {
		t.Errorf("a put after the reload: %v", err)
	}
	if err := s.Restart(); err != nil {
		t.Fatalf("restart with the CA file broken: %v", err)
	}
	accepted(newCA, "new", "after a restart with the CA file broken")

	putFiles(t, caFile, newCA.File)
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := connectWith(oldCA, "old")
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the old CA, removed from the file, is still trusted; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	accepted(newCA, "new", "with the old CA removed")
}

// Routes and leaf remotes dial as well as accept: a member takes a CA
// added to its routes' CA file for the routes it accepts and dials, and
// refuses a file its own route certificate no longer chains to, which
// would cut it off from the members still presenting it.
func TestRouteAndRemoteCAFilesReloaded(t *testing.T) {
	t.Parallel()
	oldCA, newCA := natstest.NewCA(t), natstest.NewCA(t)
	dir := t.TempDir()
	member := func(name, addr string, ca *natstest.CA, caFile string, routes []string, logs *syncBuffer) *embednats.Server {
		cert, key := ca.Issue(t, name)
		cfg := embednats.Config{ServerName: name,
			Cluster: embednats.Cluster{Name: "narun", Listen: addr, Routes: routes, User: "route", Password: "r0ute", TLS: embednats.TLS{Cert: cert, Key: key, CA: caFile}}}
		if logs != nil {
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
		return natstest.StartConfig(t, cfg)
	}
	hubCA, newcomerCA := filepath.Join(dir, "hub-ca.pem"), filepath.Join(dir, "newcomer-ca.pem")
	putFiles(t, hubCA, oldCA.File)
	putFiles(t, newcomerCA, oldCA.File, newCA.File)
	hubAddr := natstest.FreeAddr(t)
	var logs syncBuffer
	hub := member("hub", hubAddr, oldCA, hubCA, []string{"nats-route://" + hubAddr}, &logs)
	sub, err := natstest.Connect(t, hub).SubscribeSync("narun.hello")
	if err != nil {
		t.Fatal(err)
	}
	newcomerAddr := natstest.FreeAddr(t)
	newcomerRoutes := []string{"nats-route://" + hubAddr, "nats-route://" + newcomerAddr}
	before := strings.Count(logs.String(), "TLS")
	newcomer := member("newcomer", newcomerAddr, newCA, newcomerCA, newcomerRoutes, nil)
	waitLogged(t, &logs, "TLS", before)
	if n := hub.NATS().NumRoutes(); n != 0 {
		t.Fatalf("a route certificate of a CA not in the file joined: the hub has %d routes", n)
	}

	putFiles(t, hubCA, oldCA.File, newCA.File)
	crosses(t, natstest.Connect(t, newcomer), sub, func() string { return "hub log:\n" + logs.String() })

	// The hub's own certificate is of the old CA: a file without it is
	// refused, and the route stays.
	putFiles(t, hubCA, newCA.File)
	waitLogged(t, &logs, "NATS CA file not reloaded", 0)
	if !strings.Contains(logs.String(), "renew the route certificates") {
		t.Errorf("the refusal does not say how to rotate the CA:\n%s", logs.String())
	}
	newcomer.Shutdown()
	newcomer = member("newcomer", newcomerAddr, newCA, newcomerCA, newcomerRoutes, nil)
	crosses(t, natstest.Connect(t, newcomer), sub, func() string { return "after a refused CA file, hub log:\n" + logs.String() })

	// A leaf remote checks its hub against its CA file: a hub renewed
	// from a new CA is joined once the remote's file has it.
	leafAddr := natstest.FreeAddr(t)
	leafCert, leafKey := newCA.Issue(t, "leaf-hub")
	leafHub := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "hub", Leafnodes: embednats.Leafnodes{Listen: leafAddr, TLS: embednats.TLS{Cert: leafCert, Key: leafKey}}})
	leafSub, err := natstest.Connect(t, leafHub).SubscribeSync("edge.hello")
	if err != nil {
		t.Fatal(err)
	}
	remoteCA := filepath.Join(dir, "remote-ca.pem")
	putFiles(t, remoteCA, oldCA.File)
	var leafLogs syncBuffer
	leaf := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge", Logger: slog.New(slog.NewTextHandler(&leafLogs, nil)),
		Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + leafAddr}, TLS: embednats.TLS{CA: remoteCA}}}}})
	waitLogged(t, &leafLogs, "certificate", 0)
	if n := leafHub.NATS().NumLeafNodes(); n != 0 {
		t.Fatalf("a remote joined a hub whose CA is not in its file: %d leaf nodes", n)
	}
	putFiles(t, remoteCA, oldCA.File, newCA.File)
	crosses(t, natstest.Connect(t, leaf), leafSub, func() string { return "leaf log:\n" + leafLogs.String() })
}
