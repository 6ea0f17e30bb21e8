package gw_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/gw"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A gateway started while JetStream cannot answer (a cluster member back
// alone, its peers down) serves the deployed routes its routes_cache kept,
// and keeps /readyz at 503 until narun-routes answers.
func TestGatewayAppletServesCachedRoutes(t *testing.T) {
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "routes.json")
	entries, err := json.Marshal(map[string][]byte{"hello": []byte(`[{"path":"/hello/","service":"hello"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cache, entries, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "narun.toml")
	conf := fmt.Sprintf("[gateway]\nlisten = %q\nadmin_listen = %q\nroutes_cache = %q\n", httpAddr, adminAddr, cache)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// One member of three: JetStream has no meta leader to answer.
	alone := natstest.NewCluster(t, 3).Start(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serving := make(chan error, 1)
	go func() {
		serving <- consumer.Serve(ctx, natstest.Connect(t, alone), consumer.Config{Name: "hello"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "from the cache")
		}))
	}()
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
		done <- gw.Main(ctx, stdio, []string{"gw", "--config", path, "--nats-url", alone.ClientURL()})
	}()
	testutil.Eventually(t, 20*time.Second, "cached route served", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/hello/x")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && string(body) == "from the cache"
	})
	if s := status("http://" + adminAddr + "/readyz"); s != 503 {
		t.Errorf("readyz from the cache alone = %d, want 503", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("gw returned %v after cancel; stderr:\n%s", err, stderr.String())
	}
	if err := <-serving; err != nil && !errors.Is(err, consumer.ErrConnClosed) {
		t.Errorf("service: %v", err)
	}
}

// TestGatewayApplet runs `narun gw` against NATS that comes up after it,
// reloads its routes on SIGHUP and stops on cancel.
func TestGatewayApplet(t *testing.T) {
	natsAddr, httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "narun.toml")
	base := "[gateway]\nlisten = \"" + httpAddr + "\"\nadmin_listen = \"" + adminAddr + "\"\n"
	if err := os.WriteFile(path, []byte(base+"[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
		done <- gw.Main(ctx, stdio, []string{"gw", "--config", path, "--nats-url", "nats://" + natsAddr})
	}()
	testutil.Eventually(t, 10*time.Second, "gateway admin to listen", func() bool { return status("http://"+adminAddr+"/healthz") == 200 })
	if s := status("http://" + adminAddr + "/readyz"); s != 503 {
		t.Errorf("readyz without NATS = %d, want 503", s)
	}
	if s := status("http://" + httpAddr + "/a"); s != 503 {
		t.Errorf("request without NATS = %d, want 503", s)
	}
	natstest.StartConfig(t, embednats.Config{Listen: natsAddr})
	testutil.Eventually(t, 20*time.Second, "readyz once NATS is up", func() bool { return status("http://"+adminAddr+"/readyz") == 200 })

	if s := status("http://" + httpAddr + "/b"); s != 404 {
		t.Errorf("/b before reload = %d, want 404", s)
	}
	if err := os.WriteFile(path, []byte(base+"[[gateway.routes]]\npath = \"/b\"\nservice = \"b\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// No responder for b: 503 means the route exists.
	testutil.Eventually(t, 10*time.Second, "route /b after SIGHUP", func() bool { return status("http://"+httpAddr+"/b") == 503 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("gw returned %v after cancel; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gw did not stop after cancel")
	}
}

// TestGatewayAppletWithoutFile sends SIGHUP to `narun gw` started without a
// configuration file: there is nothing to reload, which it must say at info
// level rather than log a failed reload.
func TestGatewayAppletWithoutFile(t *testing.T) {
	saved := config.SearchPath
	config.SearchPath = nil
	t.Cleanup(func() { config.SearchPath = saved })
	srv := natstest.Start(t)
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr testutil.LogBuffer
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
		done <- gw.Main(ctx, stdio, []string{"gw", "--nats-url", srv.ClientURL(), "--listen", httpAddr, "--admin-listen", adminAddr})
	}()
	testutil.Eventually(t, 10*time.Second, "gateway admin to listen", func() bool { return status("http://"+adminAddr+"/healthz") == 200 })
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the SIGHUP log line", func() bool {
		return strings.Contains(stderr.String(), `level=INFO msg="nothing to reload`)
	})
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Errorf("SIGHUP logged an error:\n%s", stderr.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("gw returned %v after cancel; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gw did not stop after cancel")
	}
}

