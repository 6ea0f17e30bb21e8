// Package embednats runs a NATS server with JetStream inside the narun
// process, and hands out in-process client connections to it.
package embednats

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// Config describes the embedded server. The zero value of every field but
// DataDir is usable.
type Config struct {
	// Listen is the client address "host:port"; port 0 or -1 picks a free
	// one.
	// Empty means no TCP listener: in-process connections only.
	Listen string
	// DataDir is where JetStream keeps its store (DataDir/jetstream). Required.
	DataDir string
	// ServerName names the server in a cluster; empty lets the server pick.
	ServerName string
	// MaxPayload is the largest message in bytes; 0 means 1 MiB.
	MaxPayload int64
	// HTTPListen enables the monitoring endpoint at "host:port"; empty disables it.
	HTTPListen string
	// JetStreamMaxMemory and JetStreamMaxStore cap JetStream; 0 means the server's defaults.
	JetStreamMaxMemory int64
	JetStreamMaxStore  int64
	// JetStreamSyncInterval is how often JetStream fsyncs its files; 0
	// means the server's default, 2 minutes.
	JetStreamSyncInterval time.Duration
	// JetStreamDomain separates JetStream of a leaf node from its hub's; empty means none.
	JetStreamDomain string
	// Cluster joins other servers through routes; a zero Cluster means standalone.
	Cluster Cluster
	// Leafnodes accepts leaf connections and/or connects to hubs.
	Leafnodes Leafnodes
	// TLS makes the client port (Listen) require TLS; in-process
	// connections need none.
	TLS TLS
	// Users and NKeys turn on client authentication when either is set.
	Users []User
	NKeys []NKey
	// ReadyTimeout bounds the wait for the server to accept clients,
	// the time JetStream takes to read its store apart; 0 means 10s.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
	// Reading, when set, is called every 10 s while JetStream still reads
	// its store at a start, before the server accepts clients, so that a
	// service manager's start timeout can be extended.
	Reading func()
	// Stop, once closed, ends a start (or Restart) that still waits for
	// the server to accept clients: the server is shut down and the start
	// fails with ErrStopped. nil waits for as long as the store's read.
	Stop <-chan struct{}
}

// ErrStopped is the error of a start that Config.Stop ended.
var ErrStopped = errors.New("stopped before the NATS server accepted clients")

// Cluster configures routes to the other servers of a cluster.
type Cluster struct {
	Name   string   // cluster name, the same on every member
	Listen string   // "host:port" for routes; empty disables clustering
	Routes []string // nats-route://host:port of the other members
	// User and Password authenticate routes both ways: this server
	// accepts only routes that present them and presents them to the
	// members in Routes (unless a route URL carries its own). Every
	// member needs the same pair. Required when Users or NKeys is set.
	User     string
	Password string
	// TLS, when set, carries every route over TLS, checked both ways
	// against TLS.CA, which must sign every member's certificate.
	TLS TLS
}

// Leafnodes configures leaf node connections.
type Leafnodes struct {
	Listen  string       // "host:port" accepting leaf nodes; empty disables it
	Remotes []LeafRemote // hubs this server joins as a leaf
	// Local subjects never cross this server's connections to its hubs,
	// either way. A stream on each side captures them, so without this a
	// hub's messages would be stored by every leaf and the other way round.
	Local []string
	// TLS makes the leaf port (Listen) require TLS.
	TLS TLS
}

// LeafRemote is a hub this server connects to as a leaf node.
type LeafRemote struct {
	URLs        []string // nats-leaf://host:port of the hub
	Credentials string   // credentials file for the hub; empty for none
	// TLS, when set, connects over TLS and checks the hub's certificate
	// against TLS.CA; a tls:// URL does so against the system's CAs.
	TLS TLS
}

// User is a client login with a password.
type User struct {
	User     string
	Password string
	// Permissions restricts the login; nil allows it everything.
	Permissions *Permissions
}

// NKey is a client login with an nkey.
type NKey struct {
	PublicKey string // "U..."
	// Permissions restricts the login; nil allows it everything.
	Permissions *Permissions
	// Key names the configuration key that lists it ("nats.app_nkeys"),
	// for an error about it; "" means "nats.nkeys".
	Key string
}

// Permissions restricts a login.
type Permissions struct {
	// DenyPublish are the subjects the login may not publish to, with
	// subscription wildcards; it may publish to every other subject. The
	// server refuses such a publish with a permissions violation.
	DenyPublish []string
}

func (p *Permissions) server() *server.Permissions {
	if p == nil {
		return nil
	}
	return &server.Permissions{Publish: &server.SubjectPermission{Deny: p.DenyPublish}}
}

// Server is a running embedded NATS server.
type Server struct {
	cfg      Config
	internal *User // login for in-process connections when authentication is on
	// internalHash is the server's copy of internal's password, kept
	// through reloads and restarts, which build their options anew.
	internalHash string
	lock         *os.File
	logs         *logAdapter

	mu    sync.Mutex
	ns    *server.Server // replaced by Restart
	certs *certKeeper
	// storeLimit is the JetStream storage limit the server runs with,
	// set at its start from the space free then when none is configured:
	// nats-server refuses a reload of its options that changes it.
	storeLimit int64
	// ports are those the listeners bound at the start (":0" picks one),
	// which clients, leaf nodes and routes were told: every later start
	// binds them again. A restart after one that failed has no listener
	// left to ask.
	ports boundPorts
	// monitorPort is the monitoring port the running server was given,
	// which a reload must give it again: nats-server refuses to reload a
	// change of it and, unlike for its other listeners, keeps the -1 of
	// ":0" in its options rather than the port bound.
	monitorPort int
}

// boundPorts are the ports a server's listeners bound; 0 for one it has
// not.
type boundPorts struct{ client, cluster, leaf, monitor int }

