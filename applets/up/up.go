// Package up is the narun up applet: embedded NATS, runner and gateway in
// one process, sharing in-process connections, for one device or a laptop.
package up

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/runner"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/embednats"
)

// Flags are the applet's flags, apart from Main for a test that checks
// the command lines the docs show.
func Flags() []ucli.Flag {
	flags := append(cli.ConfigFlags(), cli.CheckFlag(), cli.DataDirFlag(),
		&ucli.StringFlag{Name: "nats-listen", Usage: "NATS client address ([nats] listen, default 0.0.0.0:4222)"},
		&ucli.StringFlag{Name: "listen", Usage: "gateway HTTP address ([gateway] listen, default :8080)"},
		&ucli.StringFlag{Name: "admin-listen", Usage: "gateway admin address ([gateway] admin_listen, default :9090)"},
		&ucli.StringFlag{Name: "tls-listen", Usage: "gateway HTTPS address, once [gateway.tls] cert and key are set ([gateway.tls] listen, default :8443)"},
		&ucli.StringFlag{Name: "runner-admin-listen", Usage: "runner admin address ([runner] admin_listen, default :9101)"},
		&ucli.StringFlag{Name: "node-id", Usage: "node id ([runner] node_id, default the first label of the host name; all of an IP address, dots as dashes: 10-0-0-5)"},
		&ucli.BoolFlag{Name: "signing", Value: true, Usage: "while neither [runner] nor [gateway] trusted_keys is set, run only specs and routes signed by the node key <data_dir>/" + signing.NodeKeyFile + ", created at first start; --signing=false runs unsigned ones"},
	)
	return append(flags, runner.NodeFlags()...)
}

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	return cli.Service(ctx, stdio, args, "embedded NATS, runner and gateway in one process\n"+
		"The flags cover what changes from one device to the next; everything else is in\n"+
		"narun.toml ([nats], [gateway], [runner] and data_dir): testdata/narun.toml lists\n"+
		"every key with its default, docs/CLUSTER.md joins devices into a cluster. SIGHUP\n"+
		"reloads the gateway's routes; a second SIGINT or SIGTERM stops at once.", "apps and requests", Flags(), func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		cli.Override(c, map[string]*string{
			"nats-listen":         &cfg.NATS.Listen,
			"listen":              &cfg.Gateway.Listen,
			"admin-listen":        &cfg.Gateway.AdminListen,
			"tls-listen":          &cfg.Gateway.TLS.Listen,
			"runner-admin-listen": &cfg.Runner.AdminListen,
			"node-id":             &cfg.Runner.NodeID,
		})
		// The checks that do not depend on each other all run, so that
		// one --check, or a start that fails, names every problem.
		listens := append(cli.GatewayListens(cfg.Gateway), cli.Listen{Key: "runner.admin_listen", Flag: "runner-admin-listen", Addr: cfg.Runner.AdminListen})
		problems := []error{
			cli.CheckListen(c, cfg, listens...),
			cli.CheckListenersApart(c, cfg, append(cli.NATSListens(cfg.NATS, "nats-listen", "", ""), listens...)...),
			runner.CheckConfig(cfg, c.IsSet("node-id")),
			runner.ApplyNodeFlags(c, &cfg.Runner),
		}
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(shareCores(runtime.GOMAXPROCS(0)))
		}
		log.Debug("scheduler", "gomaxprocs", runtime.GOMAXPROCS(0))
		// Either list turns the node key off for both parts: the other
		// part then checks nothing.
		switch {
		case len(cfg.Runner.TrustedKeys) > 0 && len(cfg.Gateway.TrustedKeys) == 0:
			log.Warn("[runner] trusted_keys is set and [gateway] trusted_keys is not: the gateway serves route entries of narun-routes whoever wrote them (an app too); set both")
		case len(cfg.Gateway.TrustedKeys) > 0 && len(cfg.Runner.TrustedKeys) == 0:
			log.Warn("[gateway] trusted_keys is set and [runner] trusted_keys is not: the runner runs specs of narun-apps whoever wrote them (an app too); set both")
		}
		// The NATS server's check writes nothing and binds nothing (it
		// reads the store, the certificates and credentials), so a start
		// runs it too before it makes the data dir: it names the [nats]
		// table's problems with the rest, not once the rest passed.
		ec := cli.EmbedConfig(cfg)
		natsFlags := cli.GivenFlags(c, map[string]string{"nats.listen": "nats-listen"})
		if err := embednats.Check(ec); err != nil {
			problems = append(problems, cli.PlaceNATSError(cfg, err, natsFlags))
		}
		// Before the node key, which is read from the data dir.
		// A start that failed already judges the data dir as --check does,
		// and makes nothing.
		checkOnly := c.Bool(cli.FlagCheck) || errors.Join(problems...) != nil
		dataDirErr := cli.DataDir(checkOnly, cfg)
		if dataDirErr == nil && !checkOnly {
			// The new binary of an upgrade started before the old one
			// stopped finds every port taken: the data dir in use names
			// the cause. A narun runner on it would refuse our runner
			// only once the NATS server had started and the node key was
			// made there.
			if dataDirErr = embednats.CheckStoreFree(ec.DataDir); dataDirErr == nil {
				dataDirErr = runner.CheckDataDirFree(cfg.DataDir)
			}
		}
		problems = append(problems, dataDirErr)
		var nk *nodeKey
		if dataDirErr == nil {
			cli.WarnUnreachable(log, cfg.DataDir)
			if cli.UnderTmp(cfg.DataDir) {
				log.Warn("the data dir is under /tmp: an app whose sandbox has the tmp preset will not start, the preset hides its instance dir behind a private /tmp; choose a data_dir outside /tmp", "data_dir", cfg.DataDir)
			}
			if c.Bool("signing") && len(cfg.Runner.TrustedKeys) == 0 && len(cfg.Gateway.TrustedKeys) == 0 {
				var err error
				if nk, err = readNodeKey(cfg.DataDir); err != nil {
					problems = append(problems, err)
				} else {
					cfg.Runner.TrustedKeys = []string{nk.key.Public()}
				}
			}
		}
		ec.Logger = log.With("part", "nats")
		ec.Stop = ctx.Done()
		if (len(ec.Users) > 0 || len(ec.NKeys) > 0) && cfg.Runner.AppNATSURL == "" && cfg.Runner.AppNATSCreds == "" && cfg.Runner.AppNATSNkey == "" {
			// Apps get the embedded server's address, never the runner's
			// login: the server refuses them, and they crash-loop.
			log.Warn("[nats] wants a login and apps have none: an app that uses NATS is refused (Authorization Violation); give them one with [runner] app_nats_url (user:password@ in the URL), app_nats_creds or app_nats_nkey")
		}
		if ec.Listen == "" && cfg.Runner.AppNATSURL == "" {
			// The runner would give apps its own default URL, where
			// another server, or none, listens.
			log.Warn("[nats] listen is empty: the embedded server takes in-process clients only, and an app that uses NATS cannot reach it (nor serve a route of the gateway); give it an address (127.0.0.1:4222 keeps it on this device), or apps another server with [runner] app_nats_url",
				"apps_get", cfg.Runner.NATSURL)
		}
		// The runner's own CA goes to apps only when they get its own
		// servers, not those of app_nats_url.
		if ec.TLS.Cert != "" && cfg.Runner.AppNATSCA == "" && (cfg.Runner.NATSCA == "" || cfg.Runner.AppNATSURL != "") {
			log.Warn("[nats.tls] requires TLS and apps have no CA to check the server's certificate with: an app that uses NATS fails its TLS handshake; give them one with [runner] app_nats_ca (the runner's nats_ca goes to apps without app_nats_url only)")
		}
		if ec.TLS.Verify && cfg.Runner.AppNATSCert == "" {
			log.Warn("[nats.tls] verifies clients and apps have no certificate: an app that uses NATS is refused; give them one with [runner] app_nats_cert and app_nats_key")
		}
		var nodeKeys []string
		if nk != nil {
			nodeKeys = cfg.Runner.TrustedKeys
		}
		// A start judges the gateway's routes and certificate too before it
		// starts anything, so that it names their problems with the rest;
		// what the check warns of, gateway.New logs again.
		gatewayLog := log.With("part", "gateway")
		if !c.Bool(cli.FlagCheck) {
			gatewayLog = nil
		}
		problems = append(problems, gateway.Check(gateway.Options{Config: cfg.Gateway, NodeKeys: nodeKeys, Logger: gatewayLog, ConfigPath: cfg.Path, ConfigContent: cfg.Content, TLSListenChosen: c.IsSet("tls-listen"), WholeFile: true}))
		if c.Bool(cli.FlagCheck) {
			runner.WarnKeyFile(log, cfg.Runner.MasterKeyFile)
			if err := config.JoinByLine(cfg.Path, problems...); err != nil {
				return err
			}
			return cli.Checked(stdio, cfg)
		}
		if err := config.JoinByLine(cfg.Path, problems...); err != nil {
			return err
		}
		// Before the NATS server starts: a new member of a cluster that
		// then failed on a port another process holds had joined the
		// cluster first, its peers logging its routes come and go.
		if err := cli.ProbeListen(c, cfg, listens...); err != nil {
			return err
		}
		srv, err := embednats.Start(ec)
		if errors.Is(err, embednats.ErrStopped) {
			log.Info("stopped before serving: JetStream reads its store again at the next start")
			return nil
		}
		if err != nil {
			return cli.PlaceNATSError(cfg, err, natsFlags)
		}
		defer srv.Shutdown()
		if ec.Cluster.Listen != "" {
			// Members installed from one copied narun.toml share its
			// [nats] server_name, and JetStream elects no leader; such a
			// member may join at any time, and a node with trusted_keys
			// never waits for JetStream, so the routes are watched for as
			// long as narun up runs, not only while it waits.
			watchCtx, stopWatch := context.WithCancel(ctx)
			var watching sync.WaitGroup
			watching.Go(func() { cli.WatchNameClashes(watchCtx, srv.NameClashes, log) })
			defer watching.Wait()
			defer stopWatch()
		}

		gwConn, err := srv.Connect(append(cli.NATSLogging(log.With("part", "gateway")), nats.Name("narun-gateway"))...)
		if err != nil {
			return err
		}
		defer gwConn.Close()
		runnerConn, err := srv.Connect(append(cli.NATSLogging(log.With("part", "runner")), nats.Name("narun-runner"))...)
		if err != nil {
			return err
		}
		defer runnerConn.Close()
		var nodeKeyFile string
		if nk != nil {
			if err := nk.save(ctx, runnerConn, log); err != nil {
				if ctx.Err() != nil {
					// Stopped while waiting for JetStream.
					return nil
				}
				return err
			}
			// Absolute: narun ctl reads it from the heartbeat in another
			// working directory.
			if nodeKeyFile, err = filepath.Abs(nk.path); err != nil {
				return err
			}
			log.Info("runs only specs and routes signed by the node key: narun ctl on this device signs with it; copy it to sign from elsewhere",
				"key", nk.key.Public(), "file", nk.path)
		}

		// A device has a data directory to keep the routes cache in, and
		// its runner starts apps from cached specs while JetStream is
		// away: without the cache their routes would answer 404.
		routesCache := cfg.Gateway.RoutesCache
		if routesCache == "" {
			routesCache = filepath.Join(cfg.DataDir, "routes.json")
		}
		// The runner's admin listener is bound before the gateway runs: the
		// gateway's listeners are the last to be ready, and once they are,
		// every address the banner names is narun's.
		// The banner names the addresses bound, which differ from those
		// configured for port 0. Both callbacks run in the gateway's Run.
		bound := map[string]string{}
		runnerAdmin := cfg.Runner.AdminListen
		natsURL := srv.DialURL()
		if natsURL == "" {
			natsURL = "off (in-process only)"
		}
		leafAddr, clusterAddr := srv.LeafAddr(), srv.ClusterAddr()
		serving := func() {
			if strings.EqualFold(cfg.LogFormat, "json") {
				// Every line JSON: a service manager mixes stdout into the
				// same journal as the log.
				log.Info("narun up", "data_dir", cfg.DataDir, "nats", natsURL, "gateway", orOff(bound["http"]),
					"gateway_https", orOff(bound["https"]), "gateway_admin", orOff(bound["admin"]), "runner_admin", orOff(runnerAdmin), "nats_leaf", orOff(leafAddr), "nats_cluster", orOff(clusterAddr))
			} else {
				fmt.Fprintf(stdio.Stdout, "narun up: data in %s\n", cfg.DataDir)
				fmt.Fprintf(stdio.Stdout, "  nats     %s\n", natsURL)
				if leafAddr != "" {
					fmt.Fprintf(stdio.Stdout, "  leaf     %s (leaf nodes join here)\n", leafAddr)
				}
				if clusterAddr != "" {
					fmt.Fprintf(stdio.Stdout, "  cluster  %s (routes of cluster %s join here)\n", clusterAddr, ec.Cluster.Name)
				}
				https := ""
				if bound["https"] != "" {
					https = ", https " + bound["https"]
				}
				fmt.Fprintf(stdio.Stdout, "  gateway  http %s%s, admin %s (/metrics /healthz /readyz)\n", orOff(bound["http"]), https, orOff(bound["admin"]))
				fmt.Fprintf(stdio.Stdout, "  runner   admin %s (web UI, /metrics, /healthz)\n", orOff(runnerAdmin))
			}
			cli.NotifyReady(log)
		}
		gw, err := gateway.New(gateway.Options{Config: cfg.Gateway, NodeKeys: nodeKeys, Conn: gwConn, Logger: log.With("part", "gateway"), ConfigPath: cfg.Path, ConfigContent: cfg.Content, TLSListenChosen: c.IsSet("tls-listen"),
			OnListen: func(name, addr string) { bound[name] = addr }, OnServing: serving, Hurry: cli.Hurried(c), WholeFile: true, RoutesCache: routesCache})
		if err != nil {
			return err
		}
		rn, err := runner.New(runner.Options{Config: cfg.Runner, DataDir: cfg.DataDir, Conn: runnerConn, AppNATSURL: srv.ClientURL(), Logger: log.With("part", "runner"),
			SigningKeyFile: nodeKeyFile, Hidden: cfg.PrivateFiles()})
		if err != nil {
			return err
		}

		cli.OnSIGHUP(ctx, gw.ReloadOnSIGHUP)

		partsCtx, stopParts := context.WithCancel(context.Background())
		defer stopParts()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		wg.Go(func() { cli.KeepStoreWritable(partsCtx, srv, cfg.DataDir, log.With("part", "nats")) })
		// The runner's admin listener closes once the runner has stopped
		// its apps, not as their stop begins: /healthz and /metrics answer
		// through a stop that may last an app's stop_timeout.
		adminCtx, stopAdmin := context.WithCancel(context.Background())
		defer stopAdmin()
		if cfg.Runner.AdminListen != "" {
			var adminDone <-chan error
			runnerAdmin, adminDone, err = cli.Serve(adminCtx, cfg.Runner.AdminListen, rn.AdminHandler(), log.With("part", "runner"))
			if err != nil {
				return cli.PlaceListenError(c, cfg, fmt.Errorf("runner admin: %w", config.PortNeedsRoot("runner.admin_listen", err)), listens...)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := <-adminDone; err != nil {
					errs <- fmt.Errorf("runner admin: %w", err)
				}
			}()
		}
		// The gateway's listeners name only their address when it is in
		// use; the flag or key that set it is said here.
		runGateway := func(ctx context.Context) error { return cli.PlaceListenError(c, cfg, gw.Run(ctx), listens...) }
		runRunner := func(ctx context.Context) error {
			defer stopAdmin()
			return rn.Run(ctx)
		}
		for _, part := range []func(context.Context) error{runGateway, runRunner} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := part(partsCtx); err != nil {
					errs <- err
				}
			}()
		}
		var runErr error
		select {
		case <-ctx.Done():
			log.Info("stopping: apps get their stop_timeout, requests the gateway's shutdown_timeout; a second SIGINT or SIGTERM stops at once")
		case runErr = <-errs:
			log.Error("a part stopped", "err", runErr)
		}
		// The stop takes as long as the apps' stop_timeout and the gateway's
		// shutdown_timeout allow, as the README promises a service manager;
		// an impatient operator (or a service manager's final SIGTERM after
		// its own timeout) cuts it short, and the runner kills every
		// process of the apps. The embedded NATS server is shut down
		// cleanly either way, by the deferred Shutdown.
		stopParts()
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-cli.Hurried(c):
			log.Warn("second signal: not waiting for apps and in-flight requests")
			rn.Kill()
			return runErr
		}
		for {
			select {
			case err := <-errs:
				runErr = errors.Join(runErr, err)
			default:
				return runErr
			}
		}
	})
}

// shareCores is how many cores narun up schedules Go code on when GOMAXPROCS
// does not say: half of what Go would take, at least one, because the
// apps it runs share the device. Fewer Ps also make the gateway cheaper:
// each request passes through a chain of goroutines (HTTP handler, nats.go,
// the server's read and write loops), and with a P per core every hand-off
// wakes another thread that competes with the apps for the same cores. On
// the 2-core reference machine one P instead of two cut narun up's CPU per
// proxied request by 15-30 % and raised requests/s (docs/PERFORMANCE.md).
func shareCores(procs int) int {
	return max(1, (procs+1)/2)
}

// orOff names an address left empty, which turns its listener off, as
// narun.toml documents.
func orOff(addr string) string {
	if addr == "" {
		return "off"
	}
	return addr
}
