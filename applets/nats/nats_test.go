package nats_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	natsapplet "github.com/narun/narun/applets/nats"
)

// startApplet runs `narun nats` with args until it listens on addr; stop
// cancels it and returns what the applet returned.
func startApplet(t *testing.T, addr string, args ...string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(string) string { return "" }}
		done <- natsapplet.Main(ctx, stdio, append([]string{"nats", "--data-dir", t.TempDir()}, args...))
	}()
	stopped := false
	stop = func() error {
		t.Helper()
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("applet did not stop after cancel")
			return nil
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	testutil.Eventually(t, 10*time.Second, "nats to listen on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return stop
}

// TestNatsCLIAgainstApplet drives `narun nats` with the real nats CLI, an
// independent client: create a bucket, put a key and read it back.
func TestNatsCLIAgainstApplet(t *testing.T) {
	natsCLI := testutil.Tool(t, "nats")
	addr := testutil.FreeAddr(t)
	stop := startApplet(t, addr, "--listen", addr, "--config", "/dev/null")
	nats := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(natsCLI, append([]string{"--server", "nats://" + addr, "--timeout", "10s"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	nats("kv", "add", "devices")
	nats("kv", "put", "devices", "node-1", "online")
	if got := strings.TrimSpace(nats("kv", "get", "devices", "node-1", "--raw")); got != "online" {
		t.Fatalf("kv get = %q, want online", got)
	}
	if err := stop(); err != nil {
		t.Fatalf("applet returned %v after cancel", err)
	}
}