// boundPortsOf are the ports ns's listeners bound, all of which listen
// once it accepts clients.
func boundPortsOf(ns *server.Server) boundPorts {
	var p boundPorts
	if addr, ok := ns.Addr().(*net.TCPAddr); ok && addr != nil {
		p.client = addr.Port
	}
	if addr := ns.ClusterAddr(); addr != nil {
		p.cluster = addr.Port
	}
	if addr := ns.MonitorAddr(); addr != nil {
		p.monitor = addr.Port
	}
	// nats-server writes the leaf port it bound back into its options,
	// which only Varz exports.
	if v, err := ns.Varz(nil); err == nil && v.LeafNode.Port > 0 {
		p.leaf = v.LeafNode.Port
	}
	return p
}

// current is the server running now.
func (s *Server) current() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// InProcessConn connects to the server running now, so that an
// in-process client reconnects to the one Restart started.
func (s *Server) InProcessConn() (net.Conn, error) { return s.current().InProcessConn() }

// internalUser is the login in-process applets use when client
// authentication is on; its password is random for each start.
const internalUser = "narun-internal"

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	certs := &certKeeper{}
	opts, internal, problems := serverOptions(cfg, certs)
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	// The store before the ports: a second server started with the
	// configuration of a running one finds both taken, and the store names
	// the running server where a port would name only itself.
	lock, err := lockStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := checkListenersFree(opts); err != nil {
		unlockStore(lock)
		return nil, err
	}
	if err := checkClusterStore(cfg, opts); err != nil {
		unlockStore(lock)
		return nil, err
	}
	logs := &logAdapter{log: cfg.Logger, fatal: make(chan string, 1), writeFailed: make(chan string, 1), logins: loginNames(cfg)}
	ns, err := launch(opts, logs, cfg.ReadyTimeout, cfg.Reading, cfg.Stop)
	if err != nil {
		logs.close()
		unlockStore(lock)
		return nil, err
	}
	// A client certificate the CA signed is a login too, but one that
	// may do everything; TLS alone is none.
	if !opts.DontListen && internal == nil && cfg.TLS.Verify && !isLoopback(opts.Host) && cfg.Logger != nil {
		cfg.Logger.Warn("NATS lets every client whose certificate nats.tls.ca signed do everything, apps given one included: any of them can deploy; set [nats] users or nkeys, and give apps a login with role \"app\", presented with their certificate",
			"listen", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)))
	}
	if !opts.DontListen && internal == nil && !cfg.TLS.Verify && !isLoopback(opts.Host) && cfg.Logger != nil {
		cfg.Logger.Warn("NATS accepts clients from the network without authentication: whoever reaches this port reads the requests the gateway sends and answers them in apps' place, deletes apps, and deploys them to runners that run unsigned specs; set [nats] users or nkeys, or listen on 127.0.0.1",
			"listen", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)))
	}
	if cfg.Cluster.Listen != "" && opts.Cluster.Username == "" && !cfg.Cluster.TLS.set() && !isLoopback(opts.Cluster.Host) && cfg.Logger != nil {
		cfg.Logger.Warn("NATS accepts routes from the network without authentication: whoever reaches this port joins the cluster and reads and publishes everything; set [nats.cluster] user and password",
			"cluster_listen", net.JoinHostPort(opts.Cluster.Host, strconv.Itoa(opts.Cluster.Port)))
	}
	if cfg.Leafnodes.Listen != "" && internal == nil && cfg.Leafnodes.TLS.Verify && !isLoopback(opts.LeafNode.Host) && cfg.Logger != nil {
		cfg.Logger.Warn("NATS lets every holder of a certificate nats.leafnodes.tls.ca signed join as a leaf node, apps given one included, and read the requests the gateway sends and answer them in apps' place; give that CA to leaf devices only, or set [nats] users or nkeys, which a leaf then logs in with",
			"leafnodes_listen", net.JoinHostPort(opts.LeafNode.Host, strconv.Itoa(opts.LeafNode.Port)))
	}
	if cfg.Leafnodes.Listen != "" && internal == nil && !cfg.Leafnodes.TLS.Verify && !isLoopback(opts.LeafNode.Host) && cfg.Logger != nil {
		// nats-server denies a leaf the JetStream API, $KV and $OBJ, but
		// not the API under this server's domain prefix, which a domain
		// maps to it: only then does the leaf reach the store.
		store := ""
		if cfg.JetStreamDomain != "" {
			store = ", and through the JetStream domain deletes apps and deploys them to runners that run unsigned specs"
		}
		cfg.Logger.Warn("NATS accepts leaf nodes from the network without authentication: whoever reaches this port joins as a leaf, reads the requests the gateway sends and answers them in apps' place"+store+"; set [nats] users or nkeys, which a leaf then logs in with, or [nats.leafnodes] listen on 127.0.0.1",
			"leafnodes_listen", net.JoinHostPort(opts.LeafNode.Host, strconv.Itoa(opts.LeafNode.Port)))
	}
	if cfg.Cluster.Listen != "" {
		if err := rememberServerName(opts.StoreDir, cfg.ServerName); err != nil && cfg.Logger != nil {
			cfg.Logger.Warn("server_name not recorded beside the JetStream store: a later start on it under another name will not be refused", "err", err)
		}
	}
	s := &Server{ns: ns, cfg: cfg, internal: internal, internalHash: internalPassword(opts), lock: lock, logs: logs, certs: certs,
		storeLimit: opts.JetStreamMaxStore, ports: boundPortsOf(ns), monitorPort: opts.HTTPPort}
	certs.reload = s.reloadTLS
	certs.start(cfg.Logger)
	return s, nil
}

// Check says whether Start would accept cfg, as the NATS server judges
// it too, without listening or writing anything: what an operator checks
// before a restart, and the applets before they make the data dir. Of the store it only lists the streams, which tells a
// standalone one made a cluster member. A taken port or a store in use is
// found only by Start.
//
// It names every problem, joined: those of the options, then the store's,
// which needs only the data dir. The server judges only options narun
// took, lest it name again, in its words, a value narun refused.
func Check(cfg Config) error {
	opts, _, problems := serverOptions(cfg, &certKeeper{})
	if opts == nil {
		return errors.Join(problems...)
	}
	if len(problems) == 0 {
		if _, err := server.NewServer(opts); err != nil {
			problems = append(problems, fmt.Errorf("configure nats server: %w", loginsHidden{err}))
		}
	}
	return errors.Join(append(problems, checkClusterStore(cfg, opts))...)
}

