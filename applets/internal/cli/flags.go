package cli

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/sdnotify"
	"github.com/narun/narun/embednats"
)

// Common flag names shared by every applet.
const (
	FlagConfig    = "config"
	FlagCheck     = "check"
	FlagNATSURL   = "nats-url"
	FlagNATSCreds = "nats-creds"
	FlagNATSNkey  = "nats-nkey"
	FlagNATSCA    = "nats-ca"
	FlagNATSCert  = "nats-cert"
	FlagNATSKey   = "nats-key"
	FlagDataDir   = "data-dir"
	FlagLogLevel  = "log-level"
	FlagLogFormat = "log-format"
)

// ConfigFlags are the flags that choose the file and the logging.
func ConfigFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: FlagConfig, Usage: "configuration file (default ./narun.toml, then /etc/narun/narun.toml)"},
		&ucli.StringFlag{Name: FlagLogLevel, Usage: "debug, info, warn or error"},
		&ucli.StringFlag{Name: FlagLogFormat, Usage: "text or json"},
	}
}

// CheckFlag asks a long-running applet to check its configuration and
// flags and exit, as nginx -t and nats-server -t do: before a restart, or
// as a service manager's ExecStartPre.
func CheckFlag() ucli.Flag {
	return &ucli.BoolFlag{Name: FlagCheck, Usage: "check the configuration file and flags and exit: 0 when they are valid, 1 naming the file, line and key of every problem, 2 when a usage error is among them; binds nothing and writes nothing, so a port in use is found only at start"}
}

// elsewhere says how to move the data dir, for errors about it: without
// any of these a user other than root gets ./narun-data, which depends on
// the directory it starts in.
const elsewhere = "choose another with --data-dir, NARUN_DATA_DIR or data_dir in narun.toml"

// DataDir readies the data dir of cfg for a start, or, with checkOnly (a
// --check), says whether a start could without writing anything.
func DataDir(checkOnly bool, cfg config.File) error {
	if err := leftBehind(cfg); err != nil {
		return err
	}
	var err error
	if checkOnly {
		err = checkDataDir(cfg.DataDir)
	} else {
		err = prepareDataDir(cfg.DataDir)
	}
	if err != nil && cfg.DataDirFromFile {
		return fmt.Errorf("%s: key \"data_dir\": %w", cfg.Where("data_dir"), err)
	}
	return err
}

// nodeData are entries of a data dir that only a narun node that ran on
// it made: the runner's cached specs, lock and node id, the node key of
// narun up, and the streams of narun's buckets in JetStream's store (of
// any account). A store alone is not one: another NATS server on the host
// may keep its own in a directory of that name.
var nodeData = []string{"specs", "runner.lock", "node-id", "signing.key", "jetstream/jetstream/*/streams/KV_narun-*"}

func holdsNodeData(dir string) bool {
	for _, pattern := range nodeData {
		if found, _ := filepath.Glob(filepath.Join(dir, pattern)); len(found) > 0 {
			return true
		}
	}
	return false
}

// leftBehind refuses a relative data_dir of cfg's file that now names a
// directory without a node's data while the one earlier releases took it
// for, in the working directory, has it: the start would begin anew on an
// empty store, hiding every app, secret and key the node had, and
// making a second data dir to merge by hand.
func leftBehind(cfg config.File) error {
	if cfg.DataDirWritten == "" {
		return nil
	}
	before, err := filepath.Abs(cfg.DataDirWritten)
	if err != nil || before == cfg.DataDir || holdsNodeData(cfg.DataDir) || !holdsNodeData(before) {
		return nil
	}
	return fmt.Errorf("%s: key \"data_dir\": %q now names %s (relative to the file's directory), which holds no node's data; earlier releases took it from the working directory, %s, which does: a start would begin on an empty store; move %s to %s, or write data_dir = %q (docs/UPGRADING.md)", cfg.Where("data_dir"), cfg.DataDirWritten, cfg.DataDir, before, before, cfg.DataDir, before)
}

// checkDataDir says whether a start could make and write the data dir
// dir, as a --check must, without writing: the nearest part of its path
// that exists must be a directory this process may write and enter, on a
// file system that takes directories, and the data dir, if it exists, one
// prepareDataDir accepts. access(2) answers for a read-only mount, root
// included; root it lets write /proc and /sys, so statfs(2) tells those.
func checkDataDir(dir string) error {
	for p := dir; ; {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("data dir %s: %s is not a directory", dir, p)
		case err == nil:
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("data dir %s: cannot write %s: %w; %s", dir, p, err, elsewhere)
			}
			if err := writableFileSystem(dir, p); err != nil {
				return err
			}
			if err := safeAncestors(dir); err != nil {
				return err
			}
			if p == dir {
				return ownDataDir(dir, fi)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// pseudoFileSystems are the kernel's file systems that show its state
// and take no directories of a user's, with the name an error gives them.
var pseudoFileSystems = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.PSTOREFS_MAGIC:      "pstore",
	unix.EFIVARFS_MAGIC:      "efivarfs",
}

// writableFileSystem refuses a data dir dir whose nearest existing part p
// is on a pseudo file system. A read-only mount access(2) refuses, root
// included (EROFS).
func writableFileSystem(dir, p string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fmt.Errorf("data dir %s: statfs %s: %w", dir, p, err)
	}
	if name, ok := pseudoFileSystems[int64(st.Type)]; ok {
		return fmt.Errorf("data dir %s: %s is on the kernel's %s file system, which takes no directories; %s", dir, p, name, elsewhere)
	}
	return nil
}

