package runner

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

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
	logs := &testutil.LogBuffer{}
	r, err := New(Options{
		Config:     config.Runner{NodeID: node, HeartbeatInterval: config.Duration(100 * time.Millisecond)},
		DataDir:    t.TempDir(),
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
	defer func() {
		cancel()
		<-done
	}()
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