// checkClusterStore refuses to make a cluster member of a data dir whose
// store a server that ran alone wrote.
func checkClusterStore(cfg Config, opts *server.Options) error {
	if cfg.Cluster.Listen == "" {
		return nil
	}
	if streams := standaloneStreams(opts.StoreDir); len(streams) > 0 {
		return &KeyError{Key: "nats.cluster.listen", Err: fmt.Errorf("set, but the data dir %s holds the JetStream store of a server that ran alone (streams %s): a cluster member does not see those streams, and narun would create empty buckets in their place; join with an empty data dir and deploy again, or move %s away (docs/CLUSTER.md, \"From one device to a cluster\")",
			cfg.DataDir, strings.Join(streams, ", "), opts.StoreDir)}
	}
	// JetStream knows a member by its server_name and counts every name it
	// has seen for good: under another name the store's server joins as
	// one more member, its former name stays counted as a member down, and
	// removing it is a request of the system account, which narun gives no
	// login. A quorum of four then needs three of three devices.
	if was := storeServerName(opts.StoreDir); was != "" && was != cfg.ServerName {
		return &KeyError{Key: "nats.server_name", Err: fmt.Errorf("%q, but the data dir %s holds the JetStream store of cluster member %q: under a new name JetStream would count this server as one more member, and %q as one down for good, which narun cannot remove, so the cluster would tolerate one failure fewer; start it as %q again, or move %s away to join under the new name with an empty store (docs/CLUSTER.md, \"Adding, replacing and retiring members\")",
			cfg.ServerName, cfg.DataDir, was, was, was, opts.StoreDir)}
	}
	return nil
}

// serverNameFile, in the store dir beside nats-server's own directory,
// names the cluster member that runs on the store.
const serverNameFile = "narun-server-name"

// storeServerName is the server_name of the cluster member that last ran
// on the store in storeDir; "" when none did, or before narun wrote it.
func storeServerName(storeDir string) string {
	b, err := os.ReadFile(filepath.Join(storeDir, serverNameFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// rememberServerName records name as the member that runs on the store in
// storeDir, for checkClusterStore at the next start.
func rememberServerName(storeDir, name string) error {
	if storeServerName(storeDir) == name {
		return nil
	}
	return writeFileSynced(filepath.Join(storeDir, serverNameFile), []byte(name+"\n"), 0o600)
}

// writeFileSynced replaces path with data through a temporary file that is
// synced before it is renamed into place, and syncs the directory after:
// renamed unsynced, the file could be empty after a power cut, which
// storeServerName reads as no name at all, letting a start under another
// name through, or be missing. The temporary file's name is fixed, as the
// caller holds the store's lock: a write cut short leaves one file that
// the next write replaces, and a write that fails removes it.
func writeFileSynced(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	err := writeSyncedTemp(tmp, data, perm)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err == nil {
		err = dir.Sync()
		_ = dir.Close()
	}
	if err != nil {
		return fmt.Errorf("sync the directory of %s: %w", path, err)
	}
	return nil
}

func writeSyncedTemp(tmp string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// launch starts a server with opts and waits until it accepts clients, or
// until stop is closed.
func launch(opts *server.Options, logs *logAdapter, timeout time.Duration, reading func(), stop <-chan struct{}) (*server.Server, error) {
	// Without a configured storage limit, the limit is set from the space
	// free at start (storeLimit): on a full disk it leaves no room, and
	// stays so once the space is back. Its refusals then call for a
	// restart as a failed write does.
	free := freeSpace(opts.StoreDir)
	logs.limitFromFullDisk.Store(opts.JetStreamMaxStore == 0 && free < MinStoreRoom)
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = storeLimit(opts.StoreDir, free)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure nats server: %w", loginsHidden{err})
	}
	ns.SetLoggerV2(logs, opts.Debug, false, false)
	go ns.Start()
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	// A server that gave up (an unusable store, say) never gets ready: its
	// fatal message ends the wait at once, not the timeout. JetStream reads
	// its store before the server accepts clients, and after a power cut
	// rebuilds the indexes of every stream, which on a device's SD card
	// takes many seconds per GiB: that is waited for, or the node would
	// be stopped in the middle of it at every start, and never start.
	deadline := time.Now().Add(timeout)
	var readingSince, noticed time.Time
	for !ns.ReadyForConnections(25 * time.Millisecond) {
		select {
		case msg := <-logs.fatal:
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("start nats server: %s", msg)
		case <-stop:
			// A stop asked for while JetStream reads its store (minutes
			// after a power cut) is not left until the read ends, or to
			// a service manager's kill at its stop timeout: the server
			// shuts down at once, as from a read that failed, and the
			// next start reads the store again.
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, ErrStopped
		default:
		}
		if ns.JetStreamEnabled() {
			if readingSince.IsZero() {
				readingSince, noticed = time.Now(), time.Now()
			} else if time.Since(noticed) >= readingNotice {
				noticed = time.Now()
				if logs.log != nil {
					logs.log.Info("JetStream is still reading its store; the server accepts clients once it has",
						"store_dir", opts.StoreDir, "for", time.Since(readingSince).Round(time.Second).String())
				}
				if reading != nil {
					reading()
				}
			}
			continue
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("start nats server: not ready for connections after %s", timeout)
		}
	}
	return ns, nil
}

// readingNotice is how often launch says that JetStream still reads its
// store, so that a start that takes minutes is seen to be working.
const readingNotice = 10 * time.Second

// The server pings each client and route every pingInterval and closes
// one that leaves maxPingsOut pings unanswered.
const (
	pingInterval = 2 * time.Second
	maxPingsOut  = 3
)

// RouteStaleAfter bounds how long a route to a server that went away
// without closing it (a power cut, a pulled cable) stays connected.
const RouteStaleAfter = pingInterval * (maxPingsOut + 1)

// MinStoreRoom is the free space below which a start gives JetStream too
// small a storage limit to write, and which WriteFailed's receiver should
// wait for before Restart.
const MinStoreRoom = 8 << 20

// freeSpace is the space an unprivileged process may still write in the
// file system that holds dir, or of its nearest existing parent; the
// largest value when no file system answers, which asks for nothing.
func freeSpace(dir string) uint64 {
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err == nil {
			return st.Bavail * uint64(st.Bsize)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return math.MaxUint64
		}
		dir = parent
	}
}

// storeLimit is the storage limit of a server whose configuration sets
// none: what its store holds and three quarters of the space free.
// nats-server's own default is the three quarters alone, which leaves out
// the store: once it holds more than that (a store that grew over the
// device's life, a disk nearly full, the restart after a full disk), every
// write is refused with "resource limits exceeded", heartbeats and
// deploys included, at every start, however much room is left.
func storeLimit(storeDir string, free uint64) int64 {
	if free == math.MaxUint64 {
		// No file system answered: nats-server's default.
		return 0
	}
	var held uint64
	_ = filepath.WalkDir(storeDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			held += uint64(info.Size())
		}
		return nil
	})
	return int64(min(held+free/4*3, math.MaxInt64))
}

