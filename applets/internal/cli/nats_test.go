package cli_test

import (
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// [nats.jetstream] sync_interval reaches the embedded server's JetStream:
// it is what a device on flash storage tunes to flush its storage less
// often (docs/PERFORMANCE.md, "Disk writes").
func TestSyncIntervalReachesJetStream(t *testing.T) {
	ec := cli.EmbedConfig(loadConfig(t, "[nats.jetstream]\nsync_interval = \"10m\"\n"))
	ec.Listen, ec.DataDir = "127.0.0.1:0", t.TempDir()
	s, err := embednats.Start(ec)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if got := s.NATS().JetStreamConfig().SyncInterval; got != 10*time.Minute {
		t.Fatalf("JetStream sync interval %s, want the file's 10m", got)
	}
}

// loadConfig loads body as narun.toml, without an environment.
func loadConfig(t *testing.T, body string) config.File {
	t.Helper()
	file := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The routes' login reaches the embedded server: without it, a cluster
// with client logins would refuse to start.
func TestEmbedConfigCarriesTheClusterLogin(t *testing.T) {
	cfg := loadConfig(t, `[nats.cluster]
name = "narun"
listen = "0.0.0.0:6222"
routes = ["nats-route://10.0.0.2:6222"]
user = "route"
password = "r0ute"
`)
	c := cli.EmbedConfig(cfg).Cluster
	if c.User != "route" || c.Password != "r0ute" || c.Listen != "0.0.0.0:6222" || len(c.Routes) != 1 {
		t.Fatalf("embedded cluster config = %+v, want the file's [nats.cluster]", c)
	}
}

// The servers of a nats_url list are tried in the order written, so a
// device that lists its own server first uses it. No server listens: the
// pool is what nats.go would try, in its order.
func TestNATSOptionsKeepServerOrder(t *testing.T) {
	var urls []string
	for range 10 {
		urls = append(urls, "nats://"+testutil.FreeAddr(t))
	}
	opts, err := cli.NATSOptions("order", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.Servers(); !slices.Equal(got, urls) {
		t.Errorf("server pool %q, want the configured order %q", got, urls)
	}
}

// Every TLS table of [nats] reaches the embedded server.
func TestEmbedConfigCarriesTLS(t *testing.T) {
	cfg := loadConfig(t, `[nats.tls]
cert = "client.pem"
key = "client.key"
ca = "ca.pem"
verify = true

[nats.cluster.tls]
cert = "route.pem"
key = "route.key"
ca = "ca.pem"

[nats.leafnodes.tls]
cert = "leaf.pem"
key = "leaf.key"

[[nats.leafnodes.remotes]]
urls = ["tls://hub:7422"]

[nats.leafnodes.remotes.tls]
ca = "hub-ca.pem"
cert = "edge.pem"
key = "edge.key"
`)
	ec := cli.EmbedConfig(cfg)
	// Relative to the file's directory, as every path of the file.
	in := func(name string) string { return filepath.Join(filepath.Dir(cfg.Path), name) }
	for _, tc := range []struct {
		name      string
		got, want embednats.TLS
	}{
		{"nats.tls", ec.TLS, embednats.TLS{Cert: in("client.pem"), Key: in("client.key"), CA: in("ca.pem"), Verify: true}},
		{"nats.cluster.tls", ec.Cluster.TLS, embednats.TLS{Cert: in("route.pem"), Key: in("route.key"), CA: in("ca.pem")}},
		{"nats.leafnodes.tls", ec.Leafnodes.TLS, embednats.TLS{Cert: in("leaf.pem"), Key: in("leaf.key")}},
		{"nats.leafnodes.remotes[0].tls", ec.Leafnodes.Remotes[0].TLS, embednats.TLS{Cert: in("edge.pem"), Key: in("edge.key"), CA: in("hub-ca.pem")}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
}

// narun's clients reach a server that requires TLS and verifies clients
// with nats_ca, nats_cert and nats_key, also through Connect's race of a
// nats_url list whose first server is dead.
func TestClientOverTLS(t *testing.T) {
	ca := natstest.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "server")
	clientCert, clientKey := ca.Issue(t, "runner")
	serverOnly, serverOnlyKey := ca.IssueFor(t, "server-only", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	s := natstest.StartConfig(t, embednats.Config{TLS: embednats.TLS{Cert: serverCert, Key: serverKey, CA: ca.File, Verify: true}})
	urls := "nats://" + testutil.FreeAddr(t) + "," + s.ClientURL()

	opts, err := cli.NATSOptions("tls", config.Client{NATSCA: ca.File, NATSCert: clientCert, NATSKey: clientKey})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := cli.Connect(urls, append(opts, nats.RetryOnFailedConnect(false))...)
	if err != nil {
		t.Fatalf("connect with the CA and a client certificate: %v", err)
	}
	defer nc.Close()
	if state, err := nc.TLSConnectionState(); err != nil || !state.HandshakeComplete || len(state.PeerCertificates) == 0 {
		t.Fatalf("connected, but not over TLS: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Without its certificate the client is told what to set, in the
	// log line that says the server is not reachable.
	var logs testutil.LogBuffer
	caOnly, err := cli.NATSOptions("tls", config.Client{NATSCA: ca.File})
	if err != nil {
		t.Fatal(err)
	}
	refused, err := cli.Connect(s.ClientURL(), append(caOnly, cli.NATSLogging(slog.New(slog.NewTextHandler(&logs, nil)))...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	testutil.Eventually(t, 10*time.Second, "the hint about the client certificate", func() bool {
		return strings.Contains(logs.String(), "wants a certificate its CA signed, nats_cert and nats_key")
	})

	for _, tc := range []struct {
		name   string
		client config.Client
		want   string
	}{
		{"missing CA", config.Client{NATSCA: "/nonexistent/ca.pem"}, "nats ca: open /nonexistent/ca.pem"},
		{"CA file without a certificate", config.Client{NATSCA: clientKey}, "nats ca: " + clientKey + " holds no PEM certificate"},
		{"cert without key", config.Client{NATSCert: clientCert}, "nats cert: set, but nats_key is empty"},
		{"key without cert", config.Client{NATSKey: clientKey}, "nats key: set, but nats_cert is empty"},
		{"certificate for servers only", config.Client{NATSCert: serverOnly, NATSKey: serverOnlyKey}, "nats cert " + serverOnly + ": its extended key usage lacks clientAuth"},
		{"key of another certificate", config.Client{NATSCert: serverCert, NATSKey: clientKey}, "nats cert " + serverCert + " with key " + clientKey + ": tls: private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cli.NATSOptions("tls", tc.client); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NATSOptions = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// A [nats] value a flag gave is named by the flag, and refused as a usage
// error (exit 2); a port another process holds is named by the flag too,
// but is no wrong flag (exit 1): the same command line may start later.
func TestPlaceNATSErrorNamesTheFlag(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := loadConfig(t, "[nats]\nlisten = \"127.0.0.1:-1\"\n")
	for _, tt := range []struct {
		name, listen string
		start        func(embednats.Config) error
		want         string
		code         int
	}{
		{"malformed", "bogus", embednats.Check, `--nats-listen: "bogus": want host:port`, 2},
		{"port in use", held.Addr().String(), func(ec embednats.Config) error {
			s, err := embednats.Start(ec)
			if err == nil {
				s.Shutdown()
			}
			return err
		}, "--nats-listen: listen on " + held.Addr().String(), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ec := cli.EmbedConfig(cfg)
			ec.Listen, ec.DataDir = tt.listen, t.TempDir()
			err := cli.PlaceNATSError(cfg, tt.start(ec), map[string]string{"nats.listen": "nats-listen"})
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to start with %s", err, tt.want)
			}
			if cli.ExitCode(err) != tt.code {
				t.Errorf("exit code %d, want %d", cli.ExitCode(err), tt.code)
			}
		})
	}
}