// safeAncestors refuses a data dir below a directory another user owns,
// or that its group or others may write without its sticky bit: there
// they could rename the data dir while narun runs and put one of their
// own in its place, whose cached binaries narun executes and whose
// signing.key it signs with. A sticky directory (/tmp) lets no one rename
// an entry they do not own, and the entry below it is checked in turn.
// Both the path as given and the one its symlinks lead to are checked:
// either's directories could be swapped.
func safeAncestors(dir string) error {
	paths := []string{dir}
	if real, err := evalExisting(dir); err == nil && real != dir {
		paths = append(paths, real)
	}
	uid := uint32(os.Geteuid())
	for _, path := range paths {
		for p := filepath.Dir(path); ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err == nil {
				st, ok := fi.Sys().(*syscall.Stat_t)
				switch {
				case !ok:
				case st.Uid != 0 && st.Uid != uid:
					return fmt.Errorf("data dir %s: %s belongs to uid %d, who could put a data dir of their own in its place, with the binaries narun runs and its signing key; %s", dir, p, st.Uid, elsewhere)
				case fi.Mode()&fs.ModeSticky != 0:
				case st.Mode&0o002 != 0:
					return fmt.Errorf("data dir %s: %s is writable by its group or others (mode %04o) without the sticky bit: they could put a data dir of their own in its place, with the binaries narun runs and its signing key; %s, or chmod go-w or +t it", dir, p, st.Mode&0o7777, elsewhere)
				case st.Mode&0o020 != 0:
					// Root's group too: membership in gid 0 gives no write to
					// root's files, and containers (OpenShift) run arbitrary
					// uids in it. A distribution's own directory (Debian's
					// /var/local, 2775 root:staff) is better left as it is:
					// another place comes first.
					place := "put the data dir where no group may write"
					if d := config.DefaultDataDir(); filepath.IsAbs(d) && !strings.HasPrefix(d, p+"/") {
						place += ", such as " + d
					}
					return fmt.Errorf("data dir %s: group %s may write %s (mode %04o) without the sticky bit: its members could put a data dir of their own in its place, with the binaries narun runs and its signing key; %s (%s), or chmod g-w or +t %s", dir, groupName(st.Gid), p, st.Mode&0o7777, place, elsewhere, p)
				}
			}
			if filepath.Dir(p) == p {
				break
			}
		}
	}
	return nil
}

// groupName is how an error names group gid: by name when it has one.
func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name + " (gid " + id + ")"
	}
	return "gid " + id
}

// evalExisting is path with the symlinks of its longest existing prefix
// resolved, and the rest as it is.
func evalExisting(path string) (string, error) {
	rest := ""
	for p := path; ; p = filepath.Dir(p) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest), nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if filepath.Dir(p) == p {
			return path, nil
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// prepareDataDir makes the data dir dir, if it is not there, for this
// user only, and refuses one that another user owns or may write, or
// that lies below a directory another user may change: whoever can
// replace what it holds (the cached binaries the runner executes, the
// node's signing.key, the specs) runs code as this user, who is root on a
// device. A user other than root gets ./narun-data by default, so a
// narun-data another user made in a shared directory such as /tmp would
// otherwise be taken as it is.
func prepareDataDir(dir string) error {
	if err := safeAncestors(dir); err != nil {
		return err
	}
	if err := mkdirSearchable(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("data dir %s: %w; %s", dir, err, elsewhere)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("data dir %s: %w; %s", dir, err, elsewhere)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := ownDataDir(dir, fi); err != nil {
		return err
	}
	// The parts that were missing are made now, which the first check
	// could not see.
	return safeAncestors(dir)
}

// mkdirSearchable makes dir and its missing parents mode 0755, whatever
// the umask: a sandboxed app runs under a uid of its own and passes them
// to reach its instance dir, and a umask of 027 (hardened hosts) would
// make them 0750, which it cannot pass, as MkdirAll's 0700 was.
func mkdirSearchable(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirSearchable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Made meanwhile by another: its mode is its maker's.
			return nil
		}
		return err
	}
	return os.Chmod(dir, 0o755)
}

// WarnUnreachable logs a warning when a directory above the data dir dir
// is not searchable by others: a sandboxed app runs under a uid of its
// own and cannot reach its instance dir there, so each of its instances
// fails, long after the start that could have said so. Parents still to
// be made are made searchable. Only root starts sandboxes: another user's
// exec apps run as that user, and home directories are commonly 0700.
func WarnUnreachable(log *slog.Logger, dir string) {
	if os.Geteuid() != 0 {
		return
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			log.Warn("a directory above the data dir is not searchable by others: a sandboxed app, which runs under a uid of its own, cannot reach its instance dir and will not start; chmod o+x it or choose another data_dir",
				"dir", p, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()), "data_dir", dir)
			return
		}
		if filepath.Dir(p) == p {
			return
		}
	}
}

// UnderTmp says whether the data dir dir lies under /tmp, where the
// runner cannot start an app whose sandbox has the tmp preset: the
// preset puts a private /tmp over the one holding the app's instance dir.
func UnderTmp(dir string) bool {
	if real, err := evalExisting(dir); err == nil {
		dir = real
	}
	return dir == "/tmp" || strings.HasPrefix(dir, "/tmp/")
}