// FreeSpace is the space left for the store of a server on dataDir.
func FreeSpace(dataDir string) uint64 { return freeSpace(dataDir) }

// WriteFailed receives the first error with which the JetStream store
// failed a write (a full disk, an I/O error) since the server started,
// or the first refusal for its storage limit when that limit was set from
// a disk with less than MinStoreRoom free.
// nats-server refuses every later write of that stream, or all of them,
// until it restarts: Restart is the way back once the cause is gone.
func (s *Server) WriteFailed() <-chan string { return s.logs.writeFailed }

// Restart replaces the server by a new one with the same configuration
// and ports, which reopens the JetStream store. In-process connections
// reconnect to it by themselves, as TCP clients do; the data dir stays
// locked throughout.
func (s *Server) Restart() error {
	// The running keeper's pairs and CAs, not the files as they are now:
	// a renewal caught half-written must not fail the restart.
	opts, _, problems := serverOptions(s.cfg, s.certs)
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keepRuntime(opts)
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	select {
	case <-s.logs.writeFailed:
	default:
	}
	ns, err := launch(opts, s.logs, s.cfg.ReadyTimeout, s.cfg.Reading, s.cfg.Stop)
	if err != nil {
		return fmt.Errorf("restart nats server: %w", err)
	}
	s.ns, s.storeLimit, s.monitorPort = ns, opts.JetStreamMaxStore, opts.HTTPPort
	return nil
}

// keepRuntime gives opts what the running server chose at its start: the
// ports of its listeners of ":0", which clients, leaf nodes and routes
// know, and the in-process login, which in-process connections present.
func (s *Server) keepRuntime(opts *server.Options) {
	for _, kept := range []struct {
		port  *int
		bound int
	}{
		{&opts.Port, s.ports.client},
		{&opts.Cluster.Port, s.ports.cluster},
		{&opts.LeafNode.Port, s.ports.leaf},
		{&opts.HTTPPort, s.ports.monitor},
	} {
		if kept.bound != 0 {
			*kept.port = kept.bound
		}
	}
	if s.internal != nil {
		for _, u := range opts.Users {
			if u.Username == internalUser {
				u.Password = s.internalHash
			}
		}
	}
}

// internalPassword is what opts give the server of the in-process
// login's password, "" without one.
func internalPassword(opts *server.Options) string {
	for _, u := range opts.Users {
		if u.Username == internalUser {
			return u.Password
		}
	}
	return ""
}

// internalHash is what the server is given of the in-process login's
// password: nats-server warns at every start of a plaintext password
// ("use nkeys or bcrypt"), which the operator, whose logins may all be
// hashed, could not make go. The password is random, so the least cost
// loses nothing, and keeps each in-process connection's check to about a
// millisecond.
func internalHash(password string) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash the in-process login: %w", err)
	}
	return string(hash), nil
}

// reloadTLS gives the running server TLS configurations built with the
// CAs as now kept. Connections open stay, checked as they were.
func (s *Server) reloadTLS() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts, _, problems := serverOptions(s.cfg, s.certs)
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	s.keepRuntime(opts)
	opts.JetStreamMaxStore, opts.HTTPPort = s.storeLimit, s.monitorPort
	if err := s.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload nats server options: %w", err)
	}
	return nil
}

// lockStore takes the data dir's lock on its JetStream store, held until
// Shutdown. nats-server takes none: a second narun nats or narun up on the
// same data dir would open the store the first one is writing, and
// rebuild it under it.
func lockStore(dataDir string) (*os.File, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock the JetStream store of %s: %w", dataDir, err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, storeLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the JetStream store of %s: %w", dataDir, err)
	}
	if err := flockStore(dataDir, f); err != nil {
		return nil, err
	}
	return f, nil
}

// storeLockFile, in the data dir, is locked by the server that runs on its
// JetStream store.
const storeLockFile = "nats.lock"

// flockStore takes the lock of the store whose lock file f is, or closes f
// and says which data dir another server holds.
func flockStore(dataDir string, f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("data dir %s: its JetStream store is in use by another narun nats or narun up (%s is locked): %w", dataDir, f.Name(), err)
	}
	return nil
}

// standaloneStreams names the streams in storeDir of a server that never
// ran as a cluster member, which has no JetStream meta group there.
// nats-server started as a member recovers them from disk but leaves them
// out of the cluster's meta data, so that no client sees them, and deletes
// them as orphans once it is current with a meta leader: a device that
// joins a cluster with the data of its time alone loses its specs,
// binaries and secrets, and its runner stops the apps.
func standaloneStreams(storeDir string) []string {
	root := filepath.Join(storeDir, server.JetStreamStoreDir)
	if _, err := os.Stat(filepath.Join(root, "$SYS", "_js_", "_meta_")); err == nil {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "*", "streams", "*"))
	var streams []string
	for _, d := range dirs {
		streams = append(streams, filepath.Base(d))
	}
	return streams
}

