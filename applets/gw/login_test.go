package gw_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/gw"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// startGateway runs `narun gw` with no configuration file against the NATS
// at url until the test ends; it returns its log.
func startGateway(t *testing.T, url string) *testutil.LogBuffer {
	t.Helper()
	saved := config.SearchPath
	config.SearchPath = nil
	t.Cleanup(func() { config.SearchPath = saved })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr testutil.LogBuffer
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
		done <- gw.Main(ctx, stdio, []string{"gw", "--nats-url", url, "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t)})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gw returned %v after cancel; log:\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("gw did not stop after cancel")
		}
	})
	return &stderr
}

// guardedNATS runs a NATS server that wants the login edge:edge-secret.
func guardedNATS(t *testing.T) (addr string) {
	t.Helper()
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		Users: []embednats.User{{User: "edge", Password: "edge-secret"}}})
	return strings.TrimPrefix(srv.ClientURL(), "nats://")
}

// The gateway's log names its servers without their password.
func TestLogHidesThePassword(t *testing.T) {
	addr := guardedNATS(t)
	log := startGateway(t, "nats://edge:edge-secret@"+addr)
	wants := []string{`msg="nats connected" url=nats://edge:xxxxx@` + addr, `msg="gateway starting" nats=nats://edge:xxxxx@` + addr}
	for _, want := range wants {
		testutil.Eventually(t, 20*time.Second, want, func() bool { return strings.Contains(log.String(), want) })
	}
	logs := log.String()
	if strings.Contains(logs, "edge-secret") {
		t.Errorf("the password appears in the log:\n%s", logs)
	}
}

// A gateway refused by NATS says so once, as an error.
func TestLogSaysTheLoginWasRefused(t *testing.T) {
	addr := guardedNATS(t)
	log := startGateway(t, "nats://edge:wrong-secret@"+addr)
	const want = `level=ERROR msg="nats refused the login`
	testutil.Eventually(t, 20*time.Second, "the refusal logged", func() bool {
		return strings.Contains(log.String(), want)
	})
	if !strings.Contains(log.String(), "Authorization Violation") {
		t.Errorf("log lacks the server's reason:\n%s", log.String())
	}
}
