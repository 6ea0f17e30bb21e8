// Package spec parses and validates app specs: the TOML file an operator
// deploys with `narun ctl deploy` and the runner executes. There is one
// parser, used by both, so a spec that ctl accepts is a spec every node
// accepts.
//
// API for the runner and ctl:
//
//	app, err := spec.Parse("app.toml", data)   // strict TOML, defaults filled, validated by every rule (deploy)
//	app, outdated, err := spec.ParseStored(key, data) // a spec from narun-apps: deploy-time rules only reported
//	app.Selects(nodeID, labels) bool            // does this node run the app
//	app.ReplicasOn(nodeID, labels) int          // replicas this node runs (0 = none)
//	app.Fingerprint(arch) string                // changes only when a process on a node of that arch must restart
//	app.Binary(arch) (Binary, bool)             // pinned object and sha256 for an arch ("amd64", "arm64", "riscv64")
//	app.StopSig() syscall.Signal                // stop_signal as a signal
//	spec.WithBinaries(file, src, bins) ([]byte, error) // ctl: the stored form (user TOML + [binaries.<arch>]), unsigned
//	spec.SetFileDigests(file, src, digests) ([]byte, error) // ctl: adds or replaces [file_digests] at the end, unsigned
//	spec.SetRestartedAt(file, src, t) ([]byte, error) // ctl: sets restarted_at, which changes every fingerprint; unsigned
//	spec.ValidName(s) / spec.ValidObjectName(s) // app/node names (NATS tokens) / file and secret names
//
// Every error from Parse names the file, the line and the key
// ("app.toml:7: key \"restart.max_backoff\": ..."); several problems are
// joined with errors.Join so an operator sees them all at once.
//
// Rules added once specs could already be stored are deploy-time rules
// (validator.deployRule): a stored spec that breaks one was accepted by
// the narun ctl that stored it, and a node upgrade must not stop its app,
// so the runner runs it as it did before (a node that now refuses part of
// it at start fails the instance with that reason); only a new deploy is
// refused.
package spec

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/sandbox"
)

// Modes of running an app.
const (
	ModeExec    = "exec"
	ModeSandbox = "sandbox"
)

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Health check types.
const (
	HealthMicro = "micro"
	HealthHTTP  = "http"
	HealthTCP   = "tcp"
	HealthNone  = "none"
)

// DefaultMinHealthy is [health] min_healthy when a spec leaves it out: long
// enough that an app crashing in its first second or so after passing a
// check fails its rollout, short enough that a deploy is not slowed down
// for it. It is also how long deploy --wait already held an instance
// without a check.
const DefaultMinHealthy = 2 * time.Second

// Limits that keep a typo (an extra zero) from taking a device down.
const (
	MaxNameLen  = 64
	MaxReplicas = 100
	MaxBackoff  = time.Hour
	MaxTimeout  = time.Hour
	// MaxSize bounds a spec file: it is stored as one KV value, which
	// must fit a NATS message with room to spare, and no real spec comes
	// near it.
	MaxSize = 256 << 10
)

// Arches a binary may be built for.
var Arches = []string{"amd64", "arm64", "riscv64"}

// Presets of the sandbox: groups of paths an ordinary program needs.
var Presets = []string{"stdio", "tmp", "certs", "dns", "shared_libs", "proc_self"}

// App is a parsed, validated spec with every default filled in.
type App struct {
	Name    string            `toml:"name"`
	Version string            `toml:"version"`
	Args    []string          `toml:"args"`
	Env     map[string]string `toml:"env"`
	// Nodes and Labels select nodes; a node runs the app when its id is in
	// Nodes or its labels carry every pair of Labels.
	Nodes  []string          `toml:"nodes"`
	Labels map[string]string `toml:"labels"`
	// Replicas is the number of instances on each selected node.
	Replicas    int             `toml:"replicas"`
	Mode        string          `toml:"mode"`
	Sandbox     Sandbox         `toml:"sandbox"`
	Resources   Resources       `toml:"resources"`
	Restart     Restart         `toml:"restart"`
	Health      Health          `toml:"health"`
	Files       []File          `toml:"files"`
	Secrets     []Secret        `toml:"secrets"`
	Routes      []config.Route  `toml:"routes"`
	HTTP        HTTP            `toml:"http"`
	StopSignal  string          `toml:"stop_signal"`
	StopTimeout config.Duration `toml:"stop_timeout"`
	// Binaries is written by `narun ctl deploy`: one pinned object per arch.
	Binaries map[string]Binary `toml:"binaries"`
	// FileDigests is written by `narun ctl deploy` and `app restart`: the
	// SHA-256 (hex) that each [[files]] object must have, by object name.
	FileDigests map[string]string `toml:"file_digests"`
	// RestartedAt is written by `narun ctl app restart` (RFC 3339): changing
	// it changes every fingerprint, so the runner rolls every instance.
	RestartedAt string `toml:"restarted_at"`
}

// Sandbox restricts an app in mode "sandbox"; enforced by the sandbox package.
type Sandbox struct {
	// Landlock is "required" (refuse to start without it) or "best-effort".
	Landlock string   `toml:"landlock"`
	Presets  []string `toml:"presets"`
	Paths    []Path   `toml:"paths"`
	// User and Group run the app under another identity (names or
	// numbers); empty User means a uid of the app's own, root only when
	// User says "root".
	User    string `toml:"user"`
	Group   string `toml:"group"`
	Network string `toml:"network"`
}

// Path grants access to a host path: Mode is a combination of r, w and x.
type Path struct {
	Path string `toml:"path"`
	Mode string `toml:"mode"`
}

// Resources limits an instance; zero means no limit.
type Resources struct {
	Memory config.Size `toml:"memory"`
	// CPU is in cores (0.5 = half a core).
	CPU  float64 `toml:"cpu"`
	Pids int     `toml:"pids"`
}

// Restart says when and how fast a stopped instance is started again.
type Restart struct {
	Policy         string          `toml:"policy"`
	InitialBackoff config.Duration `toml:"initial_backoff"`
	MaxBackoff     config.Duration `toml:"max_backoff"`
	// Jitter is the fraction (0..1) by which a backoff is randomly stretched.
	Jitter float64 `toml:"jitter"`
	// ResetAfter is how long an instance must run to forget its failures.
	ResetAfter config.Duration `toml:"reset_after"`
	// MaxFailures is how many consecutive failures make the instance
	// "failed" (given up); 0 retries forever.
	MaxFailures int `toml:"max_failures"`
}