// CheckStoreFree refuses a data dir whose JetStream store a running narun
// nats or narun up holds, as Start would, for a caller that probes its
// other listeners before Start. It takes the lock and releases it at once,
// and makes nothing: a data dir without the lock file has no server.
func CheckStoreFree(dataDir string) error {
	f, err := os.OpenFile(filepath.Join(dataDir, storeLockFile), os.O_RDWR, 0)
	if err != nil {
		// Missing or unreadable: Start, which makes it, says why.
		return nil
	}
	if err := flockStore(dataDir, f); err != nil {
		return err
	}
	unlockStore(f)
	return nil
}

// unlockStore releases the lock lockStore took. Closing the file alone
// would not: a process that another goroutine is starting holds a copy of
// the descriptor, and with it the lock, until it execs, and a server
// started on the data dir right after was refused.
func unlockStore(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClosedConnectionsKept is how many closed client connections the server
// keeps, with their subscriptions, for its monitoring's
// /connz?state=closed. nats-server keeps 10000 by default, about 10 MB
// (more than the idle heap of narun up) once every narun ctl call and app
// restart has added one; the latest hundred tell an operator who went.
const ClosedConnectionsKept = 100

// serverOptions turns cfg into the server's options. It returns every
// problem it finds, not only the first, so that one --check names them
// all; a check that needs a value refused is not made. The options come
// back with the problems, unless the data dir is missing: the store dir
// that checkClusterStore reads is set.
func serverOptions(cfg Config, certs *certKeeper) (*server.Options, *User, []error) {
	if cfg.DataDir == "" {
		return nil, nil, []error{errors.New("embedded nats: a data dir is required for JetStream")}
	}
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "jetstream"),
		JetStreamMaxMemory: cfg.JetStreamMaxMemory,
		JetStreamMaxStore:  cfg.JetStreamMaxStore,
		JetStreamDomain:    cfg.JetStreamDomain,
		SyncInterval:       cfg.JetStreamSyncInterval,
		MaxPayload:         1 << 20,
		MaxClosedClients:   ClosedConnectionsKept,
		NoSigs:             true,
		NoLog:              cfg.Logger == nil,
		// The server formats its debug lines only when told to: a logger
		// that takes debug records would otherwise never see them.
		// Trace, every protocol line of every connection, has no level
		// of its own to be asked for with, and stays off.
		Debug: cfg.Logger != nil && cfg.Logger.Enabled(context.Background(), slog.LevelDebug),
		// Edge links fail silently (a pulled cable sends no FIN): the
		// default two minutes of pings would leave a partitioned node
		// believing in its routes, and its clients in it, for that long.
		PingInterval: pingInterval,
		MaxPingsOut:  maxPingsOut,
	}
	var errs []error
	refuse := func(key string, err error) { errs = append(errs, &KeyError{Key: key, Err: err}) }
	// nats-server refuses these too, but without the key.
	if strings.Contains(cfg.ServerName, " ") {
		refuse("nats.server_name", fmt.Errorf("%q: must not contain spaces", cfg.ServerName))
	}
	if d := cfg.JetStreamDomain; d != "" && (strings.ContainsAny(d, ".*>") || !server.IsValidSubject("$JS."+d+".API.>")) {
		refuse("nats.jetstream.domain", fmt.Errorf("%q: want a NATS subject token: no spaces, '.', '*' or '>'", d))
	}
	// JetStream reserves narun's log history (at least 1 MiB) within the
	// limit, and a deploy stores its binaries there: with less, no deploy
	// could ever work, which a start would show only as "insufficient
	// storage resources" at every retry of the runner.
	if cfg.JetStreamMaxStore > 0 && cfg.JetStreamMaxStore < MinStoreRoom {
		refuse("nats.jetstream.max_store", fmt.Errorf("want at least %d MiB (narun's log history and the binaries of a deploy are stored within it), got %d bytes", MinStoreRoom>>20, cfg.JetStreamMaxStore))
	}
	if cfg.MaxPayload > 0 {
		// Below 256 KiB the server starts but narun cannot work on it:
		// Object Store puts binaries in 128 KiB chunks, which with their
		// headers would not fit, and deploys would fail on every node.
		if cfg.MaxPayload < 256<<10 || cfg.MaxPayload > 64<<20 {
			refuse("nats.max_payload", fmt.Errorf("want 256 KiB to 64 MiB, got %d bytes", cfg.MaxPayload))
		} else {
			opts.MaxPayload = int32(cfg.MaxPayload)
		}
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else if host, port, err := splitHostPort("nats.listen", cfg.Listen); err != nil {
		errs = append(errs, err)
	} else {
		opts.Host, opts.Port = host, port
	}
	if cfg.TLS.set() {
		if cfg.Listen == "" {
			refuse("nats.tls", errors.New("set, but nats.listen is empty: there is no client port to require TLS on"))
		} else if tc, err := cfg.TLS.config("nats.tls", tlsListener, certs); err != nil {
			errs = append(errs, err)
		} else {
			opts.TLS, opts.TLSConfig, opts.TLSVerify = true, tc, cfg.TLS.Verify
		}
	}
	if cfg.HTTPListen != "" {
		if host, port, err := splitHostPort("nats.http_listen", cfg.HTTPListen); err != nil {
			errs = append(errs, err)
		} else {
			opts.HTTPHost, opts.HTTPPort = host, port
		}
	}
	if cfg.Cluster.Listen == "" && len(cfg.Cluster.Routes) > 0 {
		// The server would run alone, quietly: routes need a route port.
		refuse("nats.cluster.routes", errors.New("set, but nats.cluster.listen is empty: without a route address the server joins no cluster; set nats.cluster.listen (--cluster-listen), e.g. 0.0.0.0:6222"))
	}
	if cfg.Cluster.Listen == "" && cfg.Cluster.TLS.set() {
		refuse("nats.cluster.tls", errors.New("set, but nats.cluster.listen is empty: there are no routes to carry over TLS"))
	}
	if cfg.Cluster.Listen != "" {
		errs = append(errs, clusterOptions(cfg, opts, certs)...)
	}
	if cfg.Leafnodes.Listen != "" {
		if host, port, err := splitHostPort("nats.leafnodes.listen", cfg.Leafnodes.Listen); err != nil {
			errs = append(errs, err)
		} else {
			opts.LeafNode.Host, opts.LeafNode.Port = host, port
		}
		if cfg.Leafnodes.TLS.set() {
			var err error
			if opts.LeafNode.TLSConfig, err = cfg.Leafnodes.TLS.config("nats.leafnodes.tls", tlsListener, certs); err != nil {
				errs = append(errs, err)
			}
		}
	} else if cfg.Leafnodes.TLS.set() {
		refuse("nats.leafnodes.tls", errors.New("set, but nats.leafnodes.listen is empty: there is no leaf port to require TLS on (a remote's TLS goes in its own tls table)"))
	}
	for i, r := range cfg.Leafnodes.Remotes {
		remote, problems := leafRemote(i, r, cfg.Leafnodes.Local, certs)
		errs = append(errs, problems...)
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, remote)
	}
	if len(cfg.Users) == 0 && len(cfg.NKeys) == 0 {
		return opts, nil, errs
	}
	// The server keeps the last of two logins with one name: the
	// other would quietly lose its password or its permissions.
	users := map[string]bool{}
	for i, u := range cfg.Users {
		switch {
		case u.User == "" || u.Password == "":
			refuse(fmt.Sprintf("nats.users[%d]", i), errors.New("every user needs a user name and a password"))
		case u.User == internalUser:
			refuse(fmt.Sprintf("nats.users[%d].user", i), fmt.Errorf("user name %q is reserved for narun's in-process connections", u.User))
		case users[u.User]:
			refuse(fmt.Sprintf("nats.users[%d].user", i), fmt.Errorf("user %q is listed twice", u.User))
		default:
			users[u.User] = true
			opts.Users = append(opts.Users, &server.User{Username: u.User, Password: u.Password, Permissions: u.Permissions.server()})
		}
	}
	keys := map[string]bool{}
	for _, k := range cfg.NKeys {
		if keys[k.PublicKey] {
			refuse(cmp.Or(k.Key, "nats.nkeys"), fmt.Errorf("%s is listed twice in nats.nkeys and nats.app_nkeys", k.PublicKey))
			continue
		}
		keys[k.PublicKey] = true
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k.PublicKey, Permissions: k.Permissions.server()})
	}
	if len(errs) > 0 {
		return opts, nil, errs
	}
	internal := &User{User: internalUser, Password: rand.Text()}
	hash, err := internalHash(internal.Password)
	if err != nil {
		return nil, nil, []error{err}
	}
	opts.Users = append(opts.Users, &server.User{Username: internal.User, Password: hash})
	return opts, internal, nil
}