// TestGatewayAppletRefusedConfigIsTheLastWord starts `narun gw` with a
// configuration it refuses after connecting to NATS (a duplicate route).
// nats.go says "connected" on a goroutine of its own, and a connection
// closed at once used to log "nats connected" with an empty url after the
// error; the run is repeated because that goroutine's timing varies.
func TestGatewayAppletRefusedConfigIsTheLastWord(t *testing.T) {
	saved := config.SearchPath
	config.SearchPath = nil
	t.Cleanup(func() { config.SearchPath = saved })
	srv := natstest.Start(t)
	path := filepath.Join(t.TempDir(), "narun.toml")
	route := "[[gateway.routes]]\npath = \"/a/\"\nservice = \"a\"\n"
	if err := os.WriteFile(path, []byte("[gateway]\nlisten = \"\"\nadmin_listen = \"\"\n"+route+route), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		before := callbackDispatchers()
		var stderr testutil.LogBuffer
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
		err := gw.Main(context.Background(), stdio, []string{"gw", "--config", path, "--nats-url", srv.ClientURL()})
		if err == nil || !strings.Contains(err.Error(), "duplicate route") {
			t.Fatalf("gw returned %v, want the duplicate route", err)
		}
		// The connection's callbacks are all run once its dispatcher ends.
		testutil.Eventually(t, 10*time.Second, "nats.go's callback dispatcher to end", func() bool { return callbackDispatchers() <= before })
		if strings.Contains(stderr.String(), `url=""`) {
			t.Fatalf("a line without url after the error:\n%s", stderr.String())
		}
	}
}

// callbackDispatchers counts the goroutines that run nats.go's callbacks,
// one per connection until its last callback ran.
func callbackDispatchers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), ").asyncCBDispatcher(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestGatewayAppletWarnsOfUnusedCertificate starts `narun gw` with a TLS
// certificate and key but [gateway.tls] listen = "": HTTPS is off, and the
// start must say so rather than load the certificate in silence.
func TestGatewayAppletWarnsOfUnusedCertificate(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testutil.CertPair(t, certPath, keyPath, "localhost")
	tlsTable := "[gateway.tls]\ncert = \"" + certPath + "\"\nkey = \"" + keyPath + "\"\n"
	for _, tc := range []struct {
		name, tlsListen string
		warn            bool
	}{
		{"no listener", "listen = \"\"\n", true},
		{"listener", "listen = \"" + testutil.FreeAddr(t) + "\"\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "narun.toml")
			if err := os.WriteFile(path, []byte("[gateway]\nlisten = \"\"\nadmin_listen = \"\"\n"+tlsTable+tc.tlsListen), 0o644); err != nil {
				t.Fatal(err)
			}
			log := testutil.RunApplet(t, gw.Main, "gw", "--config", path, "--nats-url", srv.ClientURL())
			// The warning comes before the gateway starts.
			testutil.Eventually(t, 10*time.Second, "the gateway to start", func() bool { return strings.Contains(log.String(), "gateway starting") })
			warned := strings.Contains(log.String(), "level=WARN") && strings.Contains(log.String(), "gateway.tls.listen")
			if warned != tc.warn {
				t.Errorf("warned of the unused certificate: %v, want %v\n%s", warned, tc.warn, log.String())
			}
		})
	}
}

// --tls-listen asks for HTTPS, even at the default address: without a
// certificate pair it is warned of, as the same address would be if
// another than the default in the file.
func TestGatewayAppletWarnsOfChosenTLSListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(path, []byte("[gateway]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--tls-listen", config.Defaults().Gateway.TLS.Listen}, true},
		{nil, false},
	} {
		var out bytes.Buffer
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
		if err := gw.Main(context.Background(), stdio, append([]string{"gw", "--check", "--config", path}, tc.args...)); err != nil {
			t.Fatalf("gw --check %v: %v", tc.args, err)
		}
		if warned := strings.Contains(out.String(), "HTTPS is off"); warned != tc.warn {
			t.Errorf("gw --check %v warned HTTPS is off: %v, want %v\n%s", tc.args, warned, tc.warn, out.String())
		}
	}
}

