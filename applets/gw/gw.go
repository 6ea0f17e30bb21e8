// Package gw is the narun gw applet: the HTTP gateway on its own, talking
// to NATS over TCP.
package gw

import (
	"context"
	"fmt"
	"log/slog"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
)

// description is the help's DESCRIPTION: what the flags do not show.
const description = `Routes come from [[gateway.routes]] in the configuration file and from the
narun-routes bucket, where deployed apps put theirs (narun ctl route list).
The bucket is followed live; the file is re-read when it changes and on SIGHUP
(systemctl reload), which applies routes, timeout, max_body, body_idle_timeout,
access_log, trusted_keys and a tls.cert or tls.key that names other files.
` + gateway.RestartOnly + `. Only the file sets
[gateway] timeout, max_body, body_idle_timeout, shutdown_timeout, access_log,
max_connections, max_body_memory, trusted_keys and
[gateway.tls] cert and key (HTTPS; the certificate is reloaded when its
files change): testdata/narun.toml lists every key, with its default, and the
README's Configuration section explains the file.
/readyz on the admin address answers 200 once the gateway is connected to NATS
and has read narun-routes, or found that NATS has no JetStream (before that,
deployed apps' routes would answer 404, unless --routes-cache names a file:
the gateway keeps the routes it reads there and, at its next start, serves
those until narun-routes answers).`

// Flags are the applet's flags, apart from Main for a test that checks
// the command lines the docs show.
func Flags() []ucli.Flag {
	flags := append(cli.ConfigFlags(), cli.CheckFlag())
	flags = append(flags, cli.ClientFlags()...)
	return append(flags,
		&ucli.StringFlag{Name: "listen", Usage: "HTTP address host:port (default :8080)"},
		&ucli.StringFlag{Name: "admin-listen", Usage: "admin address for /metrics, /healthz, /readyz (default :9090)"},
		&ucli.StringFlag{Name: "tls-listen", Usage: "HTTPS address, once [gateway.tls] cert and key are set (default :8443)"},
		&ucli.StringFlag{Name: "routes-cache", Usage: "file keeping deployed apps' routes as last read, served at start until narun-routes answers (default: none)"},
	)
}

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	return cli.Service(ctx, stdio, args, "HTTP and gRPC gateway to NATS Micro services\n"+description, "requests", Flags(), func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		cli.Override(c, map[string]*string{"listen": &cfg.Gateway.Listen, "admin-listen": &cfg.Gateway.AdminListen, "tls-listen": &cfg.Gateway.TLS.Listen, "routes-cache": &cfg.Gateway.RoutesCache})
		// The checks that do not depend on each other all run, so that
		// one --check, or a start that fails, names every problem.
		listens := cli.GatewayListens(cfg.Gateway)
		problems := []error{cli.CheckListen(c, cfg, listens...), cli.CheckListenersApart(c, cfg, listens...)}
		opts, err := cli.NATSOptions("narun-gw", cfg.Gateway.Client)
		if err != nil {
			problems = append(problems, cli.PlaceClientError(c, cfg, "gateway", err))
		}
		// A start judges the routes and certificate too before it connects,
		// so that it names their problems with the rest; what the check
		// warns of, gateway.New logs again.
		checkLog := log
		if !c.Bool(cli.FlagCheck) {
			checkLog = nil
		}
		problems = append(problems, gateway.Check(gateway.Options{Config: cfg.Gateway, Logger: checkLog, ConfigPath: cfg.Path, ConfigContent: cfg.Content, TLSListenChosen: c.IsSet("tls-listen")}))
		if err := config.JoinByLine(cfg.Path, problems...); err != nil {
			return err
		}
		if c.Bool(cli.FlagCheck) {
			return cli.Checked(stdio, cfg)
		}
		opts = append(opts, cli.NATSLogging(log)...)
		// RetryOnFailedConnect makes this succeed with NATS down: the
		// gateway serves 503 until the connection comes up.
		nc, err := cli.Connect(cfg.Gateway.NATSURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to nats %s: %w", cli.RedactURLs(cfg.Gateway.NATSURL), cli.RedactError(err))
		}
		defer nc.Close()
		g, err := gateway.New(gateway.Options{Config: cfg.Gateway, Conn: nc, Logger: log, ConfigPath: cfg.Path, ConfigContent: cfg.Content, TLSListenChosen: c.IsSet("tls-listen"),
			OnServing: func() { cli.NotifyReady(log) }, Hurry: cli.Hurried(c), RoutesCache: cfg.Gateway.RoutesCache,
			OnStopping: func() {
				log.Info("gateway stopping: in-flight requests get up to shutdown_timeout; a second SIGINT or SIGTERM stops at once")
			}})
		if err != nil {
			return err
		}
		cli.OnSIGHUP(ctx, g.ReloadOnSIGHUP)
		log.Info("gateway starting", "nats", cli.RedactURLs(cfg.Gateway.NATSURL), "config", cfg.Path)
		// The gateway's listeners name only their address when it is in
		// use; the flag or key that set it is said here.
		return cli.PlaceListenError(c, cfg, g.Run(ctx), listens...)
	})
}
