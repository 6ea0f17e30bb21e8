// Package config loads narun.toml: one file with a table per applet,
// decoded strictly, with the documented defaults filled in.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/nats-io/nkeys"

	"github.com/narun/narun/embednats"
)

// SearchPath is where Find looks for a configuration when none is named.
var SearchPath = []string{"narun.toml", "/etc/narun/narun.toml"}

// File is the whole of narun.toml.
type File struct {
	// DataDir holds JetStream, the binary cache and instance directories.
	DataDir   string `toml:"data_dir"`
	LogLevel  string `toml:"log_level"`
	LogFormat string `toml:"log_format"`

	NATS    NATS    `toml:"nats"`
	Gateway Gateway `toml:"gateway"`
	Runner  Runner  `toml:"runner"`
	Ctl     Ctl     `toml:"ctl"`

	// DataDirWritten is data_dir as the file writes it, when relative:
	// releases before paths were the file's directory's took it from the
	// working directory, where a node's data may still be. Empty when
	// data_dir is absolute or absent, or NARUN_DATA_DIR or --data-dir
	// overrides it.
	DataDirWritten string `toml:"-"`
	// DataDirFromFile says DataDir is the file's data_dir, so that an
	// error about the directory names the line to mend. False for the
	// default, and when NARUN_DATA_DIR or --data-dir overrides it.
	DataDirFromFile bool `toml:"-"`

	// Path is the file this was read from; empty when only defaults apply.
	Path string `toml:"-"`
	// Content is Path's content as read and decoded: a part that watches
	// the file compares with this, not with the file as it finds it when
	// it starts, since an edit made in between is not applied yet.
	Content []byte `toml:"-"`
}

// Client is how an applet reaches NATS.
type Client struct {
	NATSURL string `toml:"nats_url"`
	// NATSURLFrom says which setting NATSURL came from, for an error that
	// shows the URL to say what to change: "--nats-url", "NARUN_NATS_URL",
	// "[ctl] nats_url in PATH", "[nats] listen in PATH" or "[nats.tls] in
	// PATH" (the default listen, over TLS); "" when nothing set it and it
	// is DefaultNATSURL.
	NATSURLFrom string `toml:"-"`
	NATSCreds   string `toml:"nats_creds"`
	NATSNkey    string `toml:"nats_nkey"`
	// NATSCA is the CA of the servers' certificates, for a server that
	// requires TLS; NATSCert and NATSKey are the client's own, for one
	// that verifies clients.
	NATSCA   string `toml:"nats_ca"`
	NATSCert string `toml:"nats_cert"`
	NATSKey  string `toml:"nats_key"`
}

// NATS configures the embedded server.
type NATS struct {
	Listen     string `toml:"listen"`
	ServerName string `toml:"server_name"`
	MaxPayload Size   `toml:"max_payload"`
	// HTTPListen enables the NATS monitoring endpoint; empty disables it.
	HTTPListen string    `toml:"http_listen"`
	JetStream  JetStream `toml:"jetstream"`
	// TLS makes the client port (Listen) require TLS.
	TLS       ListenTLS `toml:"tls"`
	Cluster   Cluster   `toml:"cluster"`
	Leafnodes Leafnodes `toml:"leafnodes"`
	// Users, NKeys and AppNKeys enable client authentication when any is set.
	Users []User `toml:"users"`
	// NKeys are public user nkeys with the admin role, AppNKeys with the app role.
	NKeys    []NKey `toml:"nkeys"`
	AppNKeys []NKey `toml:"app_nkeys"`
}

// NKey is the public key of a user nkey ("U..."), as nk -pubout prints it.
type NKey string

// UnmarshalTOML accepts a public user nkey only: nats-server takes any
// string as one and matches no login to it, so a typo, or a seed pasted
// where its public key belongs, started a server nobody could log in to
// with that key, and put a private key in a file that names no secret.
func (k *NKey) UnmarshalTOML(value any) error {
	v, ok := value.(string)
	if !ok {
		// An nkey is only ever an element of nkeys or app_nkeys.
		return fmt.Errorf("want a list of strings, got a list holding %s", TOMLKind(value))
	}
	if nkeys.IsValidPublicUserKey(v) {
		*k = NKey(v)
		return nil
	}
	if strings.HasPrefix(v, "SU") {
		return errors.New("a user nkey seed, the private half: list its public key (U..., nk -inkey FILE -pubout), and keep the seed with the client")
	}
	return fmt.Errorf("%q is not the public key of a user nkey (U..., 56 characters)", v)
}

