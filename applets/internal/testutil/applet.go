package testutil

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
)

// RunApplet runs a long-running applet's Main in process with args, and no
// configuration file found by search, until the test ends; it returns what
// the applet logs. The test fails if the applet does not stop within 30 s
// of the cancel, or stops with an error.
func RunApplet(t *testing.T, main func(context.Context, cli.IO, []string) error, args ...string) *LogBuffer {
	t.Helper()
	saved := config.SearchPath
	config.SearchPath = nil
	t.Cleanup(func() { config.SearchPath = saved })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stderr := &LogBuffer{}
	go func() {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: stderr, Getenv: func(string) string { return "" }}
		done <- main(ctx, stdio, args)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s returned %v after cancel; log:\n%s", args[0], err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30 s of cancel", args[0])
		}
	})
	return stderr
}
