// Package execapp is the hidden exec-app applet: the runner starts every
// app of mode "exec" as it, and it hands over to the sandbox package,
// which gives the process the app's OOM score and execs the app.
package execapp

import (
	"context"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/sandbox"
)

// Main never returns: the app replaces the process, or it exits 127.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	sandbox.ExecAppMain(args[1:])
	return nil
}
