// Package ctl is the narun ctl applet: the operator's command line for
// deploying apps and inspecting and steering what the runners do.
//
// Exit codes: 0 success, 1 error, 2 usage, 3 not found, 4 rollout failed
// or timed out (deploy --wait), 5 refused because in use (image, file or
// secret referenced by a deployed app; --force overrides).
package ctl

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/store"
)

// Exit codes beyond cli's 0, 1 and 2.
const (
	ExitNotFound = 3
	ExitRollout  = 4
	ExitInUse    = 5
)

func notFound(format string, args ...any) error {
	return &cli.ExitError{Code: ExitNotFound, Err: fmt.Errorf(format, args...)}
}

func inUse(format string, args ...any) error {
	return &cli.ExitError{Code: ExitInUse, Err: fmt.Errorf(format, args...)}
}

func usagef(format string, args ...any) error { return cli.Usage(fmt.Errorf(format, args...)) }

const (
	flagTimeout = "timeout"
	flagKeyFile = "key-file"
	flagSignKey = "signing-key"
	flagJSON    = "json"
	flagForce   = "force"
)

// Main runs the applet.
func Main(ctx context.Context, stdio cli.IO, args []string) error {
	if len(args) == 0 {
		args = []string{"ctl"}
	}
	app := newApp(stdio, args[0])
	var unknown string
	app.CommandNotFound = func(_ *ucli.Context, name string) { unknown = name }
	err := app.RunContext(ctx, reorder(app, args))
	if err == nil && unknown != "" {
		err = usagef("unknown command %q (--help lists them)", unknown)
	}
	// Tables and --json output go to stdout as they are; only the error
	// follows the log format, as the other applets' do.
	format, _ := app.Metadata[logFormatKey].(string)
	return cli.LogFatal(stdio, args, format, err)
}

// logFormatKey is the App.Metadata entry where setup leaves the log format
// it read, for Main to write the error in.
const logFormatKey = "log-format"

// env is what every command needs: configuration, streams and, once
// connected, JetStream.
type env struct {
	stdio cli.IO
	cfg   config.File
	log   *slog.Logger
	// flags is the command line the configuration was read with, which
	// names the flag, or else the file's line, behind an error about a
	// client setting, whose files are read only to connect.
	flags *ucli.Context
	// timeout bounds each NATS operation (not a whole --wait or -f).
	timeout time.Duration
	nc      *nats.Conn
	js      jetstream.JetStream
	// serverAhead is how far the NATS server's clock is ahead of this
	// machine's (negative: behind), as nodes or logs last read it.
	serverAhead time.Duration
	// now is this machine's clock, time.Now when nil; a test sets one
	// that is wrong, as an operator's laptop's may be.
	now func() time.Time
	// readOnly is set by a dry run, and for reads that only warn
	// (warnNodesLackKey, secret set's nameAppsToRestart): kv and objects then open buckets without
	// creating or changing any (openKV).
	readOnly bool
	// signKeyFrom names the flag that gave cfg.Ctl.SigningKeyFile, for
	// an error about the file; "" when the configuration did.
	signKeyFrom string
	// unsaidNodeKey names the node whose key nodeSigner chose, until the
	// first seal says so.
	unsaidNodeKey string
	// unreadableNodes holds the keys of narun-nodes whose heartbeat was
	// warned of as unreadable: any NATS client may write one, and --wait
	// reads the bucket twice a second.
	unreadableNodes map[string]bool
}

// App is ctl's command tree as Main runs it, for a test that checks the
// command lines the docs show without running them.
func App(name string) *ucli.App { return newApp(cli.IO{}, name) }

