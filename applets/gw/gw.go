// Package gw is the narun gw applet: the HTTP gateway on its own, talking
// to NATS over TCP.
package gw

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
)

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	flags := append(cli.ConfigFlags(), cli.ClientFlags()...)
	flags = append(flags,
		&ucli.StringFlag{Name: "listen", Usage: "HTTP address host:port (default :8080)"},
		&ucli.StringFlag{Name: "admin-listen", Usage: "admin address for /metrics, /healthz, /readyz (default :9090)"},
	)
	return cli.Service(ctx, stdio, args, "HTTP and gRPC gateway to NATS Micro services", flags, func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		cli.Override(c, map[string]*string{"listen": &cfg.Gateway.Listen, "admin-listen": &cfg.Gateway.AdminListen})
		opts, err := cli.NATSOptions("narun-gw", cfg.Gateway.Client)
		if err != nil {
			return err
		}
		logging, closeConn := cli.ClientLogging(log)
		opts = append(opts, logging...)
		// RetryOnFailedConnect makes this succeed with NATS down: the
		// gateway serves 503 until the connection comes up.
		nc, err := nats.Connect(cfg.Gateway.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to nats %s: %w", cli.RedactURLs(cfg.Gateway.NATSURL), cli.RedactError(err))
		}
		defer closeConn(nc)
		g, err := gateway.New(gateway.Options{Config: cfg.Gateway, Conn: nc, Logger: log, ConfigPath: cfg.Path,
			OnServing: func() { cli.NotifyReady(log) }})
		if err != nil {
			return err
		}
		cli.WarnUnusedCertificate(log, cfg.Gateway)
		cli.OnSIGHUP(ctx, log, g.Reload)
		log.Info("gateway starting", "nats", cli.RedactURLs(cfg.Gateway.NATSURL), "config", cfg.Path)
		context.AfterFunc(ctx, func() {
			log.Info("gateway stopping: in-flight requests get up to shutdown_timeout; a second SIGINT or SIGTERM stops at once")
		})
		return g.Run(ctx)
	})
}
