package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A runner that stopped cleanly says so last, as the gateway ("gateway
// stopped") and the NATS server do: without it a journal that ends at
// "stopping all instances" reads the same as a runner killed in the middle
// of stopping its apps.
func TestCleanStopLogsStopped(t *testing.T) {
	srv := natstest.Start(t)
	log := &testutil.LogBuffer{}
	stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: log, Stderr: log, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Main(ctx, stdio, []string{"runner", "--config", "/dev/null", "--log-format", "json", "--nats-url", srv.ClientURL(),
			"--data-dir", t.TempDir(), "--node-id", "n1", "--admin-listen", ""})
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), `"runner started"`); {
		if time.Now().After(deadline) {
			t.Fatalf("runner did not start; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Main = %v after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not stop within 30 s of cancel")
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `"msg":"runner stopped"`) {
		t.Errorf("last line %s, want runner stopped; log:\n%s", last, log.String())
	}
}