func newApp(stdio cli.IO, name string) *ucli.App {
	flags := append(cli.ConfigFlags(), cli.ClientFlags()...)
	flags = append(flags,
		&ucli.StringFlag{Name: cli.FlagDataDir, EnvVars: []string{"NARUN_DATA_DIR"}, Usage: "data dir of narun up on this device, whose " + signing.NodeKeyFile + " signs when no signing key is named (default data_dir)"},
		&ucli.DurationFlag{Name: flagTimeout, Usage: "timeout of each NATS operation", DefaultText: "[ctl] timeout, else 15s"},
		&ucli.StringFlag{Name: flagKeyFile, EnvVars: []string{"NARUN_KEY_FILE"}, Usage: "secrets key file (default [ctl] master_key_file)"},
		&ucli.StringFlag{Name: flagSignKey, EnvVars: []string{"NARUN_SIGNING_KEY"}, Usage: "key file that signs specs and routes (default [ctl] signing_key_file, else the data dir's " + signing.NodeKeyFile + ")"},
	)
	app := cli.NewApp(stdio, name, "manage narun apps, nodes, images, secrets, files and routes", flags)
	app.Description = "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 rollout failed or timed out, 5 in use (see --force)."
	app.Commands = []*ucli.Command{
		deployCommand(stdio),
		appCommand(stdio),
		logsCommand(stdio),
		nodeCommand(stdio),
		imageCommand(stdio),
		secretCommand(stdio),
		filesCommand(stdio),
		routeCommand(stdio),
		signingCommand(stdio),
		completionCommand(stdio),
		versionCommand(stdio),
	}
	usage, wants := app.OnUsageError, flagWants(app.Flags, app.Commands)
	app.OnUsageError = func(c *ucli.Context, err error, sub bool) error {
		return usage(c, flagValueError(err, wants), sub)
	}
	markUsage(app.Commands, app.OnUsageError)
	app.Action = needCommand("")
	markGroups(app.Commands, "")
	return app
}

// markGroups gives every command that only groups others needCommand as
// its action: urfave/cli would show their help and succeed.
//
// A command that takes arguments instead gets no help subcommand (--help
// stays): urfave/cli would give it one, named help and h, so that `app
// delete help`, a valid app name, showed the help and exited 0 with the
// app still deployed, and completion offered "help h" where a file or app
// name goes.
func markGroups(cmds []*ucli.Command, parent string) {
	for _, c := range cmds {
		if len(c.Subcommands) == 0 {
			c.HideHelpCommand = true
			continue
		}
		path := strings.TrimSpace(parent + " " + c.Name)
		if c.Action == nil {
			c.Action = needCommand(path)
		}
		markGroups(c.Subcommands, path)
	}
}

// needCommand is the action of ctl and of its command groups (path, such
// as "app"), which do nothing by themselves: run with no subcommand, or
// with a word that names none, they fail with a usage error, so that a
// script whose subcommand is empty or mistyped stops there instead of
// going on after a help text and exit 0. --help still shows the help.
func needCommand(path string) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		names := commandNames(c.Command.Subcommands)
		where := ""
		if path != "" {
			where = " after " + path
		}
		if c.NArg() == 0 {
			return usagef("missing command%s: want one of %s (--help says more)", where, strings.Join(names, ", "))
		}
		word := c.Args().First()
		guess := didYouMean(word, names, "--help says more")
		if path != "" && suggestion(word, names) == "" {
			// A command of ctl itself typed after a group: app logs, or
			// app logz.
			top := commandNames(c.App.Commands)
			meant := word
			if !slices.Contains(top, word) {
				meant = suggestion(word, top)
			}
			if meant != "" {
				guess = fmt.Sprintf(" (did you mean %q? if not: --help says more)", "narun ctl "+meant)
			}
		}
		return usagef("unknown command %q%s: want one of %s%s", word, where, strings.Join(names, ", "), guess)
	}
}

// commandNames lists the names of cmds that --help shows.
func commandNames(cmds []*ucli.Command) []string {
	var names []string
	for _, c := range cmds {
		if !c.Hidden && c.Name != "help" {
			names = append(names, c.Name)
		}
	}
	return names
}

// invalidFlagValue is how the flag package, under urfave/cli, reports a
// value its flag cannot parse: as "-since" and, for a duration, only
// "parse error".
var invalidFlagValue = regexp.MustCompile(`^invalid value ("(?:[^"\\]|\\.)*") for flag -(\S+): (.*)$`)

