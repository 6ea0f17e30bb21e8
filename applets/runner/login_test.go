package runner

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// startApplet runs narun runner with args until the test ends.
func startApplet(t *testing.T, args ...string) *testutil.LogBuffer {
	return testutil.RunApplet(t, Main, append([]string{"runner", "--data-dir", t.TempDir(), "--node-id", "n1", "--admin-listen", ""}, args...)...)
}

// The runner's log names its servers without their password.
func TestLogHidesThePassword(t *testing.T) {
	addr := natstest.StartWithLogin(t, "edge", "edge-secret")
	log := startApplet(t, "--nats-url", "nats://edge:edge-secret@"+addr)
	wants := []string{`msg="nats connected" url=nats://edge:xxxxx@` + addr, `msg="runner started" node=n1 nats=nats://edge:xxxxx@` + addr}
	for _, want := range wants {
		testutil.Eventually(t, 20*time.Second, want, func() bool { return strings.Contains(log.String(), want) })
	}
	logs := log.String()
	if strings.Contains(logs, "edge-secret") {
		t.Errorf("the password appears in the log:\n%s", logs)
	}
}

// A runner refused by NATS says so, not only that the connection closed.
func TestLogSaysTheLoginWasRefused(t *testing.T) {
	addr := natstest.StartWithLogin(t, "edge", "edge-secret")
	log := startApplet(t, "--nats-url", "nats://edge:wrong-secret@"+addr)
	refused := func(level, msg string) bool {
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, "level="+level+" msg="+msg) && strings.Contains(strings.ToLower(l), "authorization violation") {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, 20*time.Second, "the refusal logged as an error", func() bool { return refused("ERROR", `"nats refused the login`) })
	testutil.Eventually(t, 20*time.Second, "the refusal in the buckets' warning", func() bool { return refused("WARN", `"open narun buckets`) })
	if n := strings.Count(log.String(), "nats refused the login"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, log.String())
	}
}

// A runner refused by NATS keeps trying: once the server takes its login
// (a password rotated on the server after the runner's), it connects with
// no restart. nats.go alone gives up after a server refused it twice.
func TestConnectsOnceTheLoginIsAccepted(t *testing.T) {
	var serverLog testutil.LogBuffer
	old := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&serverLog, nil)),
		Users: []embednats.User{{User: "edge", Password: "old-secret"}}})
	addr := strings.TrimPrefix(old.ClientURL(), "nats://")
	log := startApplet(t, "--nats-url", "nats://edge:new-secret@"+addr)
	testutil.Eventually(t, 30*time.Second, "the server to refuse the login three times", func() bool {
		return strings.Count(serverLog.String(), "authentication error") >= 3
	})
	old.Shutdown()
	natstest.StartConfig(t, embednats.Config{Listen: addr, Users: []embednats.User{{User: "edge", Password: "new-secret"}}})
	testutil.Eventually(t, 30*time.Second, "the runner to connect", func() bool {
		return strings.Contains(log.String(), `msg="nats connected"`)
	})
}