// Health says how the runner decides that an instance serves.
type Health struct {
	Type string `toml:"type"`
	// Service is the NATS Micro service pinged by type "micro".
	Service    string          `toml:"service"`
	Path       string          `toml:"path"`
	Port       int             `toml:"port"`
	Interval   config.Duration `toml:"interval"`
	Timeout    config.Duration `toml:"timeout"`
	Failures   int             `toml:"failures"`
	StartGrace config.Duration `toml:"start_grace"`
	// MinHealthy is how long a process must stay healthy before a rollout
	// counts it: the runner stops the instance it replaces, and ctl's
	// --wait counts it ready, only then. A restart or a turn unhealthy
	// starts the wait again; 0 counts it at its first passed check.
	MinHealthy config.Duration `toml:"min_healthy"`
	// RestartAfter is how many failed checks in a row, counted once the
	// instance has been healthy or its start grace is over, make the runner
	// stop it and apply [restart] as after a failure; 0 never does.
	RestartAfter int `toml:"restart_after"`
}

// File places an object of the narun-files store in the instance dir.
type File struct {
	Object string `toml:"object"`
	// Path is relative to the instance directory.
	Path string `toml:"path"`
}

// Secret delivers a secret of narun-secrets as an env variable or a file.
type Secret struct {
	Name string `toml:"name"`
	Env  string `toml:"env"`
	// File is relative to the instance directory; written with mode 0400.
	File string `toml:"file"`
}

// HTTP marks a plain-HTTP app that listens on 127.0.0.1:Port.
type HTTP struct {
	Port int `toml:"port"`
}

// Binary pins the object holding an app's binary for one arch.
type Binary struct {
	Object string `toml:"object"`
	SHA256 string `toml:"sha256"`
}

// defaults is what an empty spec decodes over: TOML only overwrites the keys
// it sets, so an explicit zero stays distinguishable from an absent key.
func defaults() App {
	return App{
		Replicas: 1,
		Mode:     ModeExec,
		Restart: Restart{
			Policy:         RestartAlways,
			InitialBackoff: config.Duration(100 * time.Millisecond),
			MaxBackoff:     config.Duration(5 * time.Minute),
			Jitter:         0.2,
			ResetAfter:     config.Duration(10 * time.Minute),
		},
		Health: Health{
			Interval:   config.Duration(10 * time.Second),
			Timeout:    config.Duration(2 * time.Second),
			Failures:   3,
			StartGrace: config.Duration(30 * time.Second),
			MinHealthy: config.Duration(DefaultMinHealthy),
		},
		StopSignal:  "SIGTERM",
		StopTimeout: config.Duration(10 * time.Second),
	}
}

// Parse decodes a spec strictly, fills defaults and validates it with
// every rule, as a deploy must. file only names the source in error
// messages.
func Parse(file string, data []byte) (*App, error) {
	a, _, err := parse(file, data, false)
	return a, err
}

// StoredUnder refuses a spec stored under the key of another app: a
// signature covers a spec's bytes, not the key it is stored under, and the
// name is what binds a signed spec to its app.
func (a *App) StoredUnder(key string) error {
	if a.Name != key {
		return fmt.Errorf("spec name %q differs from its key %q", a.Name, key)
	}
	return nil
}

// ParseStored parses a spec read back from narun-apps, which an earlier
// narun ctl may have stored: every rule applies but the deploy-time ones,
// which came later, so that upgrading narun never stops an app that ran.
// outdated joins what those rules find (nil if nothing), in Parse's
// format, for the caller to report; err is a spec nothing can run.
func ParseStored(file string, data []byte) (app *App, outdated, err error) {
	a, old, err := parse(file, data, true)
	if err != nil {
		return nil, nil, err
	}
	return a, joinFirst(file, old), nil
}

func parse(file string, data []byte, stored bool) (*App, []*FieldError, error) {
	if len(data) > MaxSize {
		// Not the size: a reader may stop at the first byte too many.
		return nil, nil, fmt.Errorf("%s: spec is larger than the limit; at most %d KiB", file, MaxSize>>10)
	}
	a := defaults()
	var md toml.MetaData
	var miscased []config.Miscased
	var err error
	if stored {
		md, miscased, err = config.DecodeStored(file, data, &a)
	} else {
		md, err = config.DecodeStrict(file, data, &a)
	}
	// A value of the wrong type, or one its type refuses, stopped the
	// decoder; the rules still judge what decodes, so that one deploy
	// names every problem. An unknown key, or TOML that does not parse,
	// leaves nothing the rules could judge as written.
	var refused []string
	if err != nil {
		if refused = config.DecodeWhatDecodes(data, &a); len(refused) == 0 {
			return nil, nil, err
		}
	}
	v := &validator{file: file, data: data, stored: stored}
	// An earlier narun ctl stored the spec with these keys, and its nodes
	// took each for the field spelt like it but for case: it runs on so.
	for _, m := range miscased {
		v.outdated = append(v.outdated, &FieldError{File: file, Line: m.Line, Key: m.Key, Msg: fmt.Sprintf("keys are case-sensitive (did you mean %q?)", m.Want)})
	}
	// 0 is no port, and not what leaving the key out says: none for
	// [http], [http] port for [health].
	if md.IsDefined("http", "port") && a.HTTP.Port == 0 {
		v.deployRule("http.port", "want a port 1..65535, got 0: leave the key out when the app serves no HTTP")
	}
	if md.IsDefined("health", "port") && a.Health.Port == 0 {
		v.deployRule("health.port", "want a port 1..65535, got 0: leave the key out for [http] port")
	}
	// An empty [sandbox] reads as "sandboxed with the defaults", which
	// mode = "exec" would ignore in silence; a stored one ran so.
	if md.IsDefined("sandbox") && isZero(a.Sandbox) && a.Mode == ModeExec {
		v.against("mode").deployRule("sandbox", "[sandbox] needs mode = \"sandbox\", an empty table too: set mode = \"sandbox\" to run the app in a sandbox with the defaults, or remove the table")
	}
	// The decoder left these maps empty: a stored spec ran that way, so
	// it only warns there.
	for _, m := range config.MistypedTables(data, &a) {
		if refused != nil {
			// The decoder's error names it with the values refused.
			refused = append(refused, m.Key)
			continue
		}
		v.deployRule(m.Key, "want %s, got %s", m.Want, m.Got)
	}
	a.fill()
	a.validate(v)
	v.dropComparedWithRejected()
	if refused != nil {
		return nil, nil, withRules(file, err, judged(v.errs, refused, md))
	}
	if err := joinFirst(file, v.errs); err != nil {
		return nil, nil, err
	}
	return &a, v.outdated, nil
}