// ownDataDir refuses a data dir that this user does not own, or that its
// group or others may write.
func ownDataDir(dir string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("data dir %s belongs to uid %d, not to uid %d that runs narun: its owner could replace the binaries narun runs and its signing key; chown it, or %s", dir, st.Uid, uid, elsewhere)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("data dir %s is writable by its group or others (mode %04o): they could replace the binaries narun runs and its signing key; chmod go-w it, or %s", dir, st.Mode&0o7777, elsewhere)
	}
	return nil
}

// Checked says that the configuration a --check read is valid; as a
// JSON record with JSON logs, since an ExecStartPre --check writes into
// the journal of the service's log.
func Checked(stdio IO, cfg config.File) error {
	from := "no configuration file: defaults, environment and flags"
	if cfg.Path != "" {
		from = cfg.Path
	}
	if strings.EqualFold(cfg.LogFormat, "json") {
		slog.New(slog.NewJSONHandler(stdio.Stdout, nil)).Info("configuration valid", "file", from)
		return nil
	}
	fmt.Fprintf(stdio.Stdout, "configuration valid (%s)\n", from)
	return nil
}

// ClientFlags are the flags of applets that connect to NATS.
func ClientFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: FlagNATSURL, EnvVars: []string{"NARUN_NATS_URL"}, Usage: "NATS server URL(s), comma separated (default: nats_url of the file, else its [nats] listen, else nats://127.0.0.1:4222)"},
		&ucli.StringFlag{Name: FlagNATSCreds, Usage: "NATS credentials file (JWT + nkey seed)"},
		&ucli.StringFlag{Name: FlagNATSNkey, Usage: "file holding a NATS nkey seed"},
		&ucli.StringFlag{Name: FlagNATSCA, Usage: "CA of the NATS servers' certificates (PEM): connect over TLS"},
		&ucli.StringFlag{Name: FlagNATSCert, Usage: "client certificate (PEM) for NATS servers that verify clients"},
		&ucli.StringFlag{Name: FlagNATSKey, Usage: "private key of --nats-cert"},
	}
}

// DataDirFlag is the flag of applets that keep state on disk.
func DataDirFlag() ucli.Flag {
	return &ucli.StringFlag{Name: FlagDataDir, EnvVars: []string{"NARUN_DATA_DIR"}, Usage: "where JetStream, the binary cache and instances live"}
}

// NewApp returns a urfave/cli app wired to stdio that never calls os.Exit,
// so the dispatcher alone turns errors into exit codes.
func NewApp(stdio IO, name, usage string, flags []ucli.Flag) *ucli.App {
	return &ucli.App{
		Name:                 filepath.Base(name),
		Usage:                usage,
		Flags:                flags,
		Reader:               stdio.Stdin,
		Writer:               stdio.Stdout,
		ErrWriter:            stdio.Stderr,
		HideVersion:          true,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*ucli.Context, error) {},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return Usage(err)
		},
	}
}

// Load reads the configuration named by --config and applies the common
// flags over it; flags win over the file and the environment.
func Load(c *ucli.Context, stdio IO) (config.File, *slog.Logger, error) {
	cfg, err := config.Load(c.String(FlagConfig), stdio.Env)
	if err != nil {
		// config.Load read the rest of a file with a refused value (and
		// then names it): its log settings are judged beside that value,
		// not at the next run.
		if cfg.Path == "" {
			return cfg, nil, err
		}
		errs := []error{err}
		for _, v := range logChecks(cfg) {
			if v.err != nil && !c.IsSet(v.flag) {
				errs = append(errs, v.fileError(cfg))
			}
		}
		return cfg, nil, config.JoinByLine(cfg.Path, errs...)
	}
	if c.IsSet(FlagLogLevel) {
		cfg.LogLevel = c.String(FlagLogLevel)
	}
	if c.IsSet(FlagLogFormat) {
		cfg.LogFormat = c.String(FlagLogFormat)
	}
	// Empty counts as not given, as an empty NARUN_DATA_DIR does (the flag
	// reads that variable too). Absolute, as the file's and the
	// environment's are: the path is logged and handed to children that
	// run in other directories.
	if d := c.String(FlagDataDir); c.IsSet(FlagDataDir) && d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return cfg, nil, Usage(fmt.Errorf("--%s %q: %w", FlagDataDir, d, err))
		}
		cfg.DataDir, cfg.DataDirWritten, cfg.DataDirFromFile = abs, "", false
	}
	for _, client := range []*config.Client{&cfg.Gateway.Client, &cfg.Runner.Client, &cfg.Ctl.Client} {
		for flag, setting := range map[string]*string{FlagNATSURL: &client.NATSURL, FlagNATSCreds: &client.NATSCreds, FlagNATSNkey: &client.NATSNkey,
			FlagNATSCA: &client.NATSCA, FlagNATSCert: &client.NATSCert, FlagNATSKey: &client.NATSKey} {
			// An empty URL is none: NARUN_NATS_URL set but empty (an env
			// file, an export) must leave the file's, as config.Load does.
			if c.IsSet(flag) && (flag != FlagNATSURL || c.String(flag) != "") {
				*setting = c.String(flag)
			}
		}
		// The flag reads NARUN_NATS_URL too: a value equal to it came
		// from there, or says the same, and config.Load named it.
		if c.IsSet(FlagNATSURL) && c.String(FlagNATSURL) != "" && client.NATSURL != stdio.Env("NARUN_NATS_URL") {
			client.NATSURLFrom = "--" + FlagNATSURL
		}
	}
	// A wrong value in the file is the file's, named by its line as the
	// decoder names a wrong type; a wrong flag makes it all a usage error
	// (exit 2), the file's problems still named beside it.
	var wrong []error
	wrongFlag := false
	for _, v := range logChecks(cfg) {
		switch {
		case v.err == nil:
		case c.IsSet(v.flag):
			wrong, wrongFlag = append(wrong, fmt.Errorf("--%s: %w", v.flag, v.err)), true
		default:
			wrong = append(wrong, v.fileError(cfg))
		}
	}
	if err := config.JoinByLine(cfg.Path, wrong...); err != nil {
		if wrongFlag {
			err = Usage(err)
		}
		return cfg, nil, err
	}
	log, err := NewLogger(stdio.Stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return cfg, nil, err
	}
	return cfg, log, nil
}

