package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// maxABI is the highest Landlock ABI the sandbox asks for. Newer kernels
// are used at this level: ABI 10 restricts UDP, which would need rules of
// its own (DNS) that are not written yet. From ABI 9 an app connects only
// to the pathname unix sockets it created and to those under a path the
// config grants "w"; the bridges' sockets need no rule, as the launcher
// uses them before Landlock and the runner outside it.
const maxABI = 9

var abiConfigs = []landlock.Config{landlock.V1, landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5,
	landlock.V6, landlock.V7, landlock.V8, landlock.V9}

const (
	rightsReadFile  = ll.AccessFSReadFile
	rightsReadDir   = ll.AccessFSReadFile | ll.AccessFSReadDir
	rightsWriteFile = ll.AccessFSWriteFile | ll.AccessFSTruncate
	rightsWriteDir  = ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo | ll.AccessFSMakeSym | ll.AccessFSRefer
	rightsExec = ll.AccessFSExecute
)

// presets maps a preset to the paths it grants; each is optional, since
// distributions differ. The tmp preset is a mount, handled apart.
var presets = map[string][]Path{
	PresetStdio: {
		{Path: "/dev/null", Access: "rw", Optional: true},
		{Path: "/dev/zero", Access: "r", Optional: true},
		{Path: "/dev/full", Access: "rw", Optional: true},
		{Path: "/dev/random", Access: "r", Optional: true},
		{Path: "/dev/urandom", Access: "r", Optional: true},
	},
	// The certificates and OpenSSL's configuration, not their whole
	// directories: /etc/ssl/private and /etc/pki/tls/private beside them
	// hold the host's TLS private keys, which only file permissions, that
	// let uid 0 in, would keep from an app running as root. The bundles'
	// paths are those Go's crypto/x509 and OpenSSL look in.
	PresetCerts: {
		{Path: "/etc/ssl/certs", Access: "r", Optional: true},
		{Path: "/etc/ssl/cert.pem", Access: "r", Optional: true},
		{Path: "/etc/ssl/ca-bundle.pem", Access: "r", Optional: true},
		{Path: "/etc/ssl/openssl.cnf", Access: "r", Optional: true},
		{Path: "/etc/pki/tls/certs", Access: "r", Optional: true},
		{Path: "/etc/pki/tls/cert.pem", Access: "r", Optional: true},
		{Path: "/etc/pki/tls/cacert.pem", Access: "r", Optional: true},
		{Path: "/etc/pki/tls/openssl.cnf", Access: "r", Optional: true},
		{Path: "/etc/pki/ca-trust", Access: "r", Optional: true},
		{Path: "/etc/pki/java", Access: "r", Optional: true},
		{Path: "/etc/ca-certificates", Access: "r", Optional: true},
		{Path: "/usr/share/ca-certificates", Access: "r", Optional: true},
		{Path: "/usr/local/share/ca-certificates", Access: "r", Optional: true},
	},
	PresetDNS: {
		{Path: "/etc/resolv.conf", Access: "r", Optional: true},
		{Path: "/etc/hosts", Access: "r", Optional: true},
		{Path: "/etc/nsswitch.conf", Access: "r", Optional: true},
		{Path: "/etc/host.conf", Access: "r", Optional: true},
		{Path: "/etc/gai.conf", Access: "r", Optional: true},
	},
	PresetSharedLibs: {
		{Path: "/lib", Access: "rx", Optional: true},
		{Path: "/lib64", Access: "rx", Optional: true},
		{Path: "/usr/lib", Access: "rx", Optional: true},
		{Path: "/usr/lib64", Access: "rx", Optional: true},
		{Path: "/usr/local/lib", Access: "rx", Optional: true},
		{Path: "/etc/ld.so.cache", Access: "r", Optional: true},
		{Path: "/etc/ld.so.conf", Access: "r", Optional: true},
		{Path: "/etc/ld.so.conf.d", Access: "r", Optional: true},
	},
	PresetProcSelf: {
		{Path: "/proc", Access: "r"},
	},
}

// timeZoneData is granted to every app: without it a program's local
// time is UTC on a host that keeps another, and Go's time.LoadLocation
// fails with permission denied. It is public data, as on any host. Not a
// preset: a new default preset would change the fingerprint of every
// stored sandbox spec, which runners and ctl of neighbouring releases
// compare.
var timeZoneData = []Path{
	{Path: "/etc/localtime", Access: "r", Optional: true},
	{Path: "/etc/timezone", Access: "r", Optional: true},
	{Path: "/usr/share/zoneinfo", Access: "r", Optional: true},
}

// landlockABI returns the kernel's Landlock ABI version, 0 without Landlock.
func landlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}

// landlockPaths lists the paths the sandbox itself gives the app, before
// they are checked: the instance dir readable, its data/ writable, the
// binary executable, the time zone data, then presets. The config's own
// paths come on top.
func landlockPaths(cfg *Config) []Path {
	paths := append([]Path{
		{Path: cfg.Dir, Access: "r"},
		{Path: filepath.Join(cfg.Dir, "data"), Access: "rw"},
		{Path: cfg.Binary, Access: "rx"},
	}, timeZoneData...)
	if hasPreset(cfg, PresetTmp) {
		paths = append(paths, Path{Path: "/tmp", Access: "rw"})
	}
	for _, p := range cfg.Landlock.Presets {
		paths = append(paths, presets[p]...)
	}
	return paths
}