// flagValueError names a flag as it is typed (--since) and says what it
// wants (wants, by flag name) instead of the flag package's "parse
// error"; for a duration, a bare number, a timeout in seconds, is the
// usual slip.
func flagValueError(err error, wants map[string]string) error {
	m := invalidFlagValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	value, name, why := m[1], m[2], m[3]
	dashes := "--"
	if len(name) == 1 {
		dashes = "-"
	}
	if want, ok := wants[name]; ok {
		why = want
	}
	if why == wantDuration {
		if v, uerr := strconv.Unquote(value); uerr == nil {
			if _, nerr := strconv.ParseFloat(v, 64); nerr == nil {
				why += " (a number needs a unit: s, m, h)"
			}
		}
	}
	return fmt.Errorf("%s%s %s: %s", dashes, name, value, why)
}

const wantDuration = "want a duration such as 10m"

// numberWants says what each number flag of ctl wants, by its name.
var numberWants = map[string]string{
	"tail":       "want a number of lines, 0 or more",
	flagTo:       "want a revision number, 1 or more (narun ctl app history lists them)",
	flagRevision: "want a revision number, 1 or more (narun ctl app history lists them)",
}

// flagWants says what every duration and number flag of ctl and its
// commands wants, by each of its names and aliases.
func flagWants(flags []ucli.Flag, cmds []*ucli.Command) map[string]string {
	names := map[string]string{}
	var walk func([]ucli.Flag, []*ucli.Command)
	walk = func(flags []ucli.Flag, cmds []*ucli.Command) {
		for _, f := range flags {
			want := ""
			switch f.(type) {
			case *ucli.DurationFlag:
				want = wantDuration
			case *ucli.IntFlag, *ucli.Int64Flag, *ucli.UintFlag, *ucli.Uint64Flag:
				want = cmp.Or(numberWants[f.Names()[0]], "want a whole number")
			}
			if want != "" {
				for _, n := range f.Names() {
					names[n] = want
				}
			}
		}
		for _, c := range cmds {
			walk(c.Flags, c.Subcommands)
		}
	}
	walk(flags, cmds)
	return names
}

// markUsage makes a flag error in any subcommand exit 2, as in the app.
func markUsage(cmds []*ucli.Command, h ucli.OnUsageErrorFunc) {
	for _, c := range cmds {
		c.OnUsageError = h
		markUsage(c.Subcommands, h)
	}
}

// setup reads the configuration; commands that talk to NATS then connect.
func setup(c *ucli.Context, stdio cli.IO) (*env, error) {
	// Flag lookups on c walk up to the global flags.
	cfg, log, err := cli.Load(c, stdio)
	format := cfg.LogFormat
	if c.IsSet(cli.FlagLogFormat) {
		format = c.String(cli.FlagLogFormat)
	}
	c.App.Metadata[logFormatKey] = format
	if err != nil {
		return nil, err
	}
	e := &env{stdio: stdio, cfg: cfg, log: log, timeout: cfg.Ctl.Timeout.D(), flags: c}
	// deploy has a --timeout of its own (for --wait): read the global one
	// from the app-level context (the last is urfave's empty parent).
	lineage := c.Lineage()
	if root := lineage[len(lineage)-2]; root.IsSet(flagTimeout) {
		// Unlike the file's, a flag's 0 is no default: whoever typed it
		// meant something else than 15s.
		if e.timeout = root.Duration(flagTimeout); e.timeout <= 0 {
			return nil, usagef("--%s %s: want a time to wait for each NATS operation, more than 0", flagTimeout, e.timeout)
		}
	}
	if e.timeout == 0 {
		e.timeout = 15 * time.Second
	}
	if c.IsSet(flagKeyFile) {
		e.cfg.Ctl.MasterKeyFile = c.String(flagKeyFile)
	}
	if c.IsSet(flagSignKey) {
		e.cfg.Ctl.SigningKeyFile = c.String(flagSignKey)
		e.signKeyFrom = "--" + flagSignKey
	}
	return e, nil
}