// logCheck is the judgement of a log setting, set by flag or by the
// file's key.
type logCheck struct {
	flag, key string
	err       error
}

func logChecks(cfg config.File) []logCheck {
	_, levelErr := parseLevel(cfg.LogLevel)
	return []logCheck{
		{FlagLogLevel, "log_level", levelErr},
		{FlagLogFormat, "log_format", checkFormat(cfg.LogFormat)},
	}
}

func (v logCheck) fileError(cfg config.File) error {
	return fmt.Errorf("%s: key %q: %w", cfg.Where(v.key), v.key, v.err)
}

// pingInterval and maxPingsOut are the connections' pings: Connect takes a
// server for dead once nothing has come from it for as long as nats.go
// would wait for maxPingsOut answers in a row (alive.go).
const (
	pingInterval = 2 * time.Second
	maxPingsOut  = 3
)

// NATSOptions turns client settings into connection options: credentials,
// nkey and a reconnect policy that never gives up, because edge links drop.
// Connect with them through Connect, which does not wait on a dead server.
func NATSOptions(name string, client config.Client) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		// The servers are tried in the order listed, so that a device's
		// runner, listing its own server first, stays on it: a shuffled
		// pool sends its requests across the network and cuts a healthy
		// device off when the link to the chosen member fails.
		nats.DontRandomize(),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		// Notice a dead server within seconds, not minutes, so the client
		// fails over to another cluster member while a link is cut.
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		// nats.go writes to the socket under the connection's lock, which
		// every publish, IsConnected and the pings above wait for: a
		// server that stops reading (a stopped process, a link dropping
		// every packet) once the socket is full would hold them all for
		// nats.go's default of a minute. A write is given up when the
		// pings would have called the server dead: a ping queued behind
		// it could not have been answered in time either, so no link the
		// pings keep is cut. A write cut part way closes the connection,
		// which is then made again.
		nats.FlusherTimeout(pingInterval * (maxPingsOut + 1)),
	}
	// Every setting is judged, so that one --check names each wrong one.
	var wrong []error
	if err := checkNATSURL(client.NATSURL); err != nil {
		wrong = append(wrong, &clientError{key: "nats_url", flag: FlagNATSURL, err: err})
	}
	if client.NATSCreds != "" {
		// nats.go reads the file only to connect: read here, as the nkey
		// is, a file that is missing or unreadable fails --check too,
		// not only the start.
		if _, err := os.ReadFile(client.NATSCreds); err != nil {
			wrong = append(wrong, &clientError{key: "nats_creds", flag: FlagNATSCreds, err: fmt.Errorf("nats creds %s: %w", client.NATSCreds, err)})
		}
		opts = append(opts, nats.UserCredentials(client.NATSCreds))
	}
	if client.NATSNkey != "" {
		opt, err := nats.NkeyOptionFromSeed(client.NATSNkey)
		if err != nil {
			wrong = append(wrong, &clientError{key: "nats_nkey", flag: FlagNATSNkey, err: fmt.Errorf("nats nkey %s: %w", client.NATSNkey, err)})
		}
		opts = append(opts, opt)
	}
	tlsOpts, tlsWrong := clientTLS(client)
	if err := errors.Join(append(wrong, tlsWrong...)...); err != nil {
		return nil, err
	}
	return append(opts, tlsOpts...), nil
}

// clientTLS are the options of the client's TLS files. nats.go reads them
// at each connection, so a renewed certificate is taken at the next
// reconnect; they are read here too so that a wrong one fails the start
// and --check, named by its key.
func clientTLS(client config.Client) (opts []nats.Option, wrong []error) {
	if client.NATSCA != "" {
		if err := embednats.CheckCA(client.NATSCA); err != nil {
			wrong = append(wrong, &clientError{key: "nats_ca", flag: FlagNATSCA, err: fmt.Errorf("nats ca: %w", err)})
		}
		opts = append(opts, nats.RootCAs(client.NATSCA))
	}
	switch {
	case client.NATSCert == "" && client.NATSKey != "":
		wrong = append(wrong, &clientError{key: "nats_key", flag: FlagNATSKey, err: errors.New("nats key: set, but nats_cert is empty: set both, the certificate and its private key")})
	case client.NATSCert != "" && client.NATSKey == "":
		wrong = append(wrong, &clientError{key: "nats_cert", flag: FlagNATSCert, err: errors.New("nats cert: set, but nats_key is empty: set both, the certificate and its private key")})
	case client.NATSCert != "":
		if err := embednats.CheckClientCert(client.NATSCert, client.NATSKey); err != nil {
			wrong = append(wrong, &clientError{key: "nats_cert", flag: FlagNATSCert, err: fmt.Errorf("nats cert %w", err)})
		}
		opts = append(opts, nats.ClientCert(client.NATSCert, client.NATSKey))
	}
	return opts, wrong
}

