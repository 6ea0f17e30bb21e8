package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/sandbox"
)

// sandboxes tracks the sandboxed runs of a runner: the live launch of each
// instance, for its cgroup figures, and the Landlock ABI it got.
type sandboxes struct {
	mu   sync.Mutex
	runs map[string]*sandboxRun
}

type sandboxRun struct {
	launch *sandbox.Launch // nil once the run ended
	abi    int
}

func instKey(app, id string) string { return app + "/" + id }

func (s *sandboxes) get(app, id string) (sandboxRun, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[instKey(app, id)]
	if !ok {
		return sandboxRun{}, false
	}
	return *r, true
}

func (s *sandboxes) set(app, id string, l *sandbox.Launch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		s.runs = map[string]*sandboxRun{}
	}
	r := &sandboxRun{launch: l}
	if l != nil {
		r.abi = l.LandlockABI()
	} else if old, ok := s.runs[instKey(app, id)]; ok {
		r.abi = old.abi
	}
	s.runs[instKey(app, id)] = r
}

func (s *sandboxes) forget(app, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.runs, instKey(app, id))
}

// decorate adds what the sandbox knows to an instance's status.
func (r *Runner) decorate(st state.Instance) state.Instance {
	if run, ok := r.sandboxes.get(st.App, st.ID); ok {
		abi := run.abi
		st.LandlockABI = &abi
	}
	return st
}

// instanceCgroup is the cgroup of an instance, in every mode, relative to
// each hierarchy's root.
func (r *Runner) instanceCgroup(inst InstanceLaunch) string {
	return sandbox.CgroupParent + "/" + r.cgroupScope + "/" + inst.App + "." + inst.Instance
}

// cgroupScope is the cgroup subtree of this runner's instances, under
// sandbox.CgroupParent: one per data dir, so that two runners on one
// machine (tests, narun up next to a system runner) never clean up each
// other's instances.
func cgroupScope(dataDir string) string {
	sum := sha256.Sum256([]byte(dataDir))
	return "r-" + hex.EncodeToString(sum[:6])
}

// command is the runner's own command factory: binaries of mode "exec"
// run as they are, those of mode "sandbox" through the sandbox launcher.
func (r *Runner) command(ctx context.Context, inst InstanceLaunch) (*supervisor.Process, error) {
	r.cpu.track(inst.App, inst.Instance)
	if inst.Mode != spec.ModeSandbox {
		return r.execCommand(ctx, inst)
	}
	cfg, err := r.sandboxConfig(inst)
	if err != nil {
		return nil, err
	}
	l, err := sandbox.Command(ctx, cfg)
	if err != nil {
		return nil, sandboxErr(err)
	}
	bctx, stopBridges := context.WithCancel(context.Background())
	p := &supervisor.Process{
		Cmd: l.Cmd,
		Start: func() error {
			for _, b := range cfg.Outbound {
				br, err := sandbox.ListenBridge(b.Socket, natsTarget(r.appURL))
				if err != nil {
					return fmt.Errorf("nats bridge: %w", err)
				}
				go func() {
					if err := br.Serve(bctx); err != nil {
						r.log.Warn("nats bridge stopped", "app", inst.App, "instance", inst.Instance, "err", err)
					}
				}()
			}
			if err := l.Start(); err != nil {
				return sandboxErr(err)
			}
			r.sandboxes.set(inst.App, inst.Instance, l)
			return nil
		},
		Wait: l.Wait,
		Release: func() {
			stopBridges()
			r.cpu.runEnded(inst.App, inst.Instance, func() float64 {
				r.sandboxes.set(inst.App, inst.Instance, nil)
				return l.Stats().CPU.Seconds()
			})
			if err := l.Cleanup(); err != nil {
				r.log.Warn("clean sandbox up", "app", inst.App, "instance", inst.Instance, "err", err)
			}
		},
	}
	if len(cfg.Inbound) > 0 {
		socks := map[string]string{}
		for _, b := range cfg.Inbound {
			socks[strconv.Itoa(int(b.Port))] = b.Socket
		}
		p.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(address)
			sock, ok := socks[port]
			if err != nil || !ok || (host != "127.0.0.1" && host != "localhost") {
				return nil, fmt.Errorf("dial %s: not bridged into the sandbox", address)
			}
			return sandbox.DialBridge(ctx, sock)
		}
	}
	return p, nil
}