// clusterOptions sets opts' cluster and routes from cfg, whose
// nats.cluster.listen is set, and returns every problem of them.
func clusterOptions(cfg Config, opts *server.Options, certs *certKeeper) []error {
	var errs []error
	refuse := func(key string, err error) { errs = append(errs, &KeyError{Key: key, Err: err}) }
	host, port, err := splitHostPort("nats.cluster.listen", cfg.Cluster.Listen)
	if err != nil {
		errs = append(errs, err)
	}
	if (cfg.Cluster.User == "") != (cfg.Cluster.Password == "") {
		refuse("nats.cluster", errors.New("set both nats.cluster.user and nats.cluster.password, or neither"))
	} else if cfg.Cluster.User == "" && (len(cfg.Users) > 0 || len(cfg.NKeys) > 0) {
		// nats-server accepts any route when the cluster has no user: with
		// client logins on, whoever reaches the cluster port would join as a
		// route and read and publish everything, deploys included. Route
		// TLS does not stand for it: one CA often signs the clients' and
		// apps' certificates too, and any of those would join.
		refuse("nats.cluster.listen", errors.New("set with nats.users or nats.nkeys, but routes would need no login: set nats.cluster.user and nats.cluster.password (the same on every member)"))
	}
	// nats-server refuses a name with a space too, but without the key.
	if strings.Contains(cfg.Cluster.Name, " ") {
		refuse("nats.cluster.name", fmt.Errorf("%q: must not contain spaces", cfg.Cluster.Name))
	}
	opts.Cluster = server.ClusterOpts{Name: cfg.Cluster.Name, Host: host, Port: port,
		Username: cfg.Cluster.User, Password: cfg.Cluster.Password}
	if cfg.Cluster.TLS.set() {
		if opts.Cluster.TLSConfig, err = cfg.Cluster.TLS.config("nats.cluster.tls", tlsRoute, certs); err != nil {
			errs = append(errs, err)
		}
	}
	routes, refused := parseURLs("nats.cluster.routes", cfg.Cluster.Routes)
	errs = append(errs, refused...)
	// nats-server logs in to a configured route with the URL's user
	// info only; routes it learns from its peers get the cluster's.
	for _, u := range routes {
		// nats-server dials a route without a port as written and
		// fails ("missing port in address") at every retry, for as
		// long as it runs: unlike a leaf URL's, it has no default.
		if u.Port() == "" {
			eg := url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(u.Hostname(), "6222")}
			refuse("nats.cluster.routes", fmt.Errorf("%q: no port: want nats-route://host:port, e.g. %s", redacted(u), eg.String()))
			continue
		}
		if u.User == nil && cfg.Cluster.User != "" {
			u.User = url.UserPassword(cfg.Cluster.User, cfg.Cluster.Password)
		}
	}
	opts.Routes = routes
	// nats-server refuses both as well, but without the file's line.
	if cfg.ServerName == "" {
		refuse("nats.cluster.listen", errors.New("set, but nats.server_name is empty: a cluster member needs a name of its own, unique in the cluster and the same at every start (--server-name)"))
	}
	if cfg.Cluster.Name == "" {
		refuse("nats.cluster.listen", errors.New("set, but nats.cluster.name is empty: set it, the same on every member (--cluster-name)"))
	}
	if len(cfg.Cluster.Routes) == 0 {
		refuse("nats.cluster.listen", errors.New("set, but nats.cluster.routes is empty: list the route address of every member, its own included (--routes)"))
	}
	// nats-server opens the route port only once its client port
	// listens: without one it never does, the server never gets
	// ready, and its shutdown waits for the route port for ever.
	if cfg.Listen == "" {
		refuse("nats.cluster.listen", errors.New("set, but nats.listen is empty: nats-server opens the route port only once it listens for clients, so the member would never start; set nats.listen (127.0.0.1:4222 keeps clients on this device)"))
	}
	return errs
}