// checkNATSURL refuses a server list nats.go could not parse, as it
// parses it (a URL without a scheme is a nats:// one), so that --check
// finds it: the connection, which does, comes only after.
func checkNATSURL(servers string) error {
	for _, u := range strings.Split(servers, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if _, err := url.Parse(u); err != nil {
			return fmt.Errorf("nats url: %w", RedactError(err))
		}
	}
	return nil
}

// clientError is NATSOptions' error about a client setting or the file
// it names: key is the setting's name in its table, flag the flag that
// sets it instead.
type clientError struct {
	key, flag string
	err       error
}

func (e *clientError) Error() string { return e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// PlaceClientError names the flag, or the key of table ("runner",
// "gateway") and its line in the file, behind an error of NATSOptions,
// as the file's other errors are named.
func PlaceClientError(c *ucli.Context, cfg config.File, table string, err error) error {
	if parts := config.Joined(err); parts != nil {
		placed := make([]error, len(parts))
		for i, part := range parts {
			placed[i] = PlaceClientError(c, cfg, table, part)
		}
		return errors.Join(placed...)
	}
	var fe *clientError
	if !errors.As(err, &fe) {
		return err
	}
	if c.IsSet(fe.flag) {
		return fmt.Errorf("--%s: %w", fe.flag, fe.err)
	}
	key := table + "." + fe.key
	if where := cfg.Where(key); where != "" {
		return fmt.Errorf("%s: key %q: %w", where, key, fe.err)
	}
	return err
}

// CertRefused says whether the server refused this client's certificate
// (or its lack of one): by a TLS alert about certificates, or, with TLS
// 1.3, where a client learns of it only at its next write, by closing the
// connection right after the handshake, which says nothing of
// certificates. A timeout or a reset in the handshake is not it.
func CertRefused(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return strings.Contains(op.Err.Error(), "certificate")
	}
	return errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake")
}

// CertOutOfDate says how the client certificate in file is outside its
// dates by now, "" when it is within them or does not read: the alert of
// a server that refused it names no file and, with TLS 1.3, no reason.
func CertOutOfDate(file string, now time.Time) string {
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	switch {
	case err != nil:
		return ""
	case now.After(cert.NotAfter):
		return "expired on " + cert.NotAfter.UTC().Format(time.DateTime) + " UTC"
	case now.Before(cert.NotBefore):
		return "is valid only from " + cert.NotBefore.UTC().Format(time.DateTime) + " UTC"
	}
	return ""
}

// NATSLogging sends connection events and asynchronous errors (a slow
// consumer, a permissions violation) of a long-running applet to log
// instead of nats.go's stderr, and keeps the applet trying after a server
// refused its login.
func NATSLogging(log *slog.Logger) []nats.Option {
	// A refused login is logged once until a connection succeeds: the
	// applet keeps trying, and without this line it would only say that
	// it cannot open its buckets.
	var refused atomic.Bool
	loginRefused := func(err error) bool {
		if !slices.ContainsFunc(authErrors, func(e error) bool { return errors.Is(err, e) }) {
			return false
		}
		if !refused.Swap(true) {
			log.Error("nats refused the login: check the user:password@ of nats_url, nats_creds or nats_nkey", "err", err)
		}
		return true
	}
	// A server that cannot be reached is said at the first failed attempt
	// and then once a minute while it lasts: nats.go retries every few
	// seconds, and a gateway that only answers 503 must say why. The
	// first connection's failure says only "no servers available"; the
	// retries that follow say why (connection refused, a timeout). A
	// server skipped because another answered first is no failure.
	// The times are on the monotonic clock, counted from here: a wall
	// clock that NTP steps back (a device whose clock ran ahead) would
	// have kept the warning quiet until it passed the last one again.
	var lastUnreachableWarning atomic.Int64
	since := time.Now()
	unreachable := func(nc *nats.Conn, err error) {
		if errors.Is(err, nats.ErrNoServers) || errors.Is(err, errSkipped) {
			return
		}
		// 1 at the least: 0 is no warning yet.
		now := int64(time.Since(since)) + 1
		last := lastUnreachableWarning.Load()
		if last != 0 && time.Duration(now-last) < time.Minute || !lastUnreachableWarning.CompareAndSwap(last, now) {
			return
		}
		attrs := []any{"servers", embednats.RedactURLs(strings.Join(nc.Servers(), ",")), "err", err}
		if CertRefused(err) {
			attrs = append(attrs, "hint", "the server refused this client in its TLS handshake: one that verifies clients wants a certificate its CA signed, nats_cert and nats_key (--nats-cert, --nats-key)")
		}
		log.Warn("nats not reachable, retrying", attrs...)
	}
	connected := func(msg string) nats.ConnHandler {
		return func(nc *nats.Conn) {
			refused.Store(false)
			lastUnreachableWarning.Store(0)
			// nats.go runs this on a goroutine of its own, which may come
			// after the applet closed the connection (a configuration
			// refused right after connecting): then there is nothing to
			// say, and no url to say it with.
			url := nc.ConnectedUrl()
			if url == "" {
				return
			}
			// Not ConnectedUrlRedacted: it leaves a token readable.
			log.Info(msg, "url", embednats.RedactURLs(url))
		}
	}
	return []nats.Option{
		// nats.go closes a connection for good once a server refused its
		// login twice; a runner or gateway would then stay cut off after
		// the login is fixed on the server (a password rotated on the hub
		// first) until someone restarts it.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(connected("nats connected")),
		nats.ReconnectHandler(connected("nats reconnected")),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		// The failed attempts of a first connection come here, a refused
		// login among them; a refusal on a later reconnect goes to the
		// ErrorHandler. Dial failures come here too, at every attempt, and
		// the disconnect was logged already.
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			if !loginRefused(err) {
				unreachable(nc, err)
			}
		}),
		nats.ErrorHandler(NATSErrors(log, loginRefused)),
	}
}

