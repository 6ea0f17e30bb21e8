package runner

import (
	"errors"
	"fmt"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
)

// The flags of a node's own settings, which narun runner and narun up
// share: they differ from one device to the next, where a copied
// narun.toml does not.
const (
	FlagLabel   = "label"
	FlagKeyFile = "key-file"
)

// NodeFlags are the flags named by FlagLabel and FlagKeyFile.
func NodeFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringSliceFlag{Name: FlagLabel, Usage: "node label key=value, repeatable, added to [runner.labels]; apps select nodes by label"},
		&ucli.StringFlag{Name: FlagKeyFile, Usage: "file with the keys that decrypt secrets ([runner] master_key_file)"},
	}
}

// ApplyNodeFlags sets rc's master_key_file from --key-file and adds the
// labels of --label to its own. It runs after CheckConfig: a wrong label
// here is the command line's, a usage error, not the file's.
func ApplyNodeFlags(c *ucli.Context, rc *config.Runner) error {
	cli.Override(c, map[string]*string{FlagKeyFile: &rc.MasterKeyFile})
	var errs []error
	for _, l := range c.StringSlice(FlagLabel) {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			errs = append(errs, cli.Usage(fmt.Errorf("label %q: want key=value", l)))
			continue
		}
		if err := spec.CheckLabel(k, v); err != nil {
			errs = append(errs, cli.Usage(fmt.Errorf("--label %q: %w", l, err)))
			continue
		}
		if rc.Labels == nil {
			rc.Labels = map[string]string{}
		}
		rc.Labels[k] = v
	}
	return errors.Join(errs...)
}
