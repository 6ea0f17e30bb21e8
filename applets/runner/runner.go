// Package runner is the narun runner applet: the node agent on its own,
// connected to a NATS server elsewhere.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/runner"
)

// Flags are the applet's flags, apart from Main for a test that checks
// the command lines the docs show.
func Flags() []ucli.Flag {
	flags := append(cli.ConfigFlags(), cli.CheckFlag())
	flags = append(flags, cli.ClientFlags()...)
	flags = append(flags, cli.DataDirFlag(),
		&ucli.StringFlag{Name: "node-id", Usage: "id of this node (default: the first label of the host name, e.g. edge-1 of edge-1.example.com; all of an IP address, dots as dashes: 10-0-0-5)"},
		&ucli.StringFlag{Name: "admin-listen", Usage: "admin web page and /metrics address (default :9101; \"\" disables)"},
	)
	return append(flags, runner.NodeFlags()...)
}

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	return cli.Service(ctx, stdio, args, "node agent: deploys and supervises apps\n"+
		"The [runner] table of narun.toml holds the rest (app_nats_url, trusted_keys,\n"+
		"heartbeat_interval): testdata/narun.toml lists every key with its default.", "apps", Flags(), func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		rc := cfg.Runner
		cli.Override(c, map[string]*string{"node-id": &rc.NodeID, "admin-listen": &rc.AdminListen})
		// The checks that do not depend on each other all run, so that
		// one --check, or a start that fails, names every problem.
		admin := cli.Listen{Key: "runner.admin_listen", Flag: "admin-listen", Addr: rc.AdminListen}
		cfg.Runner = rc
		problems := []error{
			cli.CheckListen(c, cfg, admin),
			runner.CheckConfig(cfg, c.IsSet("node-id")),
			runner.ApplyNodeFlags(c, &rc),
		}
		opts, err := cli.NATSOptions("narun runner", rc.Client)
		if err != nil {
			problems = append(problems, cli.PlaceClientError(c, cfg, "runner", err))
		}
		// A start that failed already judges the data dir as --check does,
		// and makes nothing.
		problems = append(problems, cli.DataDir(c.Bool(cli.FlagCheck) || errors.Join(problems...) != nil, cfg))
		if err := config.JoinByLine(cfg.Path, problems...); err != nil {
			return err
		}
		cli.WarnUnreachable(log, cfg.DataDir)
		if c.Bool(cli.FlagCheck) {
			runner.WarnKeyFile(log, rc.MasterKeyFile)
			return cli.Checked(stdio, cfg)
		}
		opts = append(opts, cli.NATSLogging(log)...)
		nc, err := cli.Connect(rc.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to nats %s: %w", cli.RedactURLs(rc.NATSURL), cli.RedactError(err))
		}
		defer nc.Close()
		r, err := runner.New(runner.Options{Config: rc, DataDir: cfg.DataDir, Conn: nc, Logger: log, Hidden: cfg.PrivateFiles()})
		if err != nil {
			return err
		}
		// The admin listener closes once the runner has stopped its apps,
		// not as their stop begins: /healthz and /metrics answer through
		// a stop that may last an app's stop_timeout.
		adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
		defer stopAdmin()
		if rc.AdminListen != "" {
			adminAddr, adminDone, err := cli.Serve(adminCtx, rc.AdminListen, r.AdminHandler(), log)
			if err != nil {
				// The listener names only the address; the flag or the
				// file's key and line that set it are said here.
				return cli.PlaceListenError(c, cfg, fmt.Errorf("runner admin: %w", config.PortNeedsRoot("runner.admin_listen", err)), admin)
			}
			go func() {
				if err := <-adminDone; err != nil {
					log.Error("admin server", "err", err)
				}
			}()
			log.Info("admin page", "addr", adminAddr)
		}
		cli.OnSIGHUP(ctx, func() {
			log.Info("SIGHUP: nothing to reload; apps follow narun-apps and the key file is re-read when it changes")
		})
		cli.NotifyReady(log)
		log.Info("runner started", "node", r.NodeID(), "nats", cli.RedactURLs(rc.NATSURL), "data_dir", cfg.DataDir)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		select {
		case err := <-done:
			if err == nil {
				log.Info("runner stopped")
			}
			return err
		case <-cli.Hurried(c):
			r.Kill()
			return nil
		}
	})
}