func (e *env) connect() error {
	opts, err := cli.NATSOptions("narun-ctl", e.cfg.Ctl.Client)
	if err != nil {
		if e.flags != nil {
			err = cli.PlaceClientError(e.flags, e.cfg, "ctl", err)
		}
		return err
	}
	// A command line tool reports an unreachable server instead of
	// waiting for it like the long-running applets do. A NATS server
	// greets at once, so the handshake gets less time than an operation.
	opts = append(opts, nats.RetryOnFailedConnect(false), nats.MaxReconnects(3), nats.Timeout(min(e.timeout, 5*time.Second)),
		// What the server refuses without an answer (a publish the login
		// may not make) ends the operation in a timeout that does not say
		// why: the log line before it does, in the log's format, where
		// nats.go's own handler printed a bare line on stderr. A refused
		// login is logged as any other error: ctl gives up after a few
		// reconnects, so there is no stream of them to log once.
		nats.ErrorHandler(cli.NATSErrors(e.log, nil)))
	nc, err := cli.Connect(e.cfg.Ctl.NATSURL, opts...)
	if err != nil {
		return connectError(cli.RedactURLs(e.cfg.Ctl.NATSURL)+urlSource(e.cfg.Ctl.NATSURLFrom), e.login(), e.tlsFiles(), cli.RedactError(err))
	}
	raw, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	js := patientJS{raw}
	if err := e.waitJetStream(nc, js); err != nil {
		nc.Close()
		return err
	}
	e.nc, e.js = nc, js
	return nil
}

// urlSource says, after the URL ctl tried, which setting gave it: the
// operator of a node that runs with a narun.toml may not know that ctl
// reads its [nats] listen, nor that NARUN_NATS_URL is set in this shell.
func urlSource(from string) string {
	if from == "" {
		return " (the default; set --nats-url or [ctl] nats_url)"
	}
	return " (from " + from + ")"
}

// login says, for connectError, which login ctl presented, where it was
// set and what to check of it; "" for none.
func (e *env) login() string {
	switch {
	case e.cfg.Ctl.NATSCreds != "":
		return "of the credentials file " + e.cfg.Ctl.NATSCreds + ": check that the server lists its user"
	case e.cfg.Ctl.NATSNkey != "":
		// An nkey has no password to check: the server lists its
		// public key or does not, and the seed file does not show it.
		if b, err := os.ReadFile(e.cfg.Ctl.NATSNkey); err == nil {
			if kp, err := nkeys.ParseDecoratedNKey(b); err == nil {
				if pub, err := kp.PublicKey(); err == nil {
					return "of the nkey seed " + e.cfg.Ctl.NATSNkey + ": its public key " + pub + " is not in the server's [nats] nkeys: add it there, or name a seed whose key is"
				}
			}
		}
		return "of the nkey seed " + e.cfg.Ctl.NATSNkey + ": check that the server's [nats] nkeys lists its public key"
	}
	var users []string
	for _, raw := range strings.Split(e.cfg.Ctl.NATSURL, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		if u, err := url.Parse(raw); err == nil && u.User != nil && !slices.Contains(users, u.User.Username()) {
			users = append(users, u.User.Username())
		}
	}
	if len(users) == 0 {
		return ""
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = strconv.Quote(u)
	}
	from := cmp.Or(e.cfg.Ctl.NATSURLFrom, "the URL")
	if where := e.cfg.Where("ctl.nats_url"); where != "" && strings.HasPrefix(from, "[ctl]") {
		from = "[ctl] nats_url at " + where
	}
	return "of user " + strings.Join(names, ", ") + " in " + from + ": check its password against the server's [[nats.users]] (a password changed there needs the new one here), and that the server lists it"
}

// tlsGiven names, for connectError, the TLS files ctl was given and the
// setting each came from, so that a refusal names the file that is wrong
// instead of asking for a setting already made.
type tlsGiven struct {
	ca, cert string
	// certDates is certDates' answer: the certificate's dates are wrong.
	certDates string
}

// tlsFiles returns the TLS files of the connection, each with its setting.
func (e *env) tlsFiles() tlsGiven {
	from := func(file, flag, key string) string {
		if file == "" {
			return ""
		}
		if e.flags != nil && e.flags.IsSet(flag) {
			return file + " (--" + flag + ")"
		}
		return file + " (" + key + ")"
	}
	return tlsGiven{
		ca:        from(e.cfg.Ctl.NATSCA, cli.FlagNATSCA, "[ctl] nats_ca"),
		cert:      from(e.cfg.Ctl.NATSCert, cli.FlagNATSCert, "[ctl] nats_cert"),
		certDates: e.certDates(),
	}
}

