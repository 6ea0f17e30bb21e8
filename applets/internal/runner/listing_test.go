package runner

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// TestNoCachedSpecsToStartFrom starts a runner on a fresh data dir,
// connected to a NATS server without JetStream, where narun-apps is never
// read: its warning must not promise apps from cached specs it does not
// have.
func TestNoCachedSpecsToStartFrom(t *testing.T) {
	nc := natstest.StartWithoutJetStream(t)
	logs := runWithoutJetStream(t, nc, node, t.TempDir())
	testutil.Eventually(t, 20*time.Second, "a warning that narun-apps was not read", func() bool {
		return strings.Contains(logs.String(), "narun-apps not read in time")
	})
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "narun-apps not read in time") {
			line = l
		}
	}
	if strings.Contains(line, "starting apps from the cached specs") || !strings.Contains(line, "no app specs cached") {
		t.Errorf("warning with no cached specs: %s", line)
	}
}

// runWithoutJetStream runs a runner of nodeID on dataDir, connected by nc
// to a server without JetStream, until the test ends, and returns its log.
func runWithoutJetStream(t *testing.T, nc *nats.Conn, nodeID, dataDir string) *testutil.LogBuffer {
	t.Helper()
	logs := &testutil.LogBuffer{}
	r, err := New(Options{
		Config:     config.Runner{NodeID: nodeID, HeartbeatInterval: config.Duration(100 * time.Millisecond)},
		DataDir:    dataDir,
		Conn:       nc,
		AppNATSURL: nc.ConnectedUrl(),
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return logs
}