// leafRemote is the server's options for cfg's remote i, and every
// problem of it.
func leafRemote(i int, r LeafRemote, local []string, certs *certKeeper) (*server.RemoteLeafOpts, []error) {
	key := fmt.Sprintf("nats.leafnodes.remotes[%d]", i)
	urls, errs := parseURLs(key+".urls", r.URLs)
	if len(r.URLs) == 0 {
		errs = append(errs, &KeyError{Key: key, Err: errors.New("at least one url is required")})
	}
	// The server takes any remote and, at run time, only logs that it
	// cannot connect, for ever: a typo must fail the start instead.
	for _, u := range urls {
		switch u.Scheme {
		case "nats-leaf", "nats", "tls", "ws", "wss":
		default:
			errs = append(errs, &KeyError{Key: key + ".urls", Err: fmt.Errorf("%q: scheme %q, want nats-leaf, nats, tls, ws or wss", redacted(u), u.Scheme)})
		}
	}
	if r.Credentials != "" {
		if err := checkCredentials(r.Credentials); err != nil {
			errs = append(errs, &KeyError{Key: key + ".credentials", Err: err})
		}
	}
	remote := &server.RemoteLeafOpts{
		URLs:        urls,
		Credentials: r.Credentials,
		DenyImports: local,
		DenyExports: local,
	}
	if r.TLS.set() {
		var err error
		if remote.TLSConfig, err = r.TLS.config(key+".tls", tlsRemote, certs); err != nil {
			errs = append(errs, err)
		}
		remote.TLS = true
	}
	// nats-server takes tls:// for nats-leaf:// and goes without
	// TLS to a hub that offers none: the link and its login would
	// cross in clear text where the file asked for TLS.
	if slices.ContainsFunc(urls, func(u *url.URL) bool { return u.Scheme == "tls" }) {
		remote.TLS = true
	}
	return remote, errs
}

// credsBlock is nats-server's reading of a credentials file (credsRe in
// its leafnode.go): the user JWT, then the nkey seed, each between lines
// of dashes.
var credsBlock = regexp.MustCompile(`\s*(?:(?:[-]{3,}.*[-]{3,}\r?\n)([\w\-.=]+)(?:\r?\n[-]{3,}.*[-]{3,}(\r?\n|\z)))`)

// checkCredentials refuses a leaf remote's credentials file that
// nats-server could not log in with: it reads it only at each connection
// to the hub, and logs and retries for as long as it runs. The error
// never quotes the file, which holds a seed.
func checkCredentials(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	items := credsBlock.FindAllSubmatch(contents, -1)
	if len(items) < 2 {
		return fmt.Errorf("%s: not a credentials file: want the user JWT and its nkey seed, each between lines of dashes, as nsc generate creds writes them", path)
	}
	kp, err := nkeys.FromSeed(items[1][1])
	if err != nil {
		return fmt.Errorf("%s: the nkey seed after the JWT does not decode: %w", path, err)
	}
	kp.Wipe()
	return nil
}

// KeyError is a configuration value the server refuses. Key names the
// value as narun.toml does ("nats.max_payload", or "nats.cluster" for a
// pair of its keys), so that a caller that read it from a file can say
// where.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }

func (e *KeyError) Unwrap() error { return e.Err }

func splitHostPort(key, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, &KeyError{Key: key, Err: fmt.Errorf("%q: want host:port: %w%s", addr, err, BracketHint(addr))}
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, &KeyError{Key: key, Err: fmt.Errorf("%q: invalid port", addr)}
	}
	if !ListenableHost(host) {
		return "", 0, &KeyError{Key: key, Err: fmt.Errorf("%q: host %q is neither an IP address nor a host name", addr, host)}
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		// Any free port, as with net.Listen: nats-server would read 0
		// as its default port and take 4222 from whatever else runs.
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// parseURLs parses raw, refusing every URL that does not parse; those
// that do come back with the refusals, for the checks of their own.
func parseURLs(key string, raw []string) ([]*url.URL, []error) {
	var urls []*url.URL
	var errs []error
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf("invalid url %q%s", RedactURLs(r), zoneHint(r))})
			continue
		}
		urls = append(urls, u)
	}
	return urls, errs
}

// BracketHint is what to add to the error of an address an IPv6 address
// and a port make without brackets ("::1:4222", which net.SplitHostPort
// refuses with "too many colons"): how to write it, else "".
func BracketHint(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 || strings.ContainsAny(addr, "[]") {
		return ""
	}
	if ip, err := netip.ParseAddr(addr[:i]); err != nil || !ip.Is6() {
		return ""
	}
	return fmt.Sprintf(" (an IPv6 address takes brackets: %q)", "["+addr[:i]+"]:"+addr[i+1:])
}