// certDates says, for connectError, how ctl's client certificate is
// outside its dates on this machine's clock and what to do, naming the
// setting that gave it; "" when it is within them or there is none.
func (e *env) certDates() string {
	file := e.cfg.Ctl.NATSCert
	if file == "" {
		return ""
	}
	how := cli.CertOutOfDate(file, time.Now())
	if how == "" {
		return ""
	}
	from := "[ctl] nats_cert"
	if e.flags != nil && e.flags.IsSet(cli.FlagNATSCert) {
		from = "--" + cli.FlagNATSCert
	}
	fix := "renew it from the servers' CA and name the new pair with --nats-cert and --nats-key ([ctl] nats_cert, nats_key)"
	if strings.HasPrefix(how, "is valid only") {
		fix = "check the clocks of this machine and of the server, or wait until then"
	}
	return fmt.Sprintf("the certificate %s (%s) %s by this machine's clock: %s", file, from, how, fix)
}

// connectError says why ctl could not connect to the servers at at. A
// connection that opens but gets no NATS greeting is a wrong port, or a
// server that is hung or stopped, whose kernel still accepts; one that
// does not even open in time is a device that is down or cut off, which a
// hint about ports would only send the operator looking in the wrong place.
// A dial's timeout is either error: the socket's deadline or the dialer's
// context, whichever fires first.
func connectError(at, login string, given tlsGiven, err error) error {
	var op *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var otherHost x509.HostnameError
	switch {
	case errors.As(err, &unknownCA) && given.ca != "":
		return fmt.Errorf("connect to NATS at %s: %w (the server's certificate is not signed by the CA in %s: name the CA that signed it, the one the server's [nats.tls] cert was issued from)", at, err, given.ca)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("connect to NATS at %s: %w (the server's certificate is signed by a CA this machine does not trust: name that CA with --nats-ca or [ctl] nats_ca)", at, err)
	case errors.As(err, &otherHost):
		return fmt.Errorf("connect to NATS at %s: %w (the server's certificate is not for the host in the URL: connect by a name or address it lists)", at, err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("connect to NATS at %s: %w (the server does not offer TLS: use a nats:// URL and leave out --nats-ca, --nats-cert and --nats-key ([ctl] nats_ca, nats_cert, nats_key))", at, err)
	case cli.CertRefused(err) && given.certDates != "":
		return fmt.Errorf("connect to NATS at %s: %w (the server refused this client after TLS began: %s)", at, err, given.certDates)
	case cli.CertRefused(err) && given.cert != "":
		return fmt.Errorf("connect to NATS at %s: %w (the server refused the certificate %s: it takes only certificates of the CA it verifies clients with ([nats.tls] ca): name a pair that CA issued with --nats-cert and --nats-key ([ctl] nats_cert, nats_key))", at, err, given.cert)
	case cli.CertRefused(err):
		return fmt.Errorf("connect to NATS at %s: %w (the server refused this client after TLS began: one that verifies clients wants a certificate its CA signed, --nats-cert and --nats-key ([ctl] nats_cert, nats_key))", at, err)
	case errors.As(err, &op) && op.Op == "dial" && op.Timeout():
		return fmt.Errorf("connect to NATS at %s: %w (nothing answered: the device is down or cut off; in a cluster, list every member in --nats-url or [ctl] nats_url)", at, err)
	case errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("connect to NATS at %s: %w (something listens there but did not answer as a NATS server: is it the NATS client port, 4222 by default? or the server is hung or stopped)", at, err)
	case errors.Is(err, nats.ErrAuthorization) && login != "":
		return fmt.Errorf("connect to NATS at %s: %w (the server refused the login %s)", at, err, login)
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("connect to NATS at %s: %w (the server wants a login, or refused this one: put user:password@ in --nats-url, or name a credentials file with --nats-creds or an nkey seed with --nats-nkey ([ctl] nats_url, nats_creds, nats_nkey))", at, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w", at, err)
}

// waitJetStream waits, up to the operation timeout, for JetStream to answer:
// right after a server or cluster starts, NATS accepts clients before its
// JetStream API has a responder, and a command sent then would fail with
// "no responders" for a moment's wait; while a cluster elects a leader, no
// server answers at all. js is patient: it asks again until answered.
func (e *env) waitJetStream(nc *nats.Conn, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	// Other errors (JetStream disabled, no permission) are for the command
	// itself to report with its context.
	if _, err := js.AccountInfo(ctx); store.Unanswered(err) {
		return majorityHint(nc, fmt.Errorf("jetstream at %s%s not answering within %s: %w", cli.RedactURLs(e.cfg.Ctl.NATSURL), urlSource(e.cfg.Ctl.NATSURLFrom), e.timeout, err))
	}
	return nil
}

// majorityHint adds the usual cause of an unanswered JetStream request in
// a cluster, one ctl cannot see: the server it reached is on the minority
// side of a partition, or the only member up, and keeps serving apps but
// not JetStream. A member that has just lost the others may still answer
// for a moment, so a later request can be the first to go unanswered.
func majorityHint(nc *nats.Conn, err error) error {
	cluster := nc.ConnectedClusterName()
	if cluster == "" || !store.Unanswered(err) {
		return err
	}
	return fmt.Errorf("%w (server %s of cluster %s answers for JetStream only while it reaches a majority of the members: are the others down or cut off from it? ctl works through any member of the majority)", err, nc.ConnectedServerName(), cluster)
}

func (e *env) close() {
	if e.nc != nil {
		e.nc.Close()
	}
}

// action wraps a command body: arguments, configuration, connection and
// clean-up.
func action(stdio cli.IO, needNATS bool, body func(ctx context.Context, c *ucli.Context, e *env) error) ucli.ActionFunc {
	run := withEnv(stdio, needNATS, body)
	return func(c *ucli.Context) error {
		if err := requiredArgs(c); err != nil {
			return err
		}
		return run(c)
	}
}

// withEnv is action for a caller that has checked the arguments itself.
func withEnv(stdio cli.IO, needNATS bool, body func(ctx context.Context, c *ucli.Context, e *env) error) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		e, err := setup(c, stdio)
		if err != nil {
			return err
		}
		if needNATS {
			if err := e.connect(); err != nil {
				return err
			}
			defer e.close()
		}
		return body(c.Context, c, e)
	}
}

// op is a context for one NATS operation.
func (e *env) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

// within runs f, one NATS operation, with a deadline of its own: each of
// a command's writes gets the whole --timeout, however long the ones
// before it took. One deadline for several ran out partway on a slow link
// and left some written and the rest not.
func (e *env) within(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := e.op(ctx)
	defer cancel()
	return f(ctx)
}

// write is within for a write to KV bucket, whose deadline says when the
// disk is full: once the bucket's store failed a write for want of space,
// nats-server answers none until it restarts.
func (e *env) write(ctx context.Context, bucket string, f func(ctx context.Context) error) error {
	return e.sayDiskFull(ctx, bucket, e.within(ctx, f))
}

// sayDiskFull adds to err, that of a write to KV bucket, that the disk is
// full, when err is a deadline and the disk is why. No key holds "~"
// (nats.go's key syntax), so the purge of what is stored on it, the
// probe diskFull makes, removes nothing.
func (e *env) sayDiskFull(ctx context.Context, bucket string, err error) error {
	return e.sayDiskFullAt(ctx, "KV_"+bucket, bucket, "$KV."+bucket+".~", 2, err)
}

// sayDiskFullAt is sayDiskFull for a write to stream, that of bucket,
// probed with a purge of subject before seq (diskFull).
func (e *env) sayDiskFullAt(ctx context.Context, stream, bucket, subject string, seq uint64, err error) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if full := e.diskFull(ctx, stream, bucket, subject, seq); full != nil {
		return fmt.Errorf("%w: %w", err, full)
	}
	return err
}