// NATSErrors is a nats.ErrHandler that sends asynchronous errors (a slow
// consumer, a permissions violation) to log, where nats.go's own handler
// prints a bare line on stderr. An error of no subscription that handled
// (nil: none) says it dealt with is not logged again.
func NATSErrors(log *slog.Logger, handled func(error) bool) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			log.Warn("nats subscription error", "subject", sub.Subject, "err", err)
			return
		}
		if handled == nil || !handled(err) {
			log.Warn("nats error", "err", err)
		}
	}
}

// authErrors are the server's refusals of a login.
var authErrors = []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired}

// Service runs a long-running applet: it takes no arguments, loads the
// configuration under the flags, then calls run. When ctx ends, a service
// manager that asked is told the applet is stopping; run calls
// NotifyReady once it serves. A second SIGINT or SIGTERM while run is
// stopping closes Hurried(c): run stops waiting for what it waits for
// (waits: "apps", "requests", "apps and requests"; "" when nothing) and
// returns; Service returns as soon as it has, or after hurryBound, and
// the process exits, as an operator who signals twice, or a service
// manager whose stop timeout passed, wants, with an error that names
// what was not waited for. The first line of usage is the summary the help
// shows after the name; the lines after it, if any, its DESCRIPTION.
func Service(ctx context.Context, stdio IO, args []string, usage, waits string, flags []ucli.Flag, run func(c *ucli.Context, cfg config.File, log *slog.Logger) error) error {
	summary, description, _ := strings.Cut(usage, "\n")
	app := NewApp(stdio, args[0], summary, flags)
	app.Description = description
	app.UsageText = app.Name + " [options]"
	app.HideHelpCommand = true
	app.Action = func(c *ucli.Context) error {
		if c.NArg() > 0 {
			return Usage(fmt.Errorf("unexpected argument %q", c.Args().First()))
		}
		cfg, log, err := Load(c, stdio)
		if err != nil {
			// A file that does not parse leaves the default in cfg, but
			// may say what it wants before the error.
			format := cmp.Or(config.LogFormatOf(c.String(FlagConfig)), cfg.LogFormat)
			if c.IsSet(FlagLogFormat) {
				format = c.String(FlagLogFormat)
			}
			return logFatal(stdio, args[0], format, err)
		}
		err = serve(ctx, c, cfg, log, waits, run)
		return logFatal(stdio, args[0], cfg.LogFormat, err)
	}
	err := app.RunContext(ctx, args)
	if err != nil && !IsLogged(err) {
		// A wrong flag or argument fails before the configuration is
		// read: the --log-format given on the command line decides.
		return logFatal(stdio, args[0], formatArg(args[1:]), err)
	}
	return err
}

// LogFatal is what Service does with the error an applet stops with, for
// an applet that runs commands of its own (ctl): err as a JSON log line,
// marked Logged, when the logs are JSON, else err as it is. format is the
// log format the configuration and flags chose; "" when they were not
// read (a wrong flag), and then the --log-format among args decides.
func LogFatal(stdio IO, args []string, format string, err error) error {
	if format == "" && len(args) > 0 {
		format = formatArg(args[1:])
	}
	name := ""
	if len(args) > 0 {
		name = args[0]
	}
	return logFatal(stdio, name, format, err)
}

// formatArg is the log format of a command line that failed before the
// configuration was read: its last --log-format, else the log_format of
// the configuration file it names with --config (or the default one), so
// that a service whose file asks for JSON logs its usage errors in JSON
// too; "" when neither says.
func formatArg(args []string) string {
	if format := argValue(args, FlagLogFormat); format != "" {
		return format
	}
	return config.LogFormatOf(argValue(args, FlagConfig))
}

// argValue is the value of the last --name among args, as the command line
// gives it, before any parsing; "" when there is none.
func argValue(args []string, flag string) string {
	value := ""
	for i, a := range args {
		if a == "--" {
			break
		}
		name, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != flag {
			continue
		}
		if hasValue {
			value = v
		} else if i+1 < len(args) {
			value = args[i+1]
		}
	}
	return value
}

// logFatal writes err, with which an applet stops, as a log line of level
// ERROR when the logs are JSON, so that a log shipper parses it as it
// parses the others, and returns it marked Logged for the dispatcher. In
// text it returns err for the dispatcher's plain "APPLET: err" line, but
// into the journal writes that line itself, with the error priority the
// dispatcher does not know of: it is the line journalctl -p err must show.
func logFatal(stdio IO, name, format string, err error) error {
	if err == nil || err.Error() == "" {
		return err
	}
	if !strings.EqualFold(format, "json") {
		if !journalStream(stdio.Stderr) {
			return err
		}
		fmt.Fprintf(stdio.Stderr, "%s%s: %v\n", priority(slog.LevelError), name, err)
		return Logged(err)
	}
	log := slog.New(journaled(stdio.Stderr, func(w io.Writer) slog.Handler { return newJSONHandler(w, nil) }))
	log.Error("fatal error", "applet", name, "err", err.Error(), "exit_code", ExitCode(err))
	return Logged(err)
}