// judged keeps the problems the rules found with keys the spec writes and
// the decoder took. Those of a refused key, or of one inside it, judge the
// default left in its place, as do those of a rule that compared the key
// with a refused one, or with one inside or around it (FieldError's
// against); those of a key left out judge a default drawn from a refused
// one ("name = 1" leaves the route's service empty).
func judged(errs []*FieldError, refused []string, md toml.MetaData) []*FieldError {
	written := map[string]bool{}
	for _, k := range md.Keys() {
		written[strings.Join(k, ".")] = true
	}
	return slices.DeleteFunc(errs, func(e *FieldError) bool {
		return !written[indexRe.ReplaceAllString(e.Key, "")] || slices.ContainsFunc(refused, func(r string) bool {
			return within(e.Key, r) || slices.ContainsFunc(e.against, func(k string) bool { return within(k, r) || within(r, k) })
		})
	})
}

// within says whether key is outer or a key inside it.
func within(key, outer string) bool {
	return key == outer || strings.HasPrefix(key, outer+".") || strings.HasPrefix(key, outer+"[")
}

// indexRe matches the index of an entry in a key ("routes[1].path"),
// which the decoder's keys do not have.
var indexRe = regexp.MustCompile(`\[\d+\]`)

// withRules joins decodeErr, DecodeStrict's error naming the refused
// values (and any unknown keys), with what the rules found, all in the
// order of their lines as joinFirst orders them; each has its own count
// of the problems it leaves out.
func withRules(file string, decodeErr error, errs []*FieldError) error {
	return config.JoinByLine(file, decodeErr, joinFirst(file, errs))
}

// fill sets the defaults that depend on other fields.
func (a *App) fill() {
	if a.Mode == ModeSandbox {
		if a.Sandbox.Landlock == "" {
			a.Sandbox.Landlock = "required"
		}
		if a.Sandbox.Network == "" {
			a.Sandbox.Network = "host"
		}
		if a.Sandbox.Presets == nil {
			a.Sandbox.Presets = []string{"stdio", "tmp", "proc_self"}
		}
	}
	for i := range a.Routes {
		if a.Routes[i].Service == "" {
			a.Routes[i].Service = a.Name
		}
		if a.Routes[i].Match == "" {
			a.Routes[i].Match = "prefix"
		}
	}
	h := &a.Health
	if h.Type == "" {
		switch {
		case a.HTTP.Port > 0 && a.HTTP.Port <= 65535:
			h.Type = HealthTCP
		case len(a.Routes) > 0:
			h.Type = HealthMicro
		default:
			h.Type = HealthNone
		}
	}
	if h.Type == HealthMicro && h.Service == "" {
		h.Service = a.Name
		if len(a.Routes) > 0 {
			h.Service = a.Routes[0].Service
		}
	}
	if (h.Type == HealthHTTP || h.Type == HealthTCP) && h.Port == 0 {
		h.Port = a.HTTP.Port
	}
	if h.Type == HealthHTTP && h.Path == "" {
		h.Path = "/"
	}
	if s, ok := normalSignal(a.StopSignal); ok {
		a.StopSignal = s
	}
}

var (
	tokenRe   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	envRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	hexRe     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	userRe    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
)

// ValidName reports whether s can be an app, node, secret or file name:
// a single NATS subject token that is also safe as a file name.
func ValidName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("longer than %d characters", MaxNameLen)
	case !tokenRe.MatchString(s):
		return errors.New("may contain only letters, digits, '_' and '-' (it is a NATS subject token)")
	}
	return nil
}

var objectRe = regexp.MustCompile(`^[A-Za-z0-9_-]([A-Za-z0-9._-]*[A-Za-z0-9_-])?$`)

// ValidObjectName reports whether s can name a file in narun-files or a
// secret in narun-secrets: like ValidName, but dots are allowed inside
// ("app.conf"), as these names never become a subject token of narun's.
func ValidObjectName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 2*MaxNameLen:
		return fmt.Errorf("longer than %d characters", 2*MaxNameLen)
	case !objectRe.MatchString(s) || strings.Contains(s, ".."):
		return errors.New("may contain only letters, digits, '_', '-' and single '.' inside")
	}
	return nil
}