func (e *env) kv(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	ctx, cancel := e.op(ctx)
	defer cancel()
	if e.readOnly {
		return e.openKV(ctx, bucket)
	}
	kv, err := store.KV(ctx, e.js, bucket, e.log)
	return kv, majorityHint(e.nc, err)
}

func (e *env) objects(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	ctx, cancel := e.op(ctx)
	defer cancel()
	if e.readOnly {
		return e.openObjects(ctx, bucket)
	}
	obs, err := store.Objects(ctx, e.js, bucket, e.log)
	return obs, majorityHint(e.nc, err)
}

// keys lists a bucket's keys, sorted.
func (e *env) keys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	ctx, cancel := e.op(ctx)
	defer cancel()
	l, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, majorityHint(e.nc, fmt.Errorf("list %s: %w", kv.Bucket(), err))
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// entries calls each with every key of bucket, in order, and its value;
// keys deleted meanwhile are skipped. what names an entry in errors.
func (e *env) entries(ctx context.Context, bucket, what string, each func(key string, value []byte)) error {
	kv, err := e.kv(ctx, bucket)
	if err != nil {
		return err
	}
	return e.eachEntry(ctx, kv, what, func(entry jetstream.KeyValueEntry) { each(entry.Key(), entry.Value()) })
}

// eachEntry is entries for a caller that needs more of an entry than its
// value, such as when the server stored it.
func (e *env) eachEntry(ctx context.Context, kv jetstream.KeyValue, what string, each func(jetstream.KeyValueEntry)) error {
	keys, err := e.keys(ctx, kv)
	if err != nil {
		return err
	}
	for _, k := range keys {
		octx, cancel := e.op(ctx)
		entry, err := kv.Get(octx, k)
		cancel()
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return majorityHint(e.nc, fmt.Errorf("read %s of %s: %w", what, k, err))
		}
		each(entry)
	}
	return nil
}

