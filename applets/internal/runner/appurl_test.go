package runner

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

const appLoginWarning = "apps get this runner's NATS servers without its login"

// An app gets the runner's servers but never the runner's login, which may
// deploy to every node; a login given for apps reaches them as written.
func TestAppsGetNoRunnerLogin(t *testing.T) {
	t.Parallel()
	addr, other := testutil.FreeAddr(t), testutil.FreeAddr(t)
	runnerURL := "nats://edge:edge-secret@" + addr + ",edge:edge-secret@" + other
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string // NARUN_NATS_URL
		warn bool
	}{
		{"nats_url", func(o *Options) { o.Config.NATSURL = runnerURL }, "nats://" + addr + "," + other, true},
		{"connected url", func(o *Options) {}, "nats://" + addr, true},
		{"app_nats_creds", func(o *Options) { o.Config.NATSURL, o.Config.AppNATSCreds = runnerURL, "/etc/narun/app.creds" },
			"nats://" + addr + "," + other, false},
		{"app_nats_url", func(o *Options) {
			o.Config.NATSURL, o.Config.AppNATSURL = runnerURL, "nats://app:app-secret@"+addr
		}, "nats://app:app-secret@" + addr, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, natstest.StartConfig(t, embednats.Config{Listen: addr,
				Users: []embednats.User{{User: "edge", Password: "edge-secret"}, {User: "app", Password: "app-secret"}}}))
			nc, err := nats.Connect("nats://edge:edge-secret@" + addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			tr := startRunner(t, c, func(o *Options) {
				o.Conn, o.AppNATSURL = nc, ""
				tc.mod(o)
			})
			app := strings.ReplaceAll(tc.name, "_", "-")
			app = strings.ReplaceAll(app, " ", "-")
			c.deploy(t, app, "1.0.0", probeBin, `args = ["env"]`)
			tr.waitLine(t, app, "probe: ready")
			lines := strings.Join(tr.lines(app), "\n")
			if !strings.Contains(lines, "env NARUN_NATS_URL="+tc.want+"\n") {
				t.Errorf("app environment lacks NARUN_NATS_URL=%s:\n%s", tc.want, lines)
			}
			if strings.Contains(lines, "edge-secret") {
				t.Errorf("the runner's password reached the app:\n%s", lines)
			}
			logs := tr.logs.String()
			if n := strings.Count(logs, appLoginWarning); n != map[bool]int{true: 1}[tc.warn] {
				t.Errorf("warning about the apps' login logged %d times, want it %v:\n%s", n, tc.warn, logs)
			}
			if strings.Contains(logs, "edge-secret") {
				t.Errorf("the runner's password is in its log:\n%s", logs)
			}
		})
	}
}

// A sandboxed app without network reaches NATS through the bridge with the
// login app_nats_url gives it.
func TestSandboxAppKeepsItsLoginThroughTheBridge(t *testing.T) {
	t.Parallel()
	addr := testutil.FreeAddr(t)
	c := newCluster(t, natstest.StartConfig(t, embednats.Config{Listen: addr,
		Users: []embednats.User{{User: "app", Password: "app-secret"}}}))
	tr := startSandboxRunner(t, c, func(o *Options) { o.AppNATSURL, o.Config.AppNATSURL = "", "nats://app:app-secret@"+addr })
	// A route makes the health check a ping of the service over NATS.
	c.deploy(t, "hello", "1.0.0", helloBin, "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n[[routes]]\npath = \"/hello/\"\n")
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
}

// A sandboxed app without network reaches a NATS server that listens on
// IPv6 only: the bridge's inside is IPv4 loopback whatever the outside.
func TestSandboxBridgeToIPv6NATS(t *testing.T) {
	t.Parallel()
	srv := natstest.StartConfig(t, embednats.Config{Listen: "[::1]:0"})
	c := newCluster(t, srv)
	tr := startSandboxRunner(t, c, func(o *Options) { o.AppNATSURL, o.Config.AppNATSURL = "", srv.ClientURL() })
	c.deploy(t, "hello", "1.0.0", helloBin, "mode = \"sandbox\"\n[sandbox]\nnetwork = \"isolated\"\n[[routes]]\npath = \"/hello/\"\n")
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
}

func TestBridgedNATSURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, url, target string }{
		{"nats://10.0.0.1:4222", "nats://127.0.0.1:4222", "10.0.0.1:4222"},
		{"nats://app:pw@10.0.0.1:4222,nats://app:pw@10.0.0.2:4222", "nats://app:pw@127.0.0.1:4222", "10.0.0.1:4222"},
		{"tls://t0ken@nats.example.com", "nats://t0ken@127.0.0.1:4222", "nats.example.com:4222"},
		{"app:pw@10.0.0.1:4223", "nats://app:pw@127.0.0.1:4222", "10.0.0.1:4223"},
		{"10.0.0.1", "nats://127.0.0.1:4222", "10.0.0.1:4222"},
		{"nats://app:pw@[::1]:4222", "nats://app:pw@127.0.0.1:4222", "[::1]:4222"},
		{"[2001:db8::1]:4223", "nats://127.0.0.1:4222", "[2001:db8::1]:4223"},
		{"nats://[fe80::1%25eth0]", "nats://127.0.0.1:4222", "[fe80::1%eth0]:4222"},
	} {
		if got := bridgedNATSURL(tc.in); got != tc.url {
			t.Errorf("bridgedNATSURL(%q) = %q, want %q", tc.in, got, tc.url)
		}
		if got := natsTarget(tc.in); got != tc.target {
			t.Errorf("natsTarget(%q) = %q, want %q", tc.in, got, tc.target)
		}
	}
}

// Apps get the TLS files given for them. The CA defaults to the runner's,
// which is no secret, when they get the runner's own servers, but not
// when they are given others, which may not use TLS; the runner's own
// certificate never reaches them.
func TestAppsGetTLSFiles(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "server")
	runnerCert, runnerKey := ca.Issue(t, "runner")
	appCert, appKey := ca.Issue(t, "app")
	srv := natstest.StartConfig(t, embednats.Config{TLS: embednats.TLS{Cert: serverCert, Key: serverKey}})
	for _, tc := range []struct {
		name, appURL, appCA string
		want                string // NARUN_NATS_CA, "" for none
	}{
		{"runner-servers", "", "", ca.File},
		{"app-nats-ca", srv.ClientURL(), "/etc/narun/apps-ca.pem", "/etc/narun/apps-ca.pem"},
		{"other-servers", "nats://127.0.0.1:4222", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, srv)
			tr := startRunner(t, c, func(o *Options) {
				o.AppNATSURL = ""
				o.Config.NATSURL, o.Config.AppNATSURL = srv.ClientURL(), tc.appURL
				o.Config.NATSCA, o.Config.NATSCert, o.Config.NATSKey = ca.File, runnerCert, runnerKey
				o.Config.AppNATSCA, o.Config.AppNATSCert, o.Config.AppNATSKey = tc.appCA, appCert, appKey
			})
			c.deploy(t, tc.name, "1.0.0", probeBin, `args = ["env"]`)
			tr.waitLine(t, tc.name, "probe: ready")
			lines := strings.Join(tr.lines(tc.name), "\n") + "\n"
			for _, want := range []string{"env NARUN_NATS_CERT=" + appCert + "\n", "env NARUN_NATS_KEY=" + appKey + "\n"} {
				if !strings.Contains(lines, want) {
					t.Errorf("app environment lacks %q:\n%s", want, lines)
				}
			}
			if got := strings.Contains(lines, "env NARUN_NATS_CA="); got != (tc.want != "") || tc.want != "" && !strings.Contains(lines, "env NARUN_NATS_CA="+tc.want+"\n") {
				t.Errorf("app environment: want NARUN_NATS_CA %q:\n%s", tc.want, lines)
			}
			if strings.Contains(lines, runnerCert) || strings.Contains(lines, runnerKey) || strings.Contains(lines, "NARUN_NATS_TLS_NAME") {
				t.Errorf("the runner's certificate, or a TLS name for a bridge it does not use, reached the app:\n%s", lines)
			}
		})
	}
}

// A sandboxed app without network reaches a server that requires TLS
// through the bridge: it dials the bridge at 127.0.0.1, and checks the
// server's certificate for the name of the server behind it.
func TestSandboxAppReachesTLSThroughTheBridge(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server", "localhost")
	// The app's uid reads the CA from a directory it may reach.
	shared := sandboxDataDir(t)
	caFile := filepath.Join(shared, "ca.pem")
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartConfig(t, embednats.Config{TLS: embednats.TLS{Cert: cert, Key: key}})
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, srv)
	tr := startSandboxRunner(t, c, func(o *Options) {
		o.AppNATSURL, o.Config.AppNATSURL, o.Config.AppNATSCA = "", "nats://localhost:"+port, caFile
	})
	// A route makes the health check a ping of the service over NATS.
	c.deploy(t, "hello", "1.0.0", helloBin, "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n[[sandbox.paths]]\npath = \""+shared+"\"\nmode = \"r\"\n[[routes]]\npath = \"/hello/\"\n")
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
}
