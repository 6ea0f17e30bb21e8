// Package launcher is the hidden launcher applet: the runner re-execs the
// binary as it inside new namespaces, and it hands over to the sandbox.
package launcher

import (
	"context"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/sandbox"
)

// Main never returns: the launcher ends the process with the app's exit
// status, or with sandbox.ExitSetupFailed.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	sandbox.LauncherMain()
	return nil
}