func (a *App) validate(v *validator) {
	if a.Name == "" {
		v.add("name", "is required")
	} else {
		v.check("name", ValidName(a.Name))
	}
	if strings.HasPrefix(a.Name, "-") {
		// narun ctl, and the commands it prints (image delete of the
		// app's binaries), would take the name for a flag.
		v.deployRule("name", "must not start with '-': narun ctl commands would take %q for a flag; start it with a letter, digit or '_'", a.Name)
	}
	switch {
	case a.Version == "":
		v.add("version", "is required")
	case len(a.Version) > MaxNameLen:
		v.add("version", "want at most %d characters, got %d", MaxNameLen, len(a.Version))
	case !versionRe.MatchString(a.Version):
		v.add("version", "want a letter or digit, then letters, digits, '.', '_', '+' or '-', at most %d characters, got %q", MaxNameLen, a.Version)
	}
	for i, s := range a.Args {
		if strings.ContainsRune(s, 0) {
			v.add(fmt.Sprintf("args[%d]", i), "contains a NUL byte")
		}
	}
	for _, k := range sortedKeys(a.Env) {
		key := "env." + k
		switch {
		case !envRe.MatchString(k):
			v.add(key, "not a valid environment variable name")
		case strings.HasPrefix(k, "NARUN_"):
			v.add(key, "NARUN_ variables are set by the runner")
		case strings.ContainsRune(a.Env[k], 0):
			v.add(key, "contains a NUL byte")
		}
	}
	a.validateSelector(v)
	switch a.Mode {
	case ModeExec:
		if !isZero(a.Sandbox) {
			v.against("mode").add("sandbox", "[sandbox] needs mode = \"sandbox\"")
		}
	case ModeSandbox:
		a.validateSandbox(v)
	default:
		v.add("mode", "want \"exec\" or \"sandbox\", got %q", a.Mode)
	}
	a.validateResources(v)
	a.validateRestart(v)
	a.validateHealth(v)
	a.validateFiles(v)
	a.validateRoutes(v)
	if a.HTTP.Port != 0 {
		v.port("http.port", a.HTTP.Port)
		if a.Replicas > 1 && (a.Mode == ModeExec || a.Sandbox.Network == "host") {
			// All instances of a node would bind the one port: all but
			// the first would crash, again and again.
			v.against("replicas", "mode", "sandbox.network").add("http.port", "replicas = %d on the host network: the instances on a node would all listen on 127.0.0.1:%d; run one replica, or mode = \"sandbox\" with network = \"none\" or \"isolated\" (a network namespace each)", a.Replicas, a.HTTP.Port)
		}
	}
	if _, ok := signals[a.StopSignal]; !ok {
		v.add("stop_signal", "unknown signal %q: want e.g. \"SIGTERM\", \"SIGINT\", \"SIGQUIT\"", a.StopSignal)
	}
	v.positiveDur("stop_timeout", a.StopTimeout, MaxTimeout, "the process group would be killed without waiting (stop_signal = \"SIGKILL\" says that)")
	if a.RestartedAt != "" {
		if _, err := time.Parse(time.RFC3339Nano, a.RestartedAt); err != nil {
			v.add("restarted_at", "want an RFC 3339 time (written by narun ctl app restart), got %q", a.RestartedAt)
		}
	}
	for _, arch := range sortedKeys(a.Binaries) {
		b, key := a.Binaries[arch], "binaries."+arch
		if !slices.Contains(Arches, arch) {
			v.add(key, "unknown arch %q: want one of %s", arch, strings.Join(Arches, ", "))
			continue
		}
		if b.Object == "" {
			v.add(key+".object", "is required")
		}
		if !hexRe.MatchString(b.SHA256) {
			v.add(key+".sha256", "want 64 lower-case hex digits")
		}
	}
	for _, obj := range sortedKeys(a.FileDigests) {
		key := "file_digests." + obj
		if !slices.ContainsFunc(a.Files, func(f File) bool { return f.Object == obj }) {
			v.against("files").add(key, "no [[files]] entry uses object %q", obj)
		}
		if !hexRe.MatchString(a.FileDigests[obj]) {
			v.add(key, "want 64 lower-case hex digits")
		}
	}
	// A deploy writes [file_digests] only when the file has none: one
	// that leaves an object out would store it unpinned, for nodes to
	// place whatever bytes the object holds when they start.
	if len(a.FileDigests) > 0 {
		for i, f := range a.Files {
			if _, ok := a.FileDigests[f.Object]; !ok {
				v.against("file_digests").deployRule(fmt.Sprintf("files[%d].object", i), "object %q has no pin in [file_digests]: pin every [[files]] object, or remove [file_digests] for narun ctl deploy to write it", f.Object)
			}
		}
	}
}

func (a *App) validateSelector(v *validator) {
	if len(a.Nodes) == 0 && len(a.Labels) == 0 {
		v.against("labels").add("nodes", "select nodes with nodes = [\"id\", ...] and/or labels = { key = \"value\" }")
	}
	seen := map[string]bool{}
	for i, n := range a.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		if err := ValidName(n); err != nil {
			if short, _, dotted := strings.Cut(n, "."); dotted && ValidName(short) == nil {
				// A host name, as `hostname` prints it on some systems.
				v.add(key, "node id %q: %v; a runner's default id is the first label of its host name, %q (narun ctl node list shows the ids)", n, err, short)
			} else {
				v.add(key, "node id %q: %v", n, err)
			}
		} else if seen[n] {
			v.add(key, "node %q listed twice", n)
		}
		seen[n] = true
	}
	for _, k := range sortedKeys(a.Labels) {
		if err := labelNameError(k); err != nil {
			v.add("labels."+k, "%v", err)
		}
		if err := labelValueError(a.Labels[k]); err != nil {
			v.add("labels."+k, "%v", err)
		}
	}
	if a.Replicas < 0 || a.Replicas > MaxReplicas {
		v.add("replicas", "want 0..%d, got %d", MaxReplicas, a.Replicas)
	}
}

