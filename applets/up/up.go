// Package up is the narun up applet.
package up

import (
	"context"
	"errors"

	"github.com/narun/narun/applets/internal/cli"
)

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	return errors.New("not implemented yet")
}
