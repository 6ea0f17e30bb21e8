package runner

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestNoCachedSpecsToStartFrom starts a runner on a fresh data dir,
// connected to a NATS server without JetStream, where narun-apps is never
// read: its warning must not promise apps from cached specs it does not
// have.
func TestNoCachedSpecsToStartFrom(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	logs := &testutil.LogBuffer{}
	r, err := New(Options{
		Config:     config.Runner{NodeID: node, HeartbeatInterval: config.Duration(100 * time.Millisecond)},
		DataDir:    t.TempDir(),
		Conn:       nc,
		AppNATSURL: ns.ClientURL(),
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