func (a *App) validateSandbox(v *validator) {
	s := a.Sandbox
	if s.Landlock != "required" && s.Landlock != "best-effort" {
		v.add("sandbox.landlock", "want \"required\" or \"best-effort\", got %q", s.Landlock)
	}
	switch s.Network {
	case "none", "isolated":
		// The app's NATS is there, bridged: the app could not listen on
		// it, and its checks and traffic would reach NATS instead.
		if a.HTTP.Port == sandbox.DefaultNATSPort {
			v.deployRule("http.port", "%d is where an app without host networking reaches NATS (NARUN_NATS_URL): choose another port", sandbox.DefaultNATSPort)
		}
		if h := a.Health; (h.Type == HealthHTTP || h.Type == HealthTCP) && h.Port == sandbox.DefaultNATSPort && a.HTTP.Port != sandbox.DefaultNATSPort {
			v.against("health.type", "http.port").deployRule("health.port", "%d is where an app without host networking reaches NATS (NARUN_NATS_URL): choose another port", sandbox.DefaultNATSPort)
		}
	case "host":
	default:
		v.add("sandbox.network", "want \"host\", \"none\" or \"isolated\", got %q", s.Network)
	}
	for i, p := range s.Presets {
		if !slices.Contains(Presets, p) {
			v.add(fmt.Sprintf("sandbox.presets[%d]", i), "unknown preset %q: want %s", p, strings.Join(Presets, ", "))
		}
	}
	for i, p := range s.Paths {
		key := fmt.Sprintf("sandbox.paths[%d]", i)
		if !strings.HasPrefix(p.Path, "/") || hasDotDot(p.Path) || strings.ContainsRune(p.Path, 0) {
			v.add(key+".path", "want an absolute path without '..', got %q", p.Path)
		}
		if !validMode(p.Mode) {
			v.add(key+".mode", "want a combination of r, w and x (e.g. \"r\", \"rw\", \"rx\"), got %q", p.Mode)
		}
		// The sandbox refuses it on every start (where the node mounts
		// its cgroups elsewhere too); said here, the deploy fails instead.
		if strings.Contains(p.Mode, "w") && pathOverlaps(path.Clean(p.Path), cgroupDir) {
			v.deployRule(key, "mode %q of %s lets the app write to the cgroups in %s, where an app running as root could leave its cgroup or raise its limits: grant it without \"w\", or a path outside %s", p.Mode, p.Path, cgroupDir, cgroupDir)
		} else if dir := kernelDir(path.Clean(p.Path)); strings.Contains(p.Mode, "w") && dir != "" && rootID(s.User) {
			v.deployRule(key, "mode %q of %s lets the app, running as root, write to the kernel's settings in %s (kernel.core_pattern names a program the kernel runs as root on the host): grant it without \"w\", or run the app as another user", p.Mode, p.Path, dir)
		}
	}
	if s.User != "" && (!userRe.MatchString(s.User) || len(s.User) > 32) {
		v.add("sandbox.user", "invalid user %q", s.User)
	} else if err := validNumericID(s.User); err != nil {
		v.add("sandbox.user", "uid %s: %v", s.User, err)
	}
	if s.Group != "" && (!userRe.MatchString(s.Group) || len(s.Group) > 32) {
		v.add("sandbox.group", "invalid group %q", s.Group)
	} else if err := validNumericID(s.Group); err != nil {
		v.add("sandbox.group", "gid %s: %v", s.Group, err)
	}
	// The sandbox refuses gid 0 for a user other than root (group root
	// owns files a non-root app must not reach); said here, the deploy
	// fails instead of every start. Names other than root resolve on the
	// node, so only root and the number 0 are known here.
	if rootID(s.Group) && !rootID(s.User) {
		v.against("sandbox.user").deployRule("sandbox.group", "group %q needs user = \"root\": gid 0 is root's", s.Group)
	}
}

// cgroupDir is where Linux distributions mount the cgroup hierarchies.
const cgroupDir = "/sys/fs/cgroup"

// kernelDir is where the kernel's settings are mounted, /proc or /sys,
// when p is at, above or in one of them, else "". The sandbox refuses a
// root app's "w" there at every start, on the file systems it finds
// mounted; said here, the deploy fails instead.
func kernelDir(p string) string {
	for _, dir := range []string{"/proc", "/sys"} {
		if pathOverlaps(p, dir) {
			return dir
		}
	}
	return ""
}