// JetStream limits; zero means the server's own defaults.
type JetStream struct {
	MaxMemory Size   `toml:"max_memory"`
	MaxStore  Size   `toml:"max_store"`
	Domain    string `toml:"domain"`
	// SyncInterval is how often the server fsyncs what its streams
	// wrote: each time, every stream's index file, dirty or not (a
	// device cache flush on flash storage).
	SyncInterval Duration `toml:"sync_interval"`
}

// Cluster joins this server to others with routes; empty Listen disables it.
type Cluster struct {
	Name   string   `toml:"name"`
	Listen string   `toml:"listen"`
	Routes []string `toml:"routes"`
	// User and Password are the routes' login, the same on every member;
	// required when Users or NKeys is set.
	User     string `toml:"user"`
	Password string `toml:"password"`
	// TLS carries the routes over TLS, checked both ways.
	TLS PeerTLS `toml:"tls"`
}

// ListenTLS is the certificate a listener presents; with Verify, clients
// must present one CA signed.
type ListenTLS struct {
	Cert   string `toml:"cert"`
	Key    string `toml:"key"`
	CA     string `toml:"ca"`
	Verify bool   `toml:"verify"`
}

// PeerTLS is the certificate a connection to another server presents and
// the CA that signs the other server's, which is always checked.
type PeerTLS struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	CA   string `toml:"ca"`
}

// Leafnodes accepts leaf connections (Listen) and/or connects to hubs (Remotes).
type Leafnodes struct {
	Listen  string       `toml:"listen"`
	Remotes []LeafRemote `toml:"remotes"`
	// TLS makes the leaf port (Listen) require TLS.
	TLS ListenTLS `toml:"tls"`
}

// LeafRemote is a hub this server connects to as a leaf node.
type LeafRemote struct {
	URLs        []string `toml:"urls"`
	Credentials string   `toml:"credentials"`
	// TLS checks the hub's certificate, and may present this leaf's.
	TLS PeerTLS `toml:"tls"`
}

// User is a client login of the embedded server.
type User struct {
	User     string `toml:"user"`
	Password string `toml:"password"`
	// Role is what the login may do; "" is RoleAdmin.
	Role Role `toml:"role"`
}

// Role is what a NATS login may do.
type Role string

const (
	// RoleAdmin may do everything, deploying apps included.
	RoleAdmin Role = "admin"
	// RoleApp may do what an app does, but not publish to narun's state
	// (docs/SECURITY.md, "The app role", says what that does not stop).
	RoleApp Role = "app"
)

// UnmarshalTOML accepts the known roles only: a misspelt role must not
// quietly leave an app's login able to deploy. It takes the TOML value,
// not text: the decoder hands a number to UnmarshalText as text, and
// `role = 5` was refused as the unknown role "5", not as a value of the
// wrong kind.
func (r *Role) UnmarshalTOML(value any) error {
	v, ok := value.(string)
	if !ok {
		return fmt.Errorf("want a string, %q or %q, got %s", RoleAdmin, RoleApp, TOMLKind(value))
	}
	switch Role(v) {
	case RoleAdmin, RoleApp:
		*r = Role(v)
		return nil
	}
	return fmt.Errorf("unknown role %q: want %q or %q", v, RoleAdmin, RoleApp)
}