// serve runs run until it returns, or until a second SIGINT or SIGTERM
// after ctx ended; waits is as for Service.
func serve(ctx context.Context, c *ucli.Context, cfg config.File, log *slog.Logger, waits string, run func(c *ucli.Context, cfg config.File, log *slog.Logger) error) error {
	// The second signal is listened for from the end of ctx on (the
	// first one ended it), and before the service manager hears of the
	// stop, so a second signal sent once it heard is not missed.
	again := make(chan os.Signal, 1)
	defer signal.Stop(again)
	stopping := sync.OnceFunc(func() {
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		if err := sdnotify.AnnounceStop(); err != nil {
			log.Warn("service manager not told of the stop", "err", err)
		}
	})
	stop := context.AfterFunc(ctx, stopping)
	// The notice goes out before the applet returns when ctx ended:
	// run can see ctx done and return before the context package has
	// started stopping (it closes Done before it runs AfterFuncs), and
	// stop would then cancel it. One already running is waited for by
	// the OnceFunc.
	defer func() {
		stop()
		if ctx.Err() != nil {
			stopping()
		}
	}()
	// SIGHUP ends a Go process that does not catch it, and run installs
	// its reload (OnSIGHUP) only once it serves: the first start of a
	// cluster waits for JetStream as long as the other members are down,
	// and a kill -HUP meanwhile (a log rotation, an operator reloading
	// every node) took the node down. Caught from here on, a SIGHUP before
	// run's own handler is dropped: the gateway compares the file with the
	// content it was started from, and applies an edit made meanwhile at
	// its first look.
	early := make(chan os.Signal, 1)
	signal.Notify(early, syscall.SIGHUP)
	defer signal.Stop(early)
	// Go ends a process that writes to a stdout or stderr whose reader
	// is gone (a log pipe's reader that died, a journald restarted
	// without keeping its streams) with SIGPIPE, and a node's apps die
	// with it. Caught, the write fails and the line is lost; the node
	// runs on. Caught for good: the last line, the error it stops with,
	// goes out after serve returns. A caught signal, unlike an ignored
	// one, is back to its default in the processes the runner starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if every := sdnotify.WatchdogInterval(); every > 0 {
		fed := make(chan struct{})
		defer close(fed)
		go feedWatchdog(every, fed, log)
	}
	if !c.Bool(FlagCheck) {
		setMemoryLimit(log)
	}
	hurry := make(chan struct{})
	c.Context = context.WithValue(c.Context, hurryKey{}, (<-chan struct{})(hurry))
	done := make(chan error, 1)
	go func() { done <- run(c, cfg, log) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	var sig os.Signal
	select {
	case err := <-done:
		return err
	case sig = <-again:
	}
	close(hurry)
	// What is left is quick and worth its time: an embedded NATS server
	// shut down cleanly starts again without rebuilding its state.
	t := time.NewTimer(hurryBound)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	if waits == "" {
		return fmt.Errorf("second %s: stopped at once", signalName(sig))
	}
	return fmt.Errorf("second %s: stopped at once, without waiting for %s", signalName(sig), waits)
}