// pathOverlaps says whether one of the clean absolute paths a and b is
// the other or holds it.
func pathOverlaps(a, b string) bool {
	below := func(dir, p string) bool { return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/") }
	return a == b || below(a, b) || below(b, a)
}

// validNumericID checks a user or group given as a number, which a node
// takes as the id itself: beyond 32 bits it is no id, and 4294967295 is
// (uid_t)-1, which setuid refuses and chown takes for "leave as is", so
// every start of the app would fail with "invalid argument".
func validNumericID(s string) error {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err != nil || n == math.MaxUint32 {
		return fmt.Errorf("want 0..%d", uint32(math.MaxUint32-1))
	}
	return nil
}

// rootID says whether a user or group names root, by name or as the
// number a node reads it as ("0", "00").
func rootID(s string) bool {
	if s == "root" {
		return true
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n == 0
}

func (a *App) validateResources(v *validator) {
	// The limits are the instance's cgroup in either mode; a node that
	// cannot make one fails the instance rather than ignore a limit.
	r := a.Resources
	if r.Memory != 0 && (r.Memory < 4<<20 || r.Memory > 1<<40) {
		v.add("resources.memory", "want 0 (no limit) or 4MiB..1TiB, got %d bytes", r.Memory)
	}
	switch {
	case r.CPU < 0 || r.CPU > 1024 || r.CPU != r.CPU:
		v.add("resources.cpu", "want 0 (no limit) or a number of cores up to 1024, got %v", r.CPU)
	case r.CPU > 0 && r.CPU < 0.01:
		v.add("resources.cpu", "want at least 0.01 cores, got %v", r.CPU)
	}
	switch {
	case r.Pids < 0 || r.Pids > 1<<22:
		v.add("resources.pids", "want 0 (no limit) or up to %d, got %d", 1<<22, r.Pids)
	case r.Pids == 1:
		// On cgroup v1 a sandbox's launcher forks the app from inside the
		// app's cgroup, which then holds two tasks for a moment: the
		// start would fail there and succeed on a v2 node.
		v.deployRule("resources.pids", "want 0 (no limit) or 2 up to %d, got 1: a sandbox cannot start within it on cgroup v1, and a process that makes no thread at all is rare", 1<<22)
	}
}

func (a *App) validateRestart(v *validator) {
	r := a.Restart
	switch r.Policy {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		v.add("restart.policy", "want \"always\", \"on-failure\" or \"never\", got %q", r.Policy)
	}
	v.maxDur("restart.initial_backoff", r.InitialBackoff, MaxBackoff)
	v.maxDur("restart.max_backoff", r.MaxBackoff, MaxBackoff)
	if r.InitialBackoff == 0 {
		v.add("restart.initial_backoff", "must be greater than 0")
	}
	if r.MaxBackoff < r.InitialBackoff {
		v.against("restart.initial_backoff").add("restart.max_backoff", "must not be less than initial_backoff (%s)", r.InitialBackoff.D())
	}
	if r.Jitter < 0 || r.Jitter > 1 || r.Jitter != r.Jitter {
		v.add("restart.jitter", "want a fraction 0..1, got %v", r.Jitter)
	}
	v.positiveDur("restart.reset_after", r.ResetAfter, 24*time.Hour, "every exit would forget the ones before, so backoff and max_failures would never apply")
	if r.MaxFailures < 0 || r.MaxFailures > 10000 {
		v.add("restart.max_failures", "want 0 (never give up) .. 10000, got %d", r.MaxFailures)
	}
}

func (a *App) validateHealth(v *validator) {
	h := a.Health
	switch h.Type {
	case HealthMicro:
		if err := validSubject(h.Service); err != nil {
			v.add("health.service", "%v", err)
		}
	case HealthHTTP:
		if !strings.HasPrefix(h.Path, "/") {
			v.add("health.path", "want a path starting with '/', got %q", h.Path)
		} else if _, err := url.Parse("http://127.0.0.1" + h.Path); err != nil {
			// The runner makes the check's URL so: a path it cannot
			// parse (a control character, a bad %-escape) fails every
			// check, and the instance is never healthy. A deploy-time
			// rule, as a stored spec with one ran (unhealthy) before.
			v.deployRule("health.path", "want a path a URL can hold (no control characters, %%-escapes of two hex digits), got %q: %v", h.Path, errors.Unwrap(err))
		}
		fallthrough
	case HealthTCP:
		if h.Port == 0 {
			v.add("health.port", "is required for type %q (or set [http] port)", h.Type)
		} else {
			v.port("health.port", h.Port)
		}
	case HealthNone:
	default:
		v.add("health.type", "want \"micro\", \"http\", \"tcp\" or \"none\", got %q", h.Type)
	}
	if (h.Type == HealthMicro || h.Type == HealthNone) && (h.Port < 0 || h.Port > 65535) {
		// Such a check uses no port, but no port is out of range: a
		// typo, which a spec stored before this rule carried and ran.
		v.deployRule("health.port", "want a port 1..65535, got %d (type %q uses none: leave the key out)", h.Port, h.Type)
	}
	v.maxDur("health.interval", h.Interval, MaxTimeout)
	v.maxDur("health.timeout", h.Timeout, MaxTimeout)
	v.positiveDur("health.start_grace", h.StartGrace, MaxTimeout, "every start would be reported unhealthy before the app could listen")
	v.maxDur("health.min_healthy", h.MinHealthy, MaxTimeout)
	if h.Type != HealthNone {
		if h.Interval < config.Duration(100*time.Millisecond) {
			v.against("health.type").add("health.interval", "want at least 100ms, got %s", h.Interval.D())
		}
		if h.Timeout == 0 {
			v.against("health.type").add("health.timeout", "must be greater than 0")
		}
	}
	if h.Failures < 1 || h.Failures > 1000 {
		v.add("health.failures", "want 1..1000, got %d", h.Failures)
	}
	switch {
	case h.RestartAfter < 0 || h.RestartAfter > 1000:
		v.add("health.restart_after", "want 0 (never restart an unhealthy instance) or 1..1000, got %d", h.RestartAfter)
	case h.RestartAfter > 0 && h.Type == HealthNone:
		// Without a check nothing ever fails: the key would silently do nothing.
		v.against("health.type").add("health.restart_after", "needs a health check, but type is \"none\" (set [health] type, or [http] port or [[routes]] for a default one)")
	}
}

func (a *App) validateFiles(v *validator) {
	// Files and secret files share the instance directory: no two may be
	// the same file, nor one a directory the other is placed in, or every
	// start fails.
	type claimed struct{ path, key string }
	var dest []claimed
	claim := func(key, p string) {
		c := cleanRel(p)
		for _, prev := range dest {
			switch {
			case prev.path == c:
				v.add(key, "path %q already used by %s", p, prev.key)
			case strings.HasPrefix(c, prev.path+"/"):
				v.deployRule(key, "path %q is inside %q, which %s places as a file", p, prev.path, prev.key)
			case strings.HasPrefix(prev.path, c+"/"):
				v.deployRule(key, "path %q is a directory of %q, which %s places as a file", p, prev.path, prev.key)
			}
		}
		dest = append(dest, claimed{c, key})
	}
	for i, f := range a.Files {
		key := fmt.Sprintf("files[%d]", i)
		if err := ValidObjectName(f.Object); err != nil {
			v.add(key+".object", "object %q: %v", f.Object, err)
		}
		v.placed(key+".path", f.Path, claim)
	}
	envs := map[string]bool{}
	for i, s := range a.Secrets {
		key := fmt.Sprintf("secrets[%d]", i)
		if err := ValidObjectName(s.Name); err != nil {
			v.add(key+".name", "secret %q: %v", s.Name, err)
		}
		switch {
		case (s.Env == "") == (s.File == ""):
			v.against(key+".env", key+".file").add(key, "set exactly one of env or file")
		case s.Env != "":
			switch {
			case !envRe.MatchString(s.Env):
				v.add(key+".env", "not a valid environment variable name: %q", s.Env)
			case strings.HasPrefix(s.Env, "NARUN_"):
				v.add(key+".env", "NARUN_ variables are set by the runner")
			case envs[s.Env]:
				v.add(key+".env", "%s set by two secrets", s.Env)
			default:
				if _, ok := a.Env[s.Env]; ok {
					v.add(key+".env", "%s is also set in env", s.Env)
				}
			}
			envs[s.Env] = true
		default:
			v.placed(key+".file", s.File, claim)
		}
	}
}

func (a *App) validateRoutes(v *validator) {
	for i, r := range a.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if !strings.HasPrefix(r.Path, "/") {
			v.add(key+".path", "want a path starting with '/', got %q", r.Path)
		}
		if r.Match != "prefix" && r.Match != "exact" {
			v.add(key+".match", "want \"prefix\" or \"exact\", got %q", r.Match)
		}
		if err := validSubject(r.Service); err != nil {
			v.add(key+".service", "%v", err)
		}
		for j, m := range r.Methods {
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/") {
				v.add(fmt.Sprintf("%s.methods[%d]", key, j), "want an upper-case HTTP method, got %q", m)
			}
		}
		if strings.ContainsAny(r.Host, " /\x00") {
			v.add(key+".host", "invalid host %q", r.Host)
		}
		v.maxDur(key+".timeout", r.Timeout, MaxTimeout)
		if r.MaxBody < 0 || r.MaxBody > 1<<40 {
			v.add(key+".max_body", "want 0 (gateway default) .. 1TiB")
		}
	}
}

