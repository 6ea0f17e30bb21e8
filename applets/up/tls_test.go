package up_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// asTLSApp makes the test binary a consumer app that answers "over tls"
// until SIGTERM, connected as the runner tells it to.
const asTLSApp = "UP_TEST_TLS_APP"

func tlsAppMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err := consumer.ListenAndServe(ctx, consumer.Config{Name: "tlsapp"}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "over tls")
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// narun up with a client port that requires TLS and verifies clients:
// ctl deploys over TLS with its certificate, the app reaches the server
// with the files the runner gives it, and the gateway, connected in
// process, routes to it.
func TestUpOverTLS(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "server")
	ctlCert, ctlKey := ca.Issue(t, "ctl")
	appCert, appKey := ca.Issue(t, "app")
	config := filepath.Join(t.TempDir(), "narun.toml")
	body := fmt.Sprintf("[nats.tls]\ncert = %q\nkey = %q\nca = %q\nverify = true\n\n[runner]\napp_nats_ca = %q\napp_nats_cert = %q\napp_nats_key = %q\n",
		serverCert, serverKey, ca.File, ca.File, appCert, appKey)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	natsAddr, gwAddr, runnerAdmin, dataDir := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), t.TempDir()
	cmd, out := startUp(t, dataDir, "--config", config, "--node-id", "uptls", "--nats-listen", natsAddr,
		"--listen", gwAddr, "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)

	specFile := filepath.Join(t.TempDir(), "tlsapp.toml")
	spec := fmt.Sprintf("name = \"tlsapp\"\nversion = \"1\"\nnodes = [\"uptls\"]\n[env]\n%s = \"1\"\n[[routes]]\npath = \"/tls/\"\n", asTLSApp)
	if err := os.WriteFile(specFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, code := ctl(natsAddr, dataDir, "deploy", specFile, "--binary", os.Args[0], "--wait", "--timeout", "5s"); code == 0 || !strings.Contains(res, "certificate") {
		t.Fatalf("ctl without the CA: exit %d, want a failure naming the certificate:\n%s", code, res)
	}
	if res, code := ctl(natsAddr, dataDir, "--nats-ca", ca.File, "--nats-cert", ctlCert, "--nats-key", ctlKey,
		"deploy", specFile, "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	var got string
	testutil.Eventually(t, 10*time.Second, "the app's answer through the gateway", func() bool {
		resp, err := http.Get("http://" + gwAddr + "/tls/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if got != "over tls" {
		t.Fatalf("gateway answered %q, want the app's %q", got, "over tls")
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// With TLS on its client port, narun up says when apps lack the CA or the
// certificate they need to connect, as it says when they lack a login.
func TestUpWarnsAppsHaveNoTLSFiles(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	for _, tc := range []struct {
		name, runner  string
		want, notWant []string
	}{
		{"nothing for apps", "", []string{"apps have no CA", "apps have no certificate"}, nil},
		{"a CA only", fmt.Sprintf("app_nats_ca = %q\n", ca.File), []string{"apps have no certificate"}, []string{"apps have no CA"}},
		{"the runner's CA and a certificate", fmt.Sprintf("nats_ca = %q\napp_nats_cert = %q\napp_nats_key = %q\n", ca.File, cert, key), nil, []string{"apps have no CA", "apps have no certificate"}},
		// The runner's CA goes to apps given its own servers only.
		{"the runner's CA and an app URL", fmt.Sprintf("nats_ca = %q\napp_nats_url = \"nats://app:pw@127.0.0.1:4222\"\napp_nats_cert = %q\napp_nats_key = %q\n", ca.File, cert, key), []string{"apps have no CA"}, []string{"apps have no certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := filepath.Join(t.TempDir(), "narun.toml")
			body := fmt.Sprintf("[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.tls]\ncert = %q\nkey = %q\nca = %q\nverify = true\n\n[runner]\n%s", cert, key, ca.File, tc.runner)
			if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
			if code := applets.Main([]string{"narun", "up", "--config", config, "--data-dir", t.TempDir(), "--check"}, stdio); code != 0 {
				t.Fatalf("narun up --check: exit %d:\n%s", code, out.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("no warning with %q:\n%s", want, out.String())
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(out.String(), notWant) {
					t.Errorf("a warning with %q, which the file answers:\n%s", notWant, out.String())
				}
			}
		})
	}
}

// With TLS on its client port, narun up's banner names it with tls://,
// the scheme of a NATS URL whose port requires TLS: nats:// says plain
// text, and a client given it without a CA fails only at the handshake.
func TestUpBannerNamesTLSClientPort(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	dir := t.TempDir()
	config := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("[nats.tls]\ncert = %q\nkey = %q\n", cert, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	natsAddr := testutil.FreeAddr(t)
	cmd, out := startUp(t, filepath.Join(dir, "data"), "--config", config, "--node-id", "uptlsbanner", "--nats-listen", natsAddr,
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "  runner   admin") })
	if want := "  nats     tls://" + natsAddr + "\n"; !strings.Contains(out.String(), want) {
		t.Errorf("startup output lacks %q:\n%s", want, out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}
