// Package nats is the narun nats applet: the embedded NATS server on its own,
// for devices that form a cluster or join a hub as a leaf node.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats"
)

// Flags are the applet's flags, apart from Main for a test that checks
// the command lines the docs show.
func Flags() []ucli.Flag {
	return append(cli.ConfigFlags(), cli.CheckFlag(), cli.DataDirFlag(),
		&ucli.StringFlag{Name: "listen", Usage: "client address host:port (default 0.0.0.0:4222)"},
		&ucli.StringFlag{Name: "server-name", Usage: "server name, unique in a cluster"},
		&ucli.StringFlag{Name: "http-listen", Usage: "monitoring address host:port (default: off)"},
		&ucli.StringFlag{Name: "cluster-name", Usage: "cluster name"},
		&ucli.StringFlag{Name: "cluster-listen", Usage: "route address host:port (default: no cluster)"},
		&ucli.StringSliceFlag{Name: "routes", Usage: "routes to the other cluster members (nats-route://host:port)"},
		&ucli.StringSliceFlag{Name: "leaf-remote", Usage: "hub to join as a leaf node (nats-leaf://host:port)"},
	)
}

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	return cli.Service(ctx, stdio, args, "embedded NATS server with JetStream\n"+
		"The [nats] table of narun.toml holds the rest (logins, cluster login, leaf remotes,\n"+
		"JetStream limits): testdata/narun.toml lists every key, docs/CLUSTER.md shows a\n"+
		"three-member cluster and a leaf. A changed [nats] table needs a restart.", "", Flags(), func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		cli.Override(c, map[string]*string{
			"listen":         &cfg.NATS.Listen,
			"server-name":    &cfg.NATS.ServerName,
			"http-listen":    &cfg.NATS.HTTPListen,
			"cluster-name":   &cfg.NATS.Cluster.Name,
			"cluster-listen": &cfg.NATS.Cluster.Listen,
		})
		if c.IsSet("routes") {
			cfg.NATS.Cluster.Routes = c.StringSlice("routes")
		}
		// The checks that do not depend on each other all run, so that
		// one --check, or a start that fails, names every problem.
		problems := []error{cli.CheckListenersApart(c, cfg, cli.NATSListens(cfg.NATS, "listen", "http-listen", "cluster-listen")...)}
		ec := cli.EmbedConfig(cfg)
		flagRemote := fmt.Sprintf("nats.leafnodes.remotes[%d]", len(ec.Leafnodes.Remotes))
		if c.IsSet("leaf-remote") {
			ec.Leafnodes.Remotes = append(ec.Leafnodes.Remotes, embednats.LeafRemote{URLs: c.StringSlice("leaf-remote")})
		}
		ec.Logger = log
		ec.Stop = ctx.Done()
		fromFlag := cli.GivenFlags(c, map[string]string{
			"nats.listen":         "listen",
			"nats.server_name":    "server-name",
			"nats.cluster.name":   "cluster-name",
			"nats.http_listen":    "http-listen",
			"nats.cluster.listen": "cluster-listen",
			"nats.cluster.routes": "routes",
			flagRemote:            "leaf-remote",
			flagRemote + ".urls":  "leaf-remote",
		})
		// The server's check writes nothing and binds nothing (it reads
		// the store, the certificates and credentials), so a start runs it
		// too before it makes the data dir: it names the [nats] table's
		// problems with the rest, not once the rest passed.
		if err := embednats.Check(ec); err != nil {
			problems = append(problems, cli.PlaceNATSError(cfg, err, fromFlag))
		}
		check := c.Bool(cli.FlagCheck)
		// A start that failed already judges the data dir as --check does,
		// and makes nothing.
		problems = append(problems, cli.DataDir(check || errors.Join(problems...) != nil, cfg))
		if err := config.JoinByLine(cfg.Path, problems...); err != nil {
			return err
		}
		if check {
			return cli.Checked(stdio, cfg)
		}
		srv, err := embednats.Start(ec)
		if errors.Is(err, embednats.ErrStopped) {
			log.Info("nats stopped before serving: JetStream reads its store again at the next start")
			return nil
		}
		if err != nil {
			return cli.PlaceNATSError(cfg, err, fromFlag)
		}
		log.Info("nats ready", "clients", srv.DialURL(), "data_dir", cfg.DataDir, "config", cfg.Path)
		cli.OnSIGHUP(ctx, func() {
			log.Info("SIGHUP: nothing to reload; restart narun nats to apply a changed [nats] table")
		})
		cli.NotifyReady(log)
		runCtx, stop := context.WithCancel(ctx)
		var watching sync.WaitGroup
		watching.Go(func() { cli.KeepStoreWritable(runCtx, srv, cfg.DataDir, log) })
		if ec.Cluster.Listen != "" {
			watching.Go(func() { cli.WatchNameClashes(runCtx, srv.NameClashes, log) })
		}
		<-ctx.Done()
		stop()
		watching.Wait()
		log.Info("nats stopping")
		srv.Shutdown()
		return err
	})
}