// landlockRules turns paths and ports into go-landlock rules for the
// given ABI. A missing non-optional path is an error naming it. With g,
// each rule is for the file g opened for its path (openGrants), else for
// the path as it stands. A granted directory above a file of hidden the
// app could read is ruled entry by entry (splitGrant); the files it opens
// for that are held until release is called, after Restrict.
func landlockRules(cfg *Config, kernelABI int, g grants, hidden []hiddenPath) (_ landlock.Config, _ []landlock.Rule, release func(), err error) {
	base := abiConfigs[min(kernelABI, maxABI)]
	sp := newSplitter(cfg, hidden, base.HandledAccessFS)
	defer func() {
		if err != nil {
			sp.release()
		}
	}()
	var rules []landlock.Rule
	own := landlockPaths(cfg)
	for i, p := range append(own, cfg.Landlock.Paths...) {
		path := p.Path
		var f *os.File
		var st os.FileInfo
		var err error
		if g == nil {
			st, err = os.Stat(path)
		} else if gf, ok := g[filepath.Clean(path)]; ok {
			f, path = gf, fdPath(gf)
			st, err = f.Stat()
		} else {
			err = &fs.PathError{Op: "stat", Path: path, Err: syscall.ENOENT}
		}
		if err != nil {
			if p.Optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return base, nil, nil, fmt.Errorf("path %s: %w", p.Path, err)
		}
		operator := i >= len(own)
		if st.IsDir() && len(sp.onWay) > 0 {
			split, ok, err := sp.splitGrant(f, p, operator)
			if err != nil {
				return base, nil, nil, fmt.Errorf("path %s: %w", p.Path, err)
			}
			if ok {
				rules = append(rules, split...)
				continue
			}
		}
		rights := grantRights(p.Access, st.IsDir(), operator) & base.HandledAccessFS
		if rights == 0 {
			continue
		}
		rules = append(rules, landlock.PathAccess(rights, path))
	}
	handled := []any{base.HandledAccessFS}
	if restrictTCP(cfg) && base.HandledAccessNet != 0 {
		tcp := landlock.AccessNetSet(ll.AccessNetBindTCP | ll.AccessNetConnectTCP)
		handled = append(handled, tcp)
		for _, b := range cfg.Outbound {
			rules = append(rules, landlock.ConnectTCP(b.Port))
		}
		for _, b := range cfg.Inbound {
			// The app listens on the port; the launcher connects to it.
			rules = append(rules, landlock.BindTCP(b.Port), landlock.ConnectTCP(b.Port))
		}
		for _, p := range cfg.Landlock.ConnectTCP {
			rules = append(rules, landlock.ConnectTCP(p))
		}
		for _, p := range cfg.Landlock.BindTCP {
			rules = append(rules, landlock.BindTCP(p))
		}
	}
	scoped := base.Scoped
	if kernelABI < 8 {
		// Before ABI 8, go-landlock restricts each thread on its own, so
		// each launcher thread is a separate domain, and one that did not
		// fork the app may not signal it: stops would fail at random.
		scoped &^= landlock.ScopedSet(ll.ScopeSignal)
	}
	if scoped != 0 {
		handled = append(handled, scoped)
	}
	c, err := landlock.NewConfig(handled...)
	if err != nil {
		return base, nil, nil, err
	}
	return *c, rules, sp.release, nil
}

// grantRights are the Landlock rights access ("r", "w", "x") gives on a
// directory or on a file. operator says the grant is the config's own, not
// one the sandbox adds.
func grantRights(access string, dir, operator bool) landlock.AccessFSSet {
	var rights landlock.AccessFSSet
	read, write, exec := rightsReadFile, rightsWriteFile, rightsExec
	if dir {
		read, write = rightsReadDir, rightsWriteDir
	}
	if strings.Contains(access, "r") {
		rights |= landlock.AccessFSSet(read)
	}
	if strings.Contains(access, "w") {
		rights |= landlock.AccessFSSet(write)
		if operator {
			// Connecting is how a client writes to a unix socket, so
			// an operator granting "w" on a socket, or on the
			// directory holding one, means the app to reach it. The
			// sandbox's own paths and presets hold no socket an app
			// needs: they keep ABI 9's refusal.
			rights |= landlock.AccessFSSet(ll.AccessFSResolveUnix)
		}
	}
	if strings.Contains(access, "x") {
		rights |= landlock.AccessFSSet(exec)
	}
	return rights
}

// restrictTCP says whether TCP bind and connect are confined: always
// without host networking, and with it only when the config lists ports.
func restrictTCP(cfg *Config) bool {
	return cfg.newNet() || len(cfg.Landlock.ConnectTCP) > 0 || len(cfg.Landlock.BindTCP) > 0
}