// validSubject accepts a NATS subject without wildcards, as micro service
// names and route services are.
func validSubject(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 255 {
		return errors.New("longer than 255 characters")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n\x00") {
			return fmt.Errorf("invalid NATS subject %q: no empty tokens, spaces or wildcards", s)
		}
	}
	if consumer.IsReservedSubject(s) {
		return fmt.Errorf("%q: the $, _NARUN. and _INBOX. subjects are NATS's and narun's own, not a service's", s)
	}
	return nil
}

// validRel accepts a relative path that stays inside the instance dir.
func validRel(p string) error {
	switch {
	case p == "":
		return errors.New("must not be empty")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q must be relative to the instance directory", p)
	case hasDotDot(p):
		return fmt.Errorf("path %q must not contain '..'", p)
	case strings.ContainsRune(p, 0) || strings.Contains(p, "\\"):
		return fmt.Errorf("path %q contains a NUL byte or a backslash", p)
	case cleanRel(p) == "." || cleanRel(p) == "":
		return fmt.Errorf("path %q names the instance directory itself", p)
	}
	return nil
}

// placed checks the path key of a file or secret placed in the instance
// directory, and claims it.
func (v *validator) placed(key, p string, claim func(key, p string)) {
	if err := validRel(p); err != nil {
		v.add(key, "%v", err)
		return
	}
	first, _, _ := strings.Cut(cleanRel(p), "/")
	if why, ok := reserved[first]; ok {
		v.deployRule(key, "path %q: %q is reserved in the instance directory: %s; choose another path", p, first, why)
	}
	claim(key, p)
}

// reserved are the names the runner and the sandbox use in an instance
// directory. A file placed there is overwritten or unreadable to the app;
// they are refused in every mode, so switching to "sandbox" does not make a
// valid spec invalid. For a stored spec this is only a warning: the runner
// itself refuses the sandbox's data/ and tmp/, which the app may write.
var reserved = map[string]string{
	"pid":  "the runner replaces pid with its record of the instance's process at every start",
	"data": "in mode \"sandbox\" data/ is the app's writable directory, given to its uid, where a secret the runner writes stays root's and unreadable",
	"tmp":  "in mode \"sandbox\" tmp/ is the app's private /tmp, given to its uid, where a secret the runner writes stays root's and unreadable",
	"run":  "in mode \"sandbox\" run/ holds the bridge sockets and only root may enter it",
}

func hasDotDot(p string) bool {
	return slices.Contains(strings.Split(p, "/"), "..")
}

// cleanRel normalises a validated relative path ("a//b/./c" -> "a/b/c").
func cleanRel(p string) string {
	var out []string
	for _, part := range strings.Split(p, "/") {
		if part != "" && part != "." {
			out = append(out, part)
		}
	}
	return strings.Join(out, "/")
}

func validMode(m string) bool {
	if m == "" || len(m) > 3 {
		return false
	}
	seen := map[rune]bool{}
	for _, c := range m {
		if !strings.ContainsRune("rwx", c) || seen[c] {
			return false
		}
		seen[c] = true
	}
	return true
}

func isZero(s Sandbox) bool {
	return s.Landlock == "" && s.Presets == nil && s.Paths == nil && s.User == "" && s.Group == "" && s.Network == ""
}

var signals = map[string]syscall.Signal{
	"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGKILL": syscall.SIGKILL,
}

// normalSignal accepts "TERM", "sigterm" and "SIGTERM" alike.
func normalSignal(s string) (string, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "SIG") {
		u = "SIG" + u
	}
	_, ok := signals[u]
	return u, ok
}

// StopSig is the signal that asks an instance to stop.
func (a *App) StopSig() syscall.Signal { return signals[a.StopSignal] }

// CheckLabel refuses a node label that no spec's labels could select.
func CheckLabel(name, value string) error {
	if err := labelNameError(name); err != nil {
		return err
	}
	return labelValueError(value)
}

func labelNameError(name string) error {
	if !labelRe.MatchString(name) || len(name) > 128 {
		return fmt.Errorf("label name %q: want a letter or digit, then letters, digits, '.', '_', '/' or '-', at most 128 characters", name)
	}
	return nil
}

func labelValueError(value string) error {
	if value == "" || len(value) > 128 || strings.ContainsAny(value, "\x00\n") {
		return errors.New("label value must be 1..128 characters on one line")
	}
	return nil
}