func (e *env) out() io.Writer { return e.stdio.Stdout }

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdio.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns for people.
type table struct{ tw *tabwriter.Writer }

func (e *env) table(header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(e.stdio.Stdout, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row writes one line of cells. Most come from NATS, where any client
// can write (a heartbeat, an object's name): a cell never acts on the
// terminal (shown), nor, holding a tab, shifts the columns after it.
func (t *table) row(cols ...string) {
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = strings.ReplaceAll(cli.Shown(c), "\t", `\x09`)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func jsonFlag() ucli.Flag { return &ucli.BoolFlag{Name: flagJSON, Usage: "print JSON for scripts"} }

// requiredArgs refuses a command line that lacks an argument its usage
// line requires ("NAME", "OBJECT..."; "[X]" is optional), or gives one to a
// command that takes none, before anything connects: a missing name is a
// usage error, not a NATS timeout, and `node list web` does not list every
// node as if it had filtered them. The extra arguments are not repeated:
// one may be a secret typed in the wrong place.
func requiredArgs(c *ucli.Context) error {
	if c.Command == nil {
		return nil
	}
	if c.Command.ArgsUsage == "" && c.NArg() > 0 {
		return usagef("%s takes no arguments, got %d", c.Command.HelpName, c.NArg())
	}
	var required []string
	for _, word := range strings.Fields(c.Command.ArgsUsage) {
		if !strings.HasPrefix(word, "[") {
			required = append(required, strings.TrimSuffix(word, "..."))
		}
	}
	if c.NArg() < len(required) {
		return usagef("missing %s (usage: %s %s)", required[c.NArg()], c.Command.HelpName, c.Command.ArgsUsage)
	}
	return nil
}

// oneArg returns the single positional argument named what.
func oneArg(c *ucli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usagef("want exactly one %s, got %d arguments", what, c.NArg())
	}
	return c.Args().First(), nil
}

// isTerminal reports whether w is a terminal, where progress and prompts
// are shown. A character device is not enough: /dev/null is one.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ago is how long before now t was, for the columns of status and lists;
// both on the clock that stamped t.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

// shortDuration prints d in its two largest units, truncated ("45s",
// "1m45s", "2h3m", "3d4h"): exact enough to tell two ages apart, short
// enough for a column.
func shortDuration(d time.Duration) string {
	const day = 24 * time.Hour
	two := func(n time.Duration, big string, rest time.Duration, small string) string {
		if rest == 0 {
			return fmt.Sprintf("%d%s", n, big)
		}
		return fmt.Sprintf("%d%s%d%s", n, big, rest, small)
	}
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return two(d/time.Minute, "m", d%time.Minute/time.Second, "s")
	case d < day:
		return two(d/time.Hour, "h", d%time.Hour/time.Minute, "m")
	default:
		return two(d/day, "d", d%day/time.Hour, "h")
	}
}

func isNotFound(err error) bool {
	return store.IsNotFound(err) || errors.Is(err, jetstream.ErrNoKeysFound) || errors.Is(err, jetstream.ErrNoObjectsFound)
}
