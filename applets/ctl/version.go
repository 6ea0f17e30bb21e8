package ctl

import (
	"encoding/json"
	"fmt"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/cli"
)

// versionCommand prints what `narun version` prints: `narun-ctl version`
// is what an operator of kubectl or nomad types first. It needs neither
// the configuration nor NATS, so it answers on a machine where both are
// broken.
func versionCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print ctl's version, commit, Go version and platform (node list shows each runner's)",
		Flags: []ucli.Flag{jsonFlag()},
		Action: func(c *ucli.Context) error {
			if err := requiredArgs(c); err != nil {
				return err
			}
			info := buildinfo.Get()
			if c.Bool(flagJSON) {
				return json.NewEncoder(stdio.Stdout).Encode(info)
			}
			_, err := fmt.Fprintln(stdio.Stdout, info)
			return err
		},
	}
}