// Selects reports whether the node with this id and labels runs the app.
func (a *App) Selects(nodeID string, labels map[string]string) bool {
	if slices.Contains(a.Nodes, nodeID) {
		return true
	}
	if len(a.Labels) == 0 {
		return false
	}
	for k, want := range a.Labels {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// ReplicasOn is the number of instances the node runs (0 when not selected).
func (a *App) ReplicasOn(nodeID string, labels map[string]string) int {
	if !a.Selects(nodeID, labels) {
		return 0
	}
	return a.Replicas
}

// Binary returns the pinned binary for arch.
func (a *App) Binary(arch string) (Binary, bool) {
	b, ok := a.Binaries[arch]
	return b, ok
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// WithBinaries returns the stored form of a spec: the operator's TOML
// unchanged (comments included) followed by the generated [binaries.<arch>]
// tables. src must not carry [binaries] itself; the result is validated.
// A signature trailer of src is dropped: the tables would follow it, and a
// trailer counts only as the last line, so ctl signs the result instead.
func WithBinaries(file string, src []byte, bins map[string]Binary) ([]byte, error) {
	src = signing.Strip(src)
	a, err := Parse(file, src)
	if err != nil {
		return nil, err
	}
	if len(a.Binaries) > 0 {
		return nil, fmt.Errorf("%s: key \"binaries\": already set; it is written by narun ctl deploy", file)
	}
	// SetFileDigests replaces only the table it wrote itself; one the
	// operator put anywhere else would be kept beside the new pins.
	if len(a.FileDigests) > 0 {
		return nil, fmt.Errorf("%s: key \"file_digests\": set without [binaries]; it is written by narun ctl deploy", file)
	}
	var b bytes.Buffer
	b.Write(src)
	if len(src) > 0 && src[len(src)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("\n# Written by narun ctl deploy: the exact binaries this spec runs.\n")
	arches := make([]string, 0, len(bins))
	for arch := range bins {
		arches = append(arches, arch)
	}
	sort.Strings(arches)
	for _, arch := range arches {
		fmt.Fprintf(&b, "[binaries.%s]\nobject = %q\nsha256 = %q\n", arch, bins[arch].Object, bins[arch].SHA256)
	}
	out := b.Bytes()
	if _, err := Parse(file, out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetRestartedAt returns src with its top-level restarted_at set to t; the
// new fingerprint makes the runner roll every instance as it does for a new
// version. The line that sets it is replaced where it is, comments and
// layout kept, or one is added first. The result is checked to parse and to
// differ from src in restarted_at only, so a spec whose restarted_at cannot
// be rewritten line by line (a value on several lines) is an error rather
// than a stored spec that runners refuse. src is checked as a stored spec
// (ParseStored): restarting an app deployed by an earlier narun ctl is not
// a new deploy, and a deploy checks its spec itself. A signature trailer
// of src is dropped, as no longer matching: ctl signs the result again.
func SetRestartedAt(file string, src []byte, t time.Time) ([]byte, error) {
	src = signing.Strip(src)
	before, _, err := ParseStored(file, src)
	if err != nil {
		return nil, err
	}
	value := t.UTC().Format(time.RFC3339Nano)
	line := fmt.Sprintf("restarted_at = %q # written by narun ctl app restart\n", value)
	lines := bytes.SplitAfter(src, []byte("\n"))
	replaced := false
	for i, l := range lines {
		text := strings.TrimSpace(string(l))
		if strings.HasPrefix(text, "[") {
			// Top-level keys precede the first table; below it a
			// restarted_at belongs to that table.
			break
		}
		if k, _, ok := strings.Cut(text, "="); ok && !strings.HasPrefix(text, "#") && normKey(k) == "restarted_at" {
			lines[i], replaced = []byte(line), true
			break
		}
	}
	out := bytes.Join(lines, nil)
	if !replaced {
		out = append([]byte(line), src...)
	}
	after, _, err := ParseStored(file, out)
	if err != nil {
		return nil, fmt.Errorf("%s: key \"restarted_at\": cannot set it in this spec (remove restarted_at, or put it on one line before the first table): %w", file, err)
	}
	if after.RestartedAt != value {
		return nil, fmt.Errorf("%s: key \"restarted_at\": cannot set it in this spec: remove restarted_at, or put it on one line before the first table", file)
	}
	after.RestartedAt = before.RestartedAt
	if !reflect.DeepEqual(before, after) {
		return nil, fmt.Errorf("%s: key \"restarted_at\": cannot set it without changing other keys (a line inside a multi-line string looks like it): remove restarted_at, or put it on one line before the first table", file)
	}
	return out, nil
}

// fileDigestsComment opens the table SetFileDigests writes; a table it
// replaces loses the comment too.
const fileDigestsComment = "# Written by narun ctl: the content each [[files]] object must have."

// SetFileDigests returns src with its [file_digests] table set to digests
// (object name -> SHA-256 hex; none removes the table), after everything
// else: ctl writes it after [binaries] and replaces it when the objects
// change (app restart). Only a table that starts on a line of its own and
// runs to the next table or the end is replaced, as ctl writes it; the
// result is checked to differ from src in file_digests only, so a spec
// that sets it another way is an error rather than a spec with two. src
// is checked as a stored spec (ParseStored), as app restart reads one. A
// signature trailer of src is dropped: ctl signs the result.
func SetFileDigests(file string, src []byte, digests map[string]string) ([]byte, error) {
	src = signing.Strip(src)
	before, _, err := ParseStored(file, src)
	if err != nil {
		return nil, err
	}
	out := src
	if len(before.FileDigests) > 0 {
		if out, err = removeTable(src, "file_digests"); err != nil {
			return nil, fmt.Errorf("%s: key \"file_digests\": %w", file, err)
		}
		out = bytes.TrimSuffix(bytes.TrimSuffix(out, []byte(fileDigestsComment+"\n")), []byte("\n"))
	}
	if len(digests) > 0 {
		var b bytes.Buffer
		b.Write(out)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			b.WriteByte('\n')
		}
		b.WriteString("\n" + fileDigestsComment + "\n[file_digests]\n")
		for _, obj := range sortedKeys(digests) {
			fmt.Fprintf(&b, "%q = %q\n", obj, digests[obj])
		}
		out = b.Bytes()
	}
	after, _, err := ParseStored(file, out)
	if err != nil {
		return nil, err
	}
	if !maps.Equal(after.FileDigests, digests) {
		return nil, fmt.Errorf("%s: key \"file_digests\": cannot replace it in this spec: remove it (narun ctl writes it)", file)
	}
	after.FileDigests = before.FileDigests
	if !reflect.DeepEqual(before, after) {
		return nil, fmt.Errorf("%s: key \"file_digests\": cannot replace it without changing other keys: remove it (narun ctl writes it)", file)
	}
	return out, nil
}

// removeTable cuts the lines of table name from its header to the next
// table header or the end; src must have the table under a header.
func removeTable(src []byte, name string) ([]byte, error) {
	lines := bytes.SplitAfter(src, []byte("\n"))
	start := -1
	for i, l := range lines {
		text := strings.TrimSpace(string(l))
		if start < 0 {
			if strings.HasPrefix(text, "[") && !strings.HasPrefix(text, "[[") && normKey(strings.Trim(strings.SplitN(text, "]", 2)[0], "[ ")) == name {
				start = i
			}
			continue
		}
		if strings.HasPrefix(text, "[") {
			return slices.Concat(bytes.Join(lines[:start], nil), bytes.Join(lines[i:], nil)), nil
		}
	}
	if start < 0 {
		return nil, errors.New("cannot replace it in this spec: not a [file_digests] table on its own; remove it (narun ctl writes it)")
	}
	return bytes.Join(lines[:start], nil), nil
}