// feedWatchdog tells a service manager with WatchdogSec= that the process
// still runs, every interval until stop is closed: past WatchdogSec without
// a word it kills narun, and a node's apps with it. It says so from a
// goroutine of its own, so it vouches for a process that is scheduled,
// not frozen or stopped, not for each of its parts.
func feedWatchdog(every time.Duration, stop <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	warned := false
	for {
		if err := sdnotify.Send(sdnotify.Watchdog); err != nil && !warned {
			log.Warn("service manager's watchdog not fed", "err", err)
			warned = true
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// hurryBound is how long a second signal leaves an applet to return.
const hurryBound = 5 * time.Second

type hurryKey struct{}

// Hurried is closed when a second SIGINT or SIGTERM asks a stopping
// applet to stop at once: it should stop waiting for apps and in-flight
// requests, and return after what is quick (closing its NATS server).
func Hurried(c *ucli.Context) <-chan struct{} {
	ch, _ := c.Context.Value(hurryKey{}).(<-chan struct{})
	return ch
}

// signalName is the name an operator sends a signal by.
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// Override sets each destination whose flag the command line gives, so
// that flags win over the configuration file.
func Override(c *ucli.Context, flags map[string]*string) {
	for flag, dst := range flags {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
}

// Listen is a listen address of the configuration: its key in the file,
// the flag that may set it instead ("" for none), and its value.
type Listen struct{ Key, Flag, Addr string }

// CheckListen refuses an address no listener could take ("8080" without
// its colon, "1.2.3.4.5:8080"), naming the flag or the file's key and
// line that set it: the start found it only once it listened, after the
// rest was up, and in words that named neither, and --check, which
// listens on nothing, not at all. An empty address, which turns its
// listener off, passes. Every address refused is named, not only the
// first.
func CheckListen(c *ucli.Context, cfg config.File, addrs ...Listen) error {
	var errs []error
	for _, l := range addrs {
		if l.Addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(l.Addr)
		if err == nil {
			_, err = net.LookupPort("tcp", port)
		}
		if err == nil && !embednats.ListenableHost(host) {
			err = fmt.Errorf("host %q is neither an IP address nor a host name", host)
		}
		if err == nil {
			continue
		}
		err = fmt.Errorf("%q: want host:port or :port: %w%s", l.Addr, err, embednats.BracketHint(l.Addr))
		switch where := cfg.Where(l.Key); {
		case l.Flag != "" && c.IsSet(l.Flag):
			errs = append(errs, Usage(fmt.Errorf("--%s %w", l.Flag, err)))
		case where != "":
			errs = append(errs, fmt.Errorf("%s: key %q: %w", where, l.Key, err))
		default:
			errs = append(errs, fmt.Errorf("key %q: %w", l.Key, err))
		}
	}
	return errors.Join(errs...)
}

// CheckListenersApart refuses two of addrs that one process cannot both
// listen on: the same port, on the same host or with either host a
// wildcard (empty, 0.0.0.0, ::), which takes the port on every address.
// The start found them only when the second listener failed, after the
// rest was up, in words that named neither; --check, which binds nothing,
// not at all. Both are named, by the flag or the file's key and line that
// set them. It is no usage error (exit 1): each address is well formed,
// the configuration as a whole cannot run. Addresses CheckListen or the
// NATS server's check refuse, and port 0 (one the kernel picks), pass:
// they are named as refused, not once more as a clash. Every listener
// that clashes with one before it is named, with the first of those.
func CheckListenersApart(c *ucli.Context, cfg config.File, addrs ...Listen) error {
	type bound struct {
		Listen
		host string
		port int
	}
	var seen []bound
	var errs []error
	for _, l := range addrs {
		if l.Addr == "" {
			continue
		}
		host, p, err := net.SplitHostPort(l.Addr)
		if err != nil || !embednats.ListenableHost(host) {
			continue
		}
		port, err := net.LookupPort("tcp", p)
		if err != nil || port == 0 {
			continue
		}
		host = wildcardOrHost(host)
		i := slices.IndexFunc(seen, func(s bound) bool { return s.port == port && (s.host == host || s.host == "" || host == "") })
		if i >= 0 {
			errs = append(errs, fmt.Errorf("%s and %s: two of narun's listeners on the same address; give each a port of its own", seen[i].Listen.Name(c, cfg), l.Name(c, cfg)))
			continue
		}
		seen = append(seen, bound{l, host, port})
	}
	return errors.Join(errs...)
}

// wildcardOrHost is "" for a host that listens on every address, else the
// host in one spelling of it.
func wildcardOrHost(host string) string {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return strings.ToLower(host)
	}
	if ip.IsUnspecified() {
		return ""
	}
	return ip.Unmap().String()
}

// Name says where l's address comes from, for an error about it: the
// flag that set it, else the file's line and key, else the key with the
// value it has by default or from the environment.
func (l Listen) Name(c *ucli.Context, cfg config.File) string {
	if l.Flag != "" && c.IsSet(l.Flag) {
		return fmt.Sprintf("--%s %s", l.Flag, l.Addr)
	}
	if where := cfg.Where(l.Key); where != "" && where != cfg.Path {
		return fmt.Sprintf("%s: key %q %q", where, l.Key, l.Addr)
	}
	return fmt.Sprintf("key %q %q", l.Key, l.Addr)
}

// PlaceListenError names the listener of addrs whose address err, a
// failure to listen (an address in use), is about, as an error of the
// NATS server's listeners names its key: the part that failed names only
// the address. err is returned as it is when no listener of addrs has
// that address.
func PlaceListenError(c *ucli.Context, cfg config.File, err error, addrs ...Listen) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "listen" || op.Addr == nil {
		return err
	}
	for _, l := range addrs {
		if l.Addr == "" {
			continue
		}
		if a, rerr := net.ResolveTCPAddr("tcp", l.Addr); rerr == nil && a.String() == op.Addr.String() {
			return fmt.Errorf("%s: %w", l.Name(c, cfg), err)
		}
	}
	return err
}

// ProbeListen binds each of addrs and lets it go at once, so that a start
// finds an address another process holds before it starts anything, and
// fails naming the flag or key that set it. Port 0 is skipped: any port
// will do.
func ProbeListen(c *ucli.Context, cfg config.File, addrs ...Listen) error {
	for _, l := range addrs {
		if l.Addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(l.Addr); err == nil && port == "0" {
			continue
		}
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return PlaceListenError(c, cfg, config.PortNeedsRoot(l.Key, err), addrs...)
		}
		ln.Close()
	}
	return nil
}

// GatewayListens are the gateway's addresses for CheckListen, set by the
// flags of gw and up or the file: the HTTPS one only with a certificate,
// without which nothing listens on it.
func GatewayListens(g config.Gateway) []Listen {
	var https string
	if g.TLS.Cert != "" {
		https = g.TLS.Listen
	}
	return []Listen{{Key: "gateway.listen", Flag: "listen", Addr: g.Listen},
		{Key: "gateway.admin_listen", Flag: "admin-listen", Addr: g.AdminListen},
		{Key: "gateway.tls.listen", Flag: "tls-listen", Addr: https}}
}

// NATSListens are the embedded NATS server's addresses for
// CheckListenersApart; listenFlag, httpFlag and clusterFlag are the flags
// of the applet that set them ("" for none).
func NATSListens(n config.NATS, listenFlag, httpFlag, clusterFlag string) []Listen {
	return []Listen{{Key: "nats.listen", Flag: listenFlag, Addr: n.Listen},
		{Key: "nats.http_listen", Flag: httpFlag, Addr: n.HTTPListen},
		{Key: "nats.cluster.listen", Flag: clusterFlag, Addr: n.Cluster.Listen},
		{Key: "nats.leafnodes.listen", Addr: n.Leafnodes.Listen}}
}

// NotifyReady tells a service manager that asked (a systemd unit with
// Type=notify) that the applet serves.
func NotifyReady(log *slog.Logger) {
	if err := sdnotify.Send(sdnotify.Ready); err != nil {
		log.Warn("service manager not told of readiness", "err", err)
	}
}