// sandboxErr makes a setup failure permanent: the same config fails the
// same way, so restarting quickly only burns CPU. A launcher that died
// without a reason may have been killed, and is retried.
func sandboxErr(err error) error {
	var se *sandbox.SetupError
	if errors.As(err, &se) && se.Stage != "launcher" {
		return fmt.Errorf("%s: %w", err, supervisor.ErrPermanent)
	}
	if errors.Is(err, sandbox.ErrInvalidConfig) {
		return fmt.Errorf("%w: %w", err, supervisor.ErrPermanent)
	}
	return err
}

// natsTarget is the host:port the NATS bridge forwards to: the first
// server of the apps' URL list.
func natsTarget(urls string) string {
	if u, err := firstNATSURL(urls); err == nil && u.Host != "" {
		if u.Port() == "" {
			return net.JoinHostPort(u.Hostname(), strconv.Itoa(sandbox.DefaultNATSPort))
		}
		return u.Host
	}
	first, _, _ := strings.Cut(urls, ",")
	return first
}

// bridgedNATSURL is NARUN_NATS_URL inside a sandbox without network: the
// bridge, with the login app_nats_url gives for the server behind it,
// which the app must still present there.
func bridgedNATSURL(urls string) string {
	inside := &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(sandbox.DefaultNATSPort))}
	if u, err := firstNATSURL(urls); err == nil {
		inside.User = u.User
	}
	return inside.String()
}

// firstNATSURL parses the first server of a URL list; without a scheme it
// is nats://, as nats.go reads it.
func firstNATSURL(urls string) (*url.URL, error) {
	first, _, _ := strings.Cut(urls, ",")
	first = strings.TrimSpace(first)
	if !strings.Contains(first, "://") {
		first = "nats://" + first
	}
	return url.Parse(first)
}

// sandboxConfig turns an instance of a sandboxed spec into the sandbox's
// config, and gives the app's identity what it must read.
func (r *Runner) sandboxConfig(inst InstanceLaunch) (sandbox.Config, error) {
	sp := inst.Spec
	if sp == nil {
		return sandbox.Config{}, fmt.Errorf("sandbox instance %s without a spec: %w", inst.Instance, supervisor.ErrPermanent)
	}
	uid, gid, root, err := sandboxIdentity(sp.Name, sp.Sandbox)
	if err != nil {
		return sandbox.Config{}, fmt.Errorf("%w: %w", err, supervisor.ErrPermanent)
	}
	cfg := sandbox.Config{
		Binary:    inst.Path,
		Args:      append([]string{inst.Path}, inst.Args...),
		Env:       inst.Env,
		Dir:       inst.Dir,
		Hostname:  inst.Instance,
		Network:   sp.Sandbox.Network,
		UID:       uid,
		GID:       gid,
		AllowRoot: root,
		Landlock: sandbox.LandlockConfig{
			Mode:    sp.Sandbox.Landlock,
			Presets: sp.Sandbox.Presets,
		},
		Resources: cgroupLimits(sp),
		Cgroup:    r.instanceCgroup(inst),
		Hidden:    r.opts.Hidden,
	}
	if r.opts.SigningKeyFile != "" {
		cfg.Hidden = append(slices.Clone(cfg.Hidden), r.opts.SigningKeyFile)
	}
	for _, p := range sp.Sandbox.Paths {
		if root {
			if err := r.refuseDataDirGrant(p.Path); err != nil {
				return sandbox.Config{}, fmt.Errorf("%w: %w", err, supervisor.ErrPermanent)
			}
		}
		cfg.Landlock.Paths = append(cfg.Landlock.Paths, sandbox.Path{Path: p.Path, Access: p.Mode})
	}
	if cfg.Network != sandbox.NetworkHost && cfg.Network != "" {
		// No route out but the bridges: NATS on its usual port inside,
		// and the app's own ports reachable from the runner. A spec
		// stored before deploy refused an app port there is told why
		// it cannot run, rather than have its checks reach NATS.
		if h := sp.Health; sp.HTTP.Port == sandbox.DefaultNATSPort || (h.Type == spec.HealthHTTP || h.Type == spec.HealthTCP) && h.Port == sandbox.DefaultNATSPort {
			return sandbox.Config{}, fmt.Errorf("port %d is where the app reaches NATS inside its sandbox, not free for [http] or [health]: deploy the app with another port: %w", sandbox.DefaultNATSPort, supervisor.ErrPermanent)
		}
		cfg.Outbound = []sandbox.Bridge{sandbox.NATSBridge(inst.Dir)}
		cfg.Env = withEnv(cfg.Env, "NARUN_NATS_URL", bridgedNATSURL(r.appURL))
		if name := r.bridgedTLSName(); name != "" {
			cfg.Env = withEnv(cfg.Env, "NARUN_NATS_TLS_NAME", name)
		}
		if sp.HTTP.Port > 0 {
			cfg.Inbound = append(cfg.Inbound, sandbox.HTTPBridge(inst.Dir, uint16(sp.HTTP.Port)))
		}
		if h := sp.Health; (h.Type == spec.HealthHTTP || h.Type == spec.HealthTCP) && h.Port > 0 && h.Port != sp.HTTP.Port {
			cfg.Inbound = append(cfg.Inbound, sandbox.Bridge{Port: uint16(h.Port), Socket: filepath.Join(inst.Dir, "run", "health.sock")})
		}
	}
	if err := r.reachable(inst, uid, gid); err != nil {
		return sandbox.Config{}, err
	}
	return cfg, nil
}