// TestGatewayAppletBadFile: a certificate without its key (or the other
// way round) and a malformed trusted key stop the start naming the file,
// the line and the key, as every other error of the file does.
func TestGatewayAppletBadFile(t *testing.T) {
	srv := natstest.Start(t)
	for _, tc := range []struct{ name, rest, want string }{
		{"cert", "\n[gateway.tls]\ncert = \"/etc/narun/tls.pem\"\n", `:6: key "gateway.tls.cert": set without gateway.tls.key`},
		{"key", "\n[gateway.tls]\nkey = \"/etc/narun/tls.pem\"\n", `:6: key "gateway.tls.key": set without gateway.tls.cert`},
		{"trusted key", "trusted_keys = [\"bogus\"]\n", `:4: key "gateway.trusted_keys[0]": "bogus": want narun-ed25519:`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "narun.toml")
			if err := os.WriteFile(path, []byte("[gateway]\nlisten = \"\"\nadmin_listen = \"\"\n"+tc.rest), 0o644); err != nil {
				t.Fatal(err)
			}
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }}
			err := gw.Main(context.Background(), stdio, []string{"gw", "--config", path, "--nats-url", srv.ClientURL()})
			if err == nil || !strings.Contains(err.Error(), path+tc.want) {
				t.Fatalf("gw returned %v, want it to contain %s%s", err, path, tc.want)
			}
		})
	}
}

// TestGatewayAppletHelp: the help says what its flags do not: where
// routes come from, what reloads them, and where the settings that have no
// flag are.
func TestGatewayAppletHelp(t *testing.T) {
	var out bytes.Buffer
	stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: io.Discard, Getenv: func(string) string { return "" }}
	if err := gw.Main(context.Background(), stdio, []string{"narun gw", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[[gateway.routes]]", "narun-routes", "SIGHUP", "when it changes",
		"[gateway.tls]", "timeout", "max_body", "shutdown_timeout", "testdata/narun.toml", "README",
		// What a reload warns of as needing a restart, every key of it.
		"admin_listen", "tls.listen", "max_body_memory", "routes_cache", "log_level", "log_format", "nats_url", "nats_creds", "nats_nkey"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not mention %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), "narun gw - HTTP and gRPC gateway to NATS Micro services\n") {
		t.Errorf("help lost its one-line summary:\n%s", out.String())
	}
}

// TestGatewayAppletStoppingBeforeStopped stops `narun gw` and reads its
// log: "gateway stopping" must come before "gateway stopped", as a
// journal read from its end is to be understood. It was logged from a
// goroutine of its own, racing the gateway's stop; the run is repeated
// because that goroutine's timing varies.
func TestGatewayAppletStoppingBeforeStopped(t *testing.T) {
	saved := config.SearchPath
	config.SearchPath = nil
	t.Cleanup(func() { config.SearchPath = saved })
	srv := natstest.Start(t)
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		var stderr testutil.LogBuffer
		done := make(chan error, 1)
		go func() {
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
			done <- gw.Main(ctx, stdio, []string{"gw", "--nats-url", srv.ClientURL(), "--listen", "", "--admin-listen", ""})
		}()
		testutil.Eventually(t, 10*time.Second, "the gateway serving", func() bool {
			return strings.Contains(stderr.String(), `msg="gateway serving`)
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("gw returned %v after cancel; stderr:\n%s", err, stderr.String())
		}
		logs := stderr.String()
		stopping, stopped := strings.Index(logs, `msg="gateway stopping`), strings.Index(logs, `msg="gateway stopped"`)
		if stopping < 0 || stopped < 0 || stopping > stopped {
			t.Fatalf("want \"gateway stopping\" logged before \"gateway stopped\":\n%s", logs)
		}
	}
}
