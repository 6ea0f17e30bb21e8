package gw_test

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/narun/narun/applets/gw"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// startGateway runs narun gw against the NATS at url until the test ends.
func startGateway(t *testing.T, url string) *testutil.LogBuffer {
	return testutil.RunApplet(t, gw.Main, "gw", "--nats-url", url, "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t))
}

// The gateway's log names its servers without their password.
func TestLogHidesThePassword(t *testing.T) {
	addr := natstest.StartWithLogin(t, "edge", "edge-secret")
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
	addr := natstest.StartWithLogin(t, "edge", "edge-secret")
	log := startGateway(t, "nats://edge:wrong-secret@"+addr)
	const want = `level=ERROR msg="nats refused the login`
	testutil.Eventually(t, 20*time.Second, "the refusal logged", func() bool {
		return strings.Contains(log.String(), want)
	})
	if !strings.Contains(log.String(), "Authorization Violation") {
		t.Errorf("log lacks the server's reason:\n%s", log.String())
	}
}

// A gateway whose NATS is down says why, naming the server it tries; the
// failed attempts that follow within a minute add no lines.
func TestLogSaysNATSIsUnreachable(t *testing.T) {
	down := testutil.FreeAddr(t)
	log := startGateway(t, "nats://edge:edge-secret@"+down)
	const want = `level=WARN msg="nats not reachable, retrying" servers=nats://`
	testutil.Eventually(t, 20*time.Second, want, func() bool { return strings.Contains(log.String(), want) })
	logs := log.String()
	if !strings.Contains(logs, down) || !strings.Contains(logs, "connection refused") || strings.Contains(logs, "edge-secret") {
		t.Errorf("want the server and the reason, without the password:\n%s", logs)
	}
	// Something now listens there and hangs up on every attempt: once it
	// has seen three, they must have added no line.
	ln, err := net.Listen("tcp", down)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var attempts atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	testutil.Eventually(t, 30*time.Second, "three more attempts", func() bool { return attempts.Load() >= 3 })
	if n := strings.Count(log.String(), "nats not reachable"); n != 1 {
		t.Errorf("%d unreachable lines within seconds, want 1:\n%s", n, log.String())
	}
}