// refuseDataDirGrant refuses a grant, to an app running as root, at,
// above or in the runner's data dir: root owns signing.key there, and an
// app that reads it signs specs of mode "exec", which every node trusting
// the key runs as root. The data dir's own modes keep an app of any other
// uid out. Both paths are taken with their symbolic links resolved, as the
// launcher opens a grant.
func (r *Runner) refuseDataDirGrant(grant string) error {
	g := filepath.Clean(grant)
	if real, err := filepath.EvalSymlinks(g); err == nil {
		g = real
	}
	d := r.opts.DataDir
	if real, err := filepath.EvalSymlinks(d); err == nil {
		d = real
	}
	if !pathHolds(g, d) && !pathHolds(d, g) {
		return nil
	}
	return fmt.Errorf("[[sandbox.paths]] %s: lets an app running as root read the runner's data dir %s, whose signing.key signs the specs that every node trusting it runs: grant paths that neither hold nor lie in it", grant, r.opts.DataDir)
}

// pathHolds says whether path is dir or lies below it; both are clean
// and absolute.
func pathHolds(dir, path string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// cgroupLimits are the spec's [resources] as the cgroup of an instance
// holds them, in every mode.
func cgroupLimits(sp *spec.App) sandbox.Resources {
	return sandbox.Resources{
		MemoryMax: int64(sp.Resources.Memory),
		CPUMillis: int64(math.Round(sp.Resources.CPU * 1000)),
		PidsMax:   int64(sp.Resources.Pids),
	}
}

func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// sandboxIdentity resolves the spec's user and group. Without a user the
// app gets a uid of its own (sandbox.AppID); root only when the spec
// names it.
func sandboxIdentity(app string, s spec.Sandbox) (uid, gid uint32, root bool, err error) {
	uid, gid = sandbox.AppID(app), sandbox.AppID(app)
	if s.User != "" {
		if n, perr := strconv.ParseUint(s.User, 10, 32); perr == nil {
			uid, gid = uint32(n), uint32(n)
			// The id of a user the node knows brings that user's primary
			// group, as its name would: the same number as a gid may be
			// a privileged group's (uid 6 and gid 6, disk, on Debian).
			if u, lerr := user.LookupId(s.User); lerr == nil {
				if gid, err = parseID("user", s.User, u.Gid); err != nil {
					return 0, 0, false, err
				}
			}
		} else {
			u, lerr := user.Lookup(s.User)
			if lerr != nil {
				return 0, 0, false, fmt.Errorf("sandbox user %q: %w", s.User, lerr)
			}
			// A user name brings its primary group along.
			if uid, err = parseID("user", s.User, u.Uid); err != nil {
				return 0, 0, false, err
			}
			// Root only by its name or number: an alias of uid 0 (toor, or
			// one a directory service gives) is refused, as a deploy could
			// not see that the name is root's on this node.
			if uid == 0 && s.User != "root" {
				return 0, 0, false, fmt.Errorf("sandbox user %q is uid 0, root's, which only user = \"root\" runs as: deploy the app with another user", s.User)
			}
			if gid, err = parseID("user", s.User, u.Gid); err != nil {
				return 0, 0, false, err
			}
		}
	}
	if s.Group != "" {
		if n, perr := strconv.ParseUint(s.Group, 10, 32); perr == nil {
			gid = uint32(n)
		} else {
			g, lerr := user.LookupGroup(s.Group)
			if lerr != nil {
				return 0, 0, false, fmt.Errorf("sandbox group %q: %w", s.Group, lerr)
			}
			if gid, err = parseID("group", s.Group, g.Gid); err != nil {
				return 0, 0, false, err
			}
		}
	}
	// The sandbox refuses gid 0 for any uid but root's. Said here in the
	// spec's words, since a spec stored before deploy refused it still
	// reaches the runner, and before the instance dir goes to that group.
	if gid == 0 && uid != 0 {
		group := fmt.Sprintf("group %q", s.Group)
		if s.Group == "" {
			group = fmt.Sprintf("the primary group of user %q", s.User)
		}
		return 0, 0, false, fmt.Errorf("sandbox %s is gid 0, root's group, which only user = \"root\" may run as: deploy the app with another group", group)
	}
	return uid, gid, uid == 0, nil
}

// parseID reads a numeric id from the user or group database. An entry
// that does not parse is an error, never id 0: that would be root.
func parseID(what, name, id string) (uint32, error) {
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("sandbox %s %q: id %q is not a number", what, name, id)
	}
	return uint32(n), nil
}