// Gateway configures the HTTP gateway.
type Gateway struct {
	Client
	Listen      string   `toml:"listen"`
	AdminListen string   `toml:"admin_listen"`
	Timeout     Duration `toml:"timeout"`
	MaxBody     Size     `toml:"max_body"`
	// BodyIdleTimeout bounds each wait for more of a request body, and
	// each write of a response that the client takes nothing of, within
	// the route's timeout, and closes an HTTP/2 connection that takes none
	// of what waits to be written to it; 0 means DefaultBodyIdleTimeout. It
	// follows hot reloads, but for that connection bound, set at the start.
	BodyIdleTimeout Duration `toml:"body_idle_timeout"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// at shutdown; 0 means 15s.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// AccessLog logs one line per request; it follows hot reloads.
	AccessLog bool `toml:"access_log"`
	// MaxConnections bounds the client connections of the HTTP and HTTPS
	// listeners together; 0 means one per 64 KiB of the memory narun may
	// use, from 256 to DefaultMaxConnections.
	MaxConnections Count `toml:"max_connections"`
	// MaxBodyMemory bounds the bytes of request body buffers held at
	// once; 0 means a sixteenth of the memory narun may use.
	MaxBodyMemory Size `toml:"max_body_memory"`
	// TrustedKeys, when set, are the keys one of which must have signed a
	// route entry of narun-routes for the gateway to serve it.
	TrustedKeys []string   `toml:"trusted_keys"`
	TLS         GatewayTLS `toml:"tls"`
	Routes      []Route    `toml:"routes"`
	// RoutesCache is a file that keeps narun-routes' entries as last read,
	// served at the next start until JetStream answers; "" keeps none,
	// except under narun up, which then keeps <data_dir>/routes.json.
	RoutesCache string `toml:"routes_cache"`
}

// GatewayTLS enables HTTPS when Cert and Key are set.
type GatewayTLS struct {
	Listen string `toml:"listen"`
	Cert   string `toml:"cert"`
	Key    string `toml:"key"`
}

// Route maps HTTP requests to a NATS Micro service.
// The same fields, as JSON, are the value format of the narun-routes bucket.
type Route struct {
	Host        string   `toml:"host" json:"host,omitempty"`
	Path        string   `toml:"path" json:"path"`
	Match       string   `toml:"match" json:"match,omitempty"`
	Methods     []string `toml:"methods" json:"methods,omitempty"`
	Service     string   `toml:"service" json:"service"`
	StripPrefix bool     `toml:"strip_prefix" json:"strip_prefix,omitempty"`
	Timeout     Duration `toml:"timeout" json:"timeout,omitempty"`
	MaxBody     Size     `toml:"max_body" json:"max_body,omitempty"`
}

// Runner configures the node agent.
type Runner struct {
	Client
	// NodeID is the id the runner heartbeats under and app specs list in
	// nodes; "" means the host name up to its first dot ("edge-1" of
	// "edge-1.example.com"), with '-' for any character an id may not hold.
	NodeID      string            `toml:"node_id"`
	Labels      map[string]string `toml:"labels"`
	AdminListen string            `toml:"admin_listen"`
	// MasterKeyFile holds the key that decrypts secrets on this node.
	MasterKeyFile     string   `toml:"master_key_file"`
	HeartbeatInterval Duration `toml:"heartbeat_interval"`
	// ResyncInterval is the period of the full reconciliation that backs up
	// the watch of narun-apps.
	ResyncInterval Duration `toml:"resync_interval"`
	// AppNATSURL is the NATS URL given to apps; "" means nats_url.
	AppNATSURL string `toml:"app_nats_url"`
	// AppNATSCreds and AppNATSNkey are credential files given to apps; the
	// runner's own credentials are never passed on.
	AppNATSCreds string `toml:"app_nats_creds"`
	AppNATSNkey  string `toml:"app_nats_nkey"`
	// AppNATSCA, AppNATSCert and AppNATSKey are TLS files given to apps,
	// as nats_ca, nats_cert and nats_key are the runner's.
	AppNATSCA   string `toml:"app_nats_ca"`
	AppNATSCert string `toml:"app_nats_cert"`
	AppNATSKey  string `toml:"app_nats_key"`
	// TrustedKeys, when set, are the keys one of which must have signed a
	// spec of narun-apps for the runner to run it.
	TrustedKeys []string `toml:"trusted_keys"`
}

// Ctl configures the management CLI.
type Ctl struct {
	Client
	MasterKeyFile string   `toml:"master_key_file"`
	Timeout       Duration `toml:"timeout"`
	// SigningKeyFile signs the specs and route entries ctl stores, for
	// runners and gateways with trusted_keys.
	SigningKeyFile string `toml:"signing_key_file"`
	// PruneGrace is how long after its upload (or its last reuse by a
	// deploy), on the NATS server's clock, a build no spec pins is spared
	// by deploy's pruning, so that the build of a concurrent deploy that
	// has not stored its spec yet survives; 0 prunes such builds at once.
	PruneGrace Duration `toml:"prune_grace"`
}

// Defaults returns the configuration used when no file says otherwise.
func Defaults() File {
	return File{
		DataDir:  DefaultDataDir(),
		LogLevel: "info",
		NATS: NATS{
			Listen:     "0.0.0.0:4222",
			MaxPayload: 1 << 20,
			JetStream:  JetStream{SyncInterval: Duration(2 * time.Minute)},
		},
		Gateway: Gateway{
			Client:          Client{NATSURL: DefaultNATSURL},
			Listen:          ":8080",
			AdminListen:     ":9090",
			Timeout:         Duration(30 * time.Second),
			MaxBody:         64 << 20,
			BodyIdleTimeout: Duration(DefaultBodyIdleTimeout),
			ShutdownTimeout: Duration(15 * time.Second),
			TLS:             GatewayTLS{Listen: ":8443"},
		},
		Runner: Runner{
			Client:            Client{NATSURL: DefaultNATSURL},
			AdminListen:       ":9101",
			HeartbeatInterval: Duration(5 * time.Second),
			ResyncInterval:    Duration(30 * time.Second),
		},
		Ctl: Ctl{
			Client:     Client{NATSURL: DefaultNATSURL},
			Timeout:    Duration(15 * time.Second),
			PruneGrace: Duration(time.Hour),
		},
	}
}

// DefaultBodyIdleTimeout is the gateway's body_idle_timeout when none is
// set: as long as a client has for its request head. A client that sends
// nothing of its body, or takes nothing of the response, for that long is
// most likely gone or stalling on purpose, and holds a connection, an
// in-flight request and the service that waits for the body or streams the
// response.
const DefaultBodyIdleTimeout = 10 * time.Second

// DefaultMaxConnections is the most the gateway's max_connections is
// when none is set (it follows the memory narun may use), and what it is
// where that memory is not known: some 80 MiB of idle connections, and
// far from the LimitNOFILE of the README's unit.
const DefaultMaxConnections = 4096

// DefaultNATSURL is where clients look for NATS when nothing else is said.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// DefaultDataDir is /var/lib/narun for root and ./narun-data for anyone else.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/narun"
	}
	return "narun-data"
}

// PortNeedsRoot adds to err, a failure to listen on the address of the
// key key, what a permission error there means: a port below the kernel's
// ip_unprivileged_port_start (1024) takes root or CAP_NET_BIND_SERVICE,
// which a first start by another user lacks. Other errors it returns as
// they are.
func PortNeedsRoot(key string, err error) error {
	if !errors.Is(err, syscall.EACCES) {
		return err
	}
	start := 1024
	if b, rerr := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); rerr == nil {
		if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
			start = n
		}
	}
	return fmt.Errorf("%w: ports below %d need root or CAP_NET_BIND_SERVICE; choose another with key %q or its flag", err, start, key)
}

// Find returns the configuration file to read: explicit if given (it must
// exist), else the first of SearchPath that exists, else "" for defaults.
func Find(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("config file: %w", err)
		}
		return explicit, nil
	}
	for _, p := range SearchPath {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("config file %s: %w", p, err)
		}
	}
	return "", nil
}

// LogFormatOf is the log_format of the configuration named by explicit
// (see Find), read on its own and leniently, for an error found before
// the configuration is loaded (a wrong flag): "" when there is no file, it
// does not say, or it cannot be read.
func LogFormatOf(explicit string) string {
	path, err := Find(explicit)
	if err != nil || path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var f struct {
		LogFormat string `toml:"log_format"`
	}
	if _, err := toml.Decode(string(data), &f); err != nil {
		// log_format is a top-level key, so it comes before the first
		// table: a file that does not parse further on still says it,
		// and the error that it does not parse is then a JSON line too.
		if _, err := toml.Decode(beforeFirstTable(string(data)), &f); err != nil {
			return ""
		}
	}
	return f.LogFormat
}

// beforeFirstTable is the part of a TOML document before its first table
// header.
func beforeFirstTable(doc string) string {
	n := 0
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(strings.TrimSpace(line), "[") {
			break
		}
		n += len(line)
	}
	return doc[:n]
}

// Decode reads data, the content of the configuration file path, over
// the defaults, as DecodeStrict does, and fills in what the file implies
// for the keys it leaves out: a client's nats_url is its [nats] server's
// (LocalURL). A relative path it gives is made one in path's directory.
func Decode(path string, data []byte) (File, toml.MetaData, error) {
	cfg := Defaults()
	md, err := DecodeStrict(path, data, &cfg)
	if err != nil {
		return cfg, md, err
	}
	local, listens := cfg.NATS.LocalURL()
	localFrom := ""
	switch {
	case listens && md.IsDefined("nats", "listen"):
		localFrom = "[nats] listen in " + path
	case local != DefaultNATSURL:
		localFrom = "[nats.tls] in " + path
	}
	for table, client := range map[string]*Client{"gateway": &cfg.Gateway.Client, "runner": &cfg.Runner.Client, "ctl": &cfg.Ctl.Client} {
		if md.IsDefined(table, "nats_url") {
			client.NATSURLFrom = fmt.Sprintf("[%s] nats_url in %s", table, path)
			continue
		}
		client.NATSURL, client.NATSURLFrom = local, localFrom
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return cfg, md, fmt.Errorf("directory of config file %s: %w", path, err)
	}
	paths := cfg.paths()
	if md.IsDefined("data_dir") {
		// Only the file's: the default ./narun-data is the working
		// directory's.
		paths = append(paths, &cfg.DataDir)
		cfg.DataDirFromFile = true
		if !filepath.IsAbs(cfg.DataDir) {
			cfg.DataDirWritten = cfg.DataDir
		}
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return cfg, md, nil
}

// paths are the keys of f that name a file or directory, data_dir aside.
// Read from a file, a relative one is relative to the file's directory,
// as in Prometheus's configuration: a service runs in / (systemd's
// default), not where its configuration is, and the runner hands the
// app_nats_* files to apps that run in instance directories.
func (f *File) paths() []*string {
	client := func(c *Client) []*string {
		return []*string{&c.NATSCreds, &c.NATSNkey, &c.NATSCA, &c.NATSCert, &c.NATSKey}
	}
	n, r := &f.NATS, &f.Runner
	p := []*string{
		&n.TLS.Cert, &n.TLS.Key, &n.TLS.CA,
		&n.Cluster.TLS.Cert, &n.Cluster.TLS.Key, &n.Cluster.TLS.CA,
		&n.Leafnodes.TLS.Cert, &n.Leafnodes.TLS.Key, &n.Leafnodes.TLS.CA,
		&f.Gateway.TLS.Cert, &f.Gateway.TLS.Key, &f.Gateway.RoutesCache,
		&r.MasterKeyFile, &r.AppNATSCreds, &r.AppNATSNkey, &r.AppNATSCA, &r.AppNATSCert, &r.AppNATSKey,
		&f.Ctl.MasterKeyFile, &f.Ctl.SigningKeyFile,
	}
	for i := range n.Leafnodes.Remotes {
		l := &n.Leafnodes.Remotes[i]
		p = append(p, &l.Credentials, &l.TLS.Cert, &l.TLS.Key, &l.TLS.CA)
	}
	p = append(p, client(&f.Gateway.Client)...)
	p = append(p, client(&f.Runner.Client)...)
	return append(p, client(&f.Ctl.Client)...)
}

// LocalURL is the URL a client on this machine reaches the server of n
// at: ctl, a runner or a gateway beside it, which read the same file,
// would otherwise try 4222, where another server or none listens. An
// unspecified host is this machine's loopback as embednats.LocalHost
// says, the one narun up gives its apps for the same listen; TLS on the client port
// makes it a tls:// URL, which refuses a server without it. With no
// address (in-process clients only), or a port the kernel picks at start
// (0, -1), there is none to give: it is DefaultNATSURL, and false says
// so.
func (n NATS) LocalURL() (string, bool) {
	host, port, err := net.SplitHostPort(n.Listen)
	if err != nil || port == "0" || port == "-1" {
		return DefaultNATSURL, false
	}
	host = embednats.LocalHost(host)
	scheme := "nats"
	if n.TLS.Cert != "" {
		scheme = "tls"
	}
	return (&url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}).String(), true
}

// Load reads the configuration named by explicit (see Find) over the
// defaults (see Decode), then applies NARUN_NATS_URL and NARUN_DATA_DIR
// from getenv. Flags are applied by the caller after this, so they win
// over both.
func Load(explicit string, getenv func(string) string) (File, error) {
	cfg := Defaults()
	path, err := Find(explicit)
	if err != nil {
		return cfg, err
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		cfg, _, err = Decode(path, data)
		// A value of the wrong type, or one its type refuses, stopped the
		// decoder; the checks below still judge what decodes, so that one
		// run names every problem. An unknown key alone, or TOML that
		// does not parse, leaves nothing they could judge as written. A
		// refused value is left at its default, which they pass.
		var refused []string
		if err != nil {
			cfg = Defaults()
			if refused = DecodeWhatDecodes(data, &cfg); len(refused) == 0 {
				return cfg, err
			}
		}
		var found []error
		if refused == nil {
			// With a value refused, the decoder's error names these.
			for _, m := range MistypedTables(data, &cfg) {
				found = append(found, fmt.Errorf("%s:%d: key %q: want %s, got %s", path, keyLine(data, m.path), m.Key, m.Want, m.Got))
			}
		}
		// The default was there before the file emptied it: without this
		// the start fails later, far from the line.
		if cfg.DataDir == "" {
			found = append(found, fmt.Errorf("%s:%d: key %q: want a directory, got \"\" (leave the key out for the default, %s)", path, keyLine(data, toml.Key{"data_dir"}), "data_dir", DefaultDataDir()))
		}
		// Set with an error too: the caller's checks of what decoded
		// place their problems with it.
		cfg.Path, cfg.Content = path, data
		if err := JoinByLine(path, append([]error{err}, found...)...); err != nil {
			return cfg, err
		}
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if u := getenv("NARUN_NATS_URL"); u != "" {
		for _, c := range []*Client{&cfg.Gateway.Client, &cfg.Runner.Client, &cfg.Ctl.Client} {
			c.NATSURL, c.NATSURLFrom = u, "NARUN_NATS_URL"
		}
	}
	if d := getenv("NARUN_DATA_DIR"); d != "" {
		cfg.DataDir, cfg.DataDirWritten, cfg.DataDirFromFile = d, "", false
	}
	if cfg.DataDir != "" && !filepath.IsAbs(cfg.DataDir) {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return cfg, fmt.Errorf("data dir %q: %w", cfg.DataDir, err)
		}
		cfg.DataDir = abs
	}
	return cfg, nil
}

// Where places key (dotted: "runner.heartbeat_interval") in the file f was
// read from, as "path:line", for an error about a value that only a check
// after loading refuses: "path" when the key cannot be placed (or the file
// cannot be read again), "" when f was read from no file.
func (f File) Where(key string) string {
	if f.Path == "" {
		return ""
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return f.Path
	}
	if n, indexed := entryLine(data, key); n > 0 {
		return fmt.Sprintf("%s:%d", f.Path, n)
	} else if indexed {
		// An entry the file does not have (a flag added it) or writes
		// inline: the same key of another entry is not it.
		return f.Path
	}
	path := strings.Split(key, ".")
	var doc map[string]any
	if md, err := toml.Decode(string(data), &doc); err == nil && !md.IsDefined(path...) {
		// The value is a default's: a key of the same name in another
		// table, where keyLine would look last, is not it.
		return f.Path
	}
	if n := keyLine(data, toml.Key(path)); n > 0 {
		return fmt.Sprintf("%s:%d", f.Path, n)
	}
	return f.Path
}

// entryLine places a key of one entry of an array of tables, written with
// its index ("nats.users[1].password", or "nats.users[1]" for the entry):
// the line of that key in the entry's [[...]] table, else of the entry's
// header; 0 for an entry without a [[...]] header. indexed says key has an
// index.
func entryLine(data []byte, key string) (line int, indexed bool) {
	table, rest, ok := strings.Cut(key, "[")
	if !ok {
		return 0, false
	}
	index, field, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(index)
	if !ok || err != nil {
		return 0, false
	}
	headers := ArrayTableLines(data, table)
	if i < 0 || i >= len(headers) {
		return 0, true
	}
	field = strings.TrimPrefix(field, ".")
	if field == "" || strings.Contains(field, "[") {
		return headers[i], true
	}
	// A field of a table of the entry ("tls.verify") is in that table's
	// [table.tls] section after the entry's header, or written dotted.
	sub, leaf, nested := strings.Cut(field, ".")
	found, within := headers[i], false
	for n, line := range strings.Split(string(data), "\n")[headers[i]:] {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			header, _, _ := strings.Cut(line, "#")
			if !nested || within || strings.Join(strings.Fields(strings.Trim(header, "[] ")), "") != table+"."+sub {
				break
			}
			found, within = headers[i]+1+n, true
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		k = strings.Trim(strings.TrimSpace(k), `"'`)
		if ok && (k == field && !within || within && k == leaf) {
			return headers[i] + 1 + n, true
		}
	}
	return found, true
}