// zoneHint is what to add to the error of a URL whose IPv6 address has
// its zone's '%' unescaped ("[fe80::1%eth0]"), which a URL writes %25:
// how to write it, else "".
func zoneHint(raw string) string {
	_, rest, ok := strings.Cut(raw, "[")
	addr, _, closed := strings.Cut(rest, "]")
	ip, zone, zoned := strings.Cut(addr, "%")
	if !ok || !closed || !zoned || strings.HasPrefix(zone, "25") {
		return ""
	}
	// Brackets in a password are no address: never quote one.
	if a, err := netip.ParseAddr(ip); err != nil || !a.Is6() {
		return ""
	}
	return fmt.Sprintf(" (a URL writes the zone's %% as %%25: [%s%%25%s])", ip, zone)
}

// checkListenersFree reports every taken port of the server's listeners
// before the server tries them, because the server itself would only log
// the failure, in words that name no key, and never become ready (the
// client port) or give up (the others).
func checkListenersFree(opts *server.Options) error {
	var taken []error
	if !opts.DontListen {
		taken = append(taken, checkFree("nats.listen", opts.Host, opts.Port))
	}
	for _, l := range []struct {
		key  string
		host string
		port int
	}{
		{"nats.http_listen", opts.HTTPHost, opts.HTTPPort},
		{"nats.cluster.listen", opts.Cluster.Host, opts.Cluster.Port},
		{"nats.leafnodes.listen", opts.LeafNode.Host, opts.LeafNode.Port},
	} {
		taken = append(taken, checkFree(l.key, l.host, l.port))
	}
	return errors.Join(taken...)
}

// checkFree reports host:port taken, as an error of key; a port the
// kernel picks (or none) is never taken.
func checkFree(key, host string, port int) error {
	if port <= 0 {
		return nil
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return &KeyError{Key: key, Err: fmt.Errorf("listen on %s: %w", addr, err)}
	}
	return l.Close()
}

// ClientURL is the address TCP clients on this machine connect to.
func (s *Server) ClientURL() string {
	addr, ok := s.current().Addr().(*net.TCPAddr)
	if !ok || addr == nil {
		return ""
	}
	return clientURL(addr, s.cfg.Listen)
}

// DialURL is ClientURL as an operator or a client outside narun is given
// it: with the scheme tls:// when the client port requires TLS, as NATS
// URLs write such a port. ClientURL stays nats://: in-process
// connections are named with it, and a tls:// one would have nats.go ask
// the in-process pipe for TLS, which it has none of.
func (s *Server) DialURL() string {
	u := s.ClientURL()
	if s.cfg.TLS.set() {
		u = strings.Replace(u, "nats://", "tls://", 1)
	}
	return u
}

// LeafAddr is the address the server accepts leaf nodes on, with the port
// bound; "" when it accepts none.
func (s *Server) LeafAddr() string {
	if s.cfg.Leafnodes.Listen == "" {
		return ""
	}
	// nats-server writes the port it bound back into its options, which
	// only Varz exports.
	v, err := s.current().Varz(nil)
	if err != nil || v.LeafNode.Port <= 0 {
		return ""
	}
	return net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port))
}

// ClusterAddr is the address the server listens on for routes ("" for
// none), with the port it bound.
func (s *Server) ClusterAddr() string {
	if s.cfg.Cluster.Listen == "" {
		return ""
	}
	v, err := s.current().Varz(nil)
	if err != nil || v.Cluster.Port <= 0 {
		return ""
	}
	return net.JoinHostPort(v.Cluster.Host, strconv.Itoa(v.Cluster.Port))
}

// LocalHost is the host a client on this machine dials to reach a server
// listening on host: host itself, or 127.0.0.1 for an unspecified one (no
// host, 0.0.0.0, ::). The server listens with Go's net.Listen("tcp"),
// which makes a socket on an unspecified address dual-stack (it clears
// IPV6_V6ONLY itself, whatever net.ipv6.bindv6only says), so one on [::]
// accepts 127.0.0.1 as one on 0.0.0.0 does; ::1 would fail where IPv6 is
// off on the loopback (disable_ipv6, as in many containers) though [::]
// still binds. Go also reports a listener on ":4222" as [::]:4222, so the
// two could not be told apart after the start anyway. narun's clients
// (from [nats] listen) and narun up's apps (from the listener) use it, to
// reach one server by one URL.
func LocalHost(host string) string {
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return host
}

// clientURL is the URL of a server listening on addr, as configured by
// listen. A link-local address is reached only through its interface,
// which Go's listener address does not name: the zone comes from listen
// ("[fe80::1%eth0]:4222"), or apps given the URL (narun up's
// app_nats_url) could not connect.
func clientURL(addr *net.TCPAddr, listen string) string {
	host := addr.IP.String()
	switch {
	case addr.IP.IsUnspecified():
		host = LocalHost(host)
	case addr.Zone != "":
		host += "%" + addr.Zone
	default:
		if h, _, err := net.SplitHostPort(listen); err == nil {
			if _, zone, ok := strings.Cut(h, "%"); ok {
				host += "%" + zone
			}
		}
	}
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort(host, strconv.Itoa(addr.Port))}
	return u.String()
}

// Connect opens an in-process client connection, which skips TCP. When
// client authentication is on it logs in with the internal user.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	// No write deadline: on the in-process pipe every flush would arm and
	// stop a timer (an allocation each), and there is no network to hang.
	all := []nats.Option{nats.InProcessServer(s), nats.MaxReconnects(-1), nats.FlusherTimeout(0)}
	if s.internal != nil {
		all = append(all, nats.UserInfo(s.internal.User, s.internal.Password))
	}
	// nats.go dials the in-process pipe whatever the URL; given the listen
	// address, its ConnectedUrl (in logs) names this server, not the
	// default nats://127.0.0.1:4222.
	nc, err := nats.Connect(s.ClientURL(), append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process to nats: %w", err)
	}
	return nc, nil
}

// NATS returns the underlying server, for monitoring and tests.
func (s *Server) NATS() *server.Server { return s.current() }

// Shutdown stops the server; JetStream flushes its store before it returns.
func (s *Server) Shutdown() {
	// The keeper first: a reload must not meet a server shutting down.
	s.certs.close()
	ns := s.current()
	ns.Shutdown()
	ns.WaitForShutdown()
	s.logs.close()
	unlockStore(s.lock)
}