// reachable lets the app's identity reach its binary and instance
// directory: the runner's directories on the way become searchable (not
// listable) by others, the directories placed in the instance dir
// enterable by the app's group, and its secret files (mode 0400) its own.
func (r *Runner) reachable(inst InstanceLaunch, uid, gid uint32) error {
	fail := func(err error) error {
		return fmt.Errorf("give uid %d access to its instance: %w: %w", uid, err, supervisor.ErrPermanent)
	}
	for d := filepath.Dir(r.opts.DataDir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fail(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fail(fmt.Errorf("%s (mode %04o) is not searchable by others: chmod o+x it or choose another data_dir", d, fi.Mode().Perm()))
		}
		if d == "/" {
			break
		}
	}
	dirs := []string{r.opts.DataDir, r.instancesDir(), filepath.Dir(inst.Dir), r.cache.dir}
	// The binary is executed by its link, in exec/<app>/<build>/.
	for d := filepath.Dir(inst.Path); strings.HasPrefix(d, r.opts.DataDir+"/"); d = filepath.Dir(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil {
			return fail(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fail(err)
			}
		}
	}
	// data/, tmp/ and run/ belong to the sandbox and the app; nothing in
	// them is followed.
	skip := map[string]bool{"data": true, "tmp": true, "run": true}
	err := filepath.WalkDir(inst.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(inst.Dir, p)
		switch {
		case p == inst.Dir:
			return nil
		case d.IsDir() && skip[rel]:
			return filepath.SkipDir
		case d.IsDir():
			return os.Lchown(p, -1, int(gid))
		case d.Type().IsRegular():
			if fi, err := d.Info(); err == nil && fi.Mode().Perm() == 0o400 {
				return os.Lchown(p, int(uid), int(gid))
			}
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// bridgedTLSName is the name an app behind the NATS bridge checks the
// server's certificate for: it dials 127.0.0.1, but talks TLS with the
// server the bridge leads to. "" when the apps use no TLS.
func (r *Runner) bridgedTLSName() string {
	u, err := firstNATSURL(r.appURL)
	if err != nil || r.appCA() == "" && u.Scheme != "tls" {
		return ""
	}
	return u.Hostname()
}
