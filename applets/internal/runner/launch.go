package runner

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/elfarch"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/supervisor"
)

// online returns the JetStream handles when NATS is reachable, else nil,
// without waiting for a reconnect under way.
func (r *Runner) online() *resources {
	if !r.connected.Load() {
		return nil
	}
	return r.res.Load()
}

// defaultPATH is systemd's PATH for services: an app that runs a program
// by name (exec.Command("sh"), a script's commands) finds it as it would
// under a unit, without the runner's own environment reaching it.
const defaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// setByApp says whether the spec's env or one of its secrets sets the
// variable name.
func setByApp(sp *spec.App, name string) bool {
	if _, ok := sp.Env[name]; ok {
		return true
	}
	return slices.ContainsFunc(sp.Secrets, func(s spec.Secret) bool { return s.Env == name })
}

// identityEnv is what systemd gives a service run as User=: HOME, USER and
// LOGNAME, but for those the app sets itself. Many programs (shells, git,
// Python, Go's os.UserHomeDir) misbehave without HOME. It is a directory
// of the instance that the app may write: one outside it would be shared
// by the replicas and outlive the instance, and the sandboxed app's own
// home, if its user has one, is out of its reach. USER and LOGNAME name
// the user the app runs as, and are left out for a uid without a name,
// such as the one the sandbox derives from the app's name.
func identityEnv(sp *spec.App, dir string) []string {
	home, uid := dir, os.Getuid()
	if sp.Mode == spec.ModeSandbox {
		// The sandbox's root holds the host's tree at the same paths, so
		// data/ is where the app sees it, and the one directory of the
		// instance it may write.
		home, uid = filepath.Join(dir, "data"), -1
		if id, _, _, err := sandboxIdentity(sp.Name, sp.Sandbox); err == nil {
			uid = int(id)
		}
	}
	name := ""
	if uid >= 0 {
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			name = u.Username
		}
	}
	var env []string
	for _, v := range []struct{ key, value string }{{"HOME", home}, {"LOGNAME", name}, {"USER", name}} {
		if v.value != "" && !setByApp(sp, v.key) {
			env = append(env, v.key+"="+v.value)
		}
	}
	return env
}

// foreignArch says that a binary for arch cannot run here, and what can.
func foreignArch(arch string) error {
	return fmt.Errorf("binary is linux/%s, this node is linux/%s: deploy a build for %s", arch, runtime.GOARCH, runtime.GOARCH)
}

// execFormatHint says why the kernel would not execute the binary at path
// (ENOEXEC), as its header tells: built for another arch, or no ELF
// executable at all.
func execFormatHint(path string) error {
	arch, err := elfarch.DetectFile(path)
	switch {
	case err != nil:
		return err
	case arch != runtime.GOARCH:
		return foreignArch(arch)
	}
	return errors.New("the kernel does not execute it, though its header says linux/" + arch)
}

// prepare fetches what an instance needs into its directory and returns
// how to start it.
func (r *Runner) prepare(ctx context.Context, sp *spec.App, id, dir string) (supervisor.InstanceLaunch, error) {
	var l supervisor.InstanceLaunch
	if sp.Mode == spec.ModeSandbox && !r.caps.Sandbox {
		msg := "sandbox mode not available on this node (it needs root and the pid, mount, ipc, uts and net namespaces)"
		// The note names what is missing here (qemu-user, a container).
		if r.caps.SandboxNote != "" {
			msg += ": " + r.caps.SandboxNote
		}
		return l, fmt.Errorf("%s: %w", msg, supervisor.ErrPermanent)
	}
	if err := checkSandboxPlacements(sp); err != nil {
		return l, err
	}
	b, ok := sp.Binary(runtime.GOARCH)
	if !ok {
		return l, fmt.Errorf("no binary for linux/%s in the spec (deploy one with --binary): %w", runtime.GOARCH, supervisor.ErrPermanent)
	}
	res := r.online()
	var obs jetstream.ObjectStore
	if res != nil {
		obs = res.binaries
	}
	bin, err := r.cache.binary(ctx, obs, b)
	if err != nil {
		return l, err
	}
	// The spec names the binary after this node's arch, but only its
	// header says what it is built for, and the kernel refuses every exec
	// of another's: no restart would ever run it.
	if arch, err := elfarch.DetectFile(bin); err == nil && arch != runtime.GOARCH {
		return l, fmt.Errorf("%w: %w", foreignArch(arch), supervisor.ErrPermanent)
	}
	// ps, top and pgrep name the process after the path it is run by. A
	// name is not worth an app that does not start (a full disk): without
	// its link, the binary runs by its digest, as verified all the same.
	if link, err := r.links.link(sp.Name, b.SHA256, bin); err != nil {
		r.log.Warn("binary runs by its digest, not by a link named after the app", "app", sp.Name, "err", err)
	} else {
		bin = link
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return l, fmt.Errorf("create instance directory: %w", err)
	}
	for _, f := range sp.Files {
		if err := r.placeFile(ctx, res, f, sp.FileDigests[f.Object], dir); err != nil {
			return l, err
		}
	}
	env := make([]string, 0, len(sp.Env)+len(sp.Secrets)+10)
	if !setByApp(sp, "PATH") {
		env = append(env, "PATH="+defaultPATH)
	}
	env = append(env, identityEnv(sp, dir)...)
	if sp.Resources.Memory > 0 && !setByApp(sp, "GOMEMLIMIT") {
		// Go does not read its cgroup's memory limit: without a soft
		// limit a Go app's heap grows to twice what is live before a
		// collection, and the kernel kills it at [resources] memory with
		// much of its heap garbage. Other programs ignore the variable.
		env = append(env, "GOMEMLIMIT="+strconv.FormatInt(cli.SoftMemoryLimit(int64(sp.Resources.Memory)), 10))
	}
	if sp.Resources.CPU > 0 && !setByApp(sp, "GOMAXPROCS") {
		// What Go 1.25 derives from the quota itself; Go before 1.25
		// never did, and without it schedules on every core and is
		// throttled.
		env = append(env, "GOMAXPROCS="+strconv.Itoa(goMaxProcs(sp.Resources.CPU, runtime.NumCPU())))
	}
	for _, k := range slices.Sorted(maps.Keys(sp.Env)) {
		env = append(env, k+"="+sp.Env[k])
	}
	for _, s := range sp.Secrets {
		v, err := r.secret(ctx, res, s.Name)
		if err != nil {
			if errors.Is(err, errUnset) {
				r.removeRevoked(sp, s.Name, dir)
			}
			return l, err
		}
		if s.Env != "" {
			if err := envFit(s.Env, v); err != nil {
				return l, fmt.Errorf("secret %q: %w: give it as a file (file = \"...\") instead: %w", s.Name, err, supervisor.ErrPermanent)
			}
			env = append(env, s.Env+"="+string(v))
			continue
		}
		if err := placeSecret(dir, s.File, v); err != nil {
			return l, fmt.Errorf("secret %q: %w", s.Name, err)
		}
	}
	env = append(env,
		"NARUN_APP="+sp.Name,
		"NARUN_APP_VERSION="+sp.Version,
		"NARUN_INSTANCE="+id,
		"NARUN_NODE="+r.node,
		"NARUN_NATS_URL="+r.appURL,
	)
	if c := r.opts.Config.AppNATSCreds; c != "" {
		env = append(env, "NARUN_NATS_CREDS="+c)
	}
	if k := r.opts.Config.AppNATSNkey; k != "" {
		env = append(env, "NARUN_NATS_NKEY="+k)
	}
	env = append(env, r.appTLSEnv()...)
	return supervisor.InstanceLaunch{
		App: sp.Name, Node: r.node, Instance: id, Mode: sp.Mode,
		Path: bin, Args: sp.Args, Env: env, Dir: dir, Spec: sp,
	}, nil
}

// placeFile copies an object of narun-files into the instance dir,
// read-only. The last copy fetched is kept under <data>/files for when NATS
// is unreachable, and its object digest under <data>/file-digests: beside
// it, the digest of object X would be cached where object X.digest is.
// pin is the SHA-256 (hex) the spec allows, "" in a spec stored before
// ctl pinned files: a signed spec then covers the file's bytes too, so an
// object replaced in narun-files without a new spec never reaches an
// instance, from the store or from the cache. The content placed is also
// goMaxProcs is the GOMAXPROCS Go 1.25 takes under a CPU limit of cpu
// cores on a machine of cores: the limit rounded up, at least 2, at most
// the cores (the runtime's adjustCgroupGOMAXPROCS).
func goMaxProcs(cpu float64, cores int) int {
	return min(cores, max(2, int(math.Ceil(cpu))))
}

// kept under <data>/files-pinned, by its digest, while a spec pins it:
// files put replaces the object and its one cached copy, but a rollback,
// or the restart of an instance of an older spec, needs the bytes that
// spec pins.
func (r *Runner) placeFile(ctx context.Context, res *resources, f spec.File, pin, dir string) error {
	cached := filepath.Join(r.filesDir(), f.Object)
	// A copy without a digest there (an earlier runner kept digests beside
	// the copies) is fetched again, and so is a digest without its copy.
	digestFile := filepath.Join(r.fileDigestsDir(), f.Object)
	r.uses.use(cached, digestFile)
	if pin != "" {
		r.uses.use(filepath.Join(r.filesPinnedDir(), pin))
	}
	have, _ := os.ReadFile(digestFile)
	// fetch replaces the cached copy and its digest with the object as
	// narun-files holds it; nil when the store cannot be asked.
	var fetch func() error
	var fetchErr error
	fetched := false
	if res != nil {
		info, err := res.files.GetInfo(ctx, f.Object)
		switch {
		case store.IsNotFound(err):
			return fmt.Errorf("file %q not found in %s: %w", f.Object, names.FilesBucket, err)
		case err != nil:
			fetchErr = err
			r.log.Warn("fetch file info; trying the cached copy", "file", f.Object, "err", err)
		case pin != "" && store.DigestHex(info) != pin:
			// Only a new spec changes the pin, so retrying cannot help.
			return r.placeKept(f, pin, dir, fmt.Errorf("file %s: %s holds sha256 %s, the spec pins %s: the object changed after the spec was stored; not placed (narun ctl app restart pins what it holds now): %w",
				f.Object, names.FilesBucket, store.DigestHex(info), pin, supervisor.ErrPermanent))
		}
		if err == nil {
			fetch = func() error {
				obj, err := openObject(ctx, res.files, f.Object, fetchStall)
				if err != nil {
					return fmt.Errorf("fetch file %q: %w", f.Object, err)
				}
				// The digest goes before the copy it records is replaced:
				// a fetch cut short between the two (a power cut, a full
				// disk) left the new copy beside the old digest, which
				// then looked damaged and was removed at a start without
				// NATS. A copy without one is fetched again when NATS
				// answers, and placed as it is until then.
				if err := removeSynced(digestFile); err != nil {
					obj.Close()
					return fmt.Errorf("fetch file %q: %w", f.Object, err)
				}
				// The object store checks its own digest at the end of the
				// read, so a corrupted object fails the copy; the pin
				// catches an object replaced since GetInfo.
				err = writeVerified(r.filesDir(), cached, obj, pin, 0o444)
				obj.Close()
				if err != nil {
					return fmt.Errorf("fetch file %q: %w", f.Object, err)
				}
				if err := writeFileAtomic(digestFile, []byte(info.Digest), 0o600); err != nil {
					return fmt.Errorf("fetch file %q: %w", f.Object, err)
				}
				return nil
			}
		}
		_, missing := os.Stat(cached)
		if fetch != nil && (string(have) != info.Digest || missing != nil) {
			if err := fetch(); err != nil {
				return err
			}
			fetched = true
		}
	}
	src, got, err := openCachedFile(f, cached)
	if err != nil {
		if !os.IsNotExist(err) {
			return err
		}
		return r.placeKept(f, pin, dir, fmt.Errorf("file %q: %w; no cached copy", f.Object, unfetched(fetchErr)))
	}
	defer func() { src.Close() }()
	// The recorded digest is that of the bytes fetched: a copy that differs
	// from it changed on disk since (an SD card, a power cut), and neither
	// the store's digest, which it was not checked against, nor a spec
	// without a pin would keep it from being placed. One just fetched is
	// the object as the store verified it, replaced since GetInfo maybe.
	if recorded := store.DigestHex(&jetstream.ObjectInfo{Digest: string(have)}); !fetched && recorded != "" && got != recorded {
		damaged := fmt.Errorf("cached file %s damaged: sha256 %s, want %s", cached, got, recorded)
		r.log.Error("cached file does not match its digest: not placed, fetched again from the object store", "file", f.Object, "err", damaged)
		// The content kept for the pin is the same file when it was
		// linked from this copy, damaged alike: it goes with it.
		damagedFiles := []string{digestFile, cached}
		kept := filepath.Join(r.filesPinnedDir(), recorded)
		if fi, err := src.Stat(); err == nil {
			if ki, err := os.Stat(kept); err == nil && os.SameFile(fi, ki) {
				damagedFiles = append(damagedFiles, kept)
			}
		}
		src.Close()
		for _, p := range damagedFiles {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("file %q: %w; not removed: %w", f.Object, damaged, err)
			}
		}
		if fetch == nil {
			return r.placeKept(f, pin, dir, fmt.Errorf("file %q: %w; fetched again once NATS answers: %w", f.Object, damaged, errOffline))
		}
		if err := fetch(); err != nil {
			return err
		}
		if src, got, err = openCachedFile(f, cached); err != nil {
			return err
		}
	}
	if pin != "" && got != pin {
		// The copy the store could not be asked about may predate the
		// pin; a later attempt that reaches the store fetches the pinned
		// one. Whatever the recorded digest says, the next attempt
		// fetches the object again.
		os.Remove(digestFile)
		return r.placeKept(f, pin, dir, fmt.Errorf("file %s: the cached copy has sha256 %s, the spec pins %s; not placed: %w", f.Object, got, pin, errOffline))
	}
	// Kept without a pin too: a deploy that pins what an instance runs
	// restarts nothing (a spec of an earlier ctl, deployed again), and
	// that instance's restart after a files put needs these bytes. Not
	// keeping them costs a later start its file, not this one.
	if err := r.keepPinned(src, cached, got); err != nil {
		r.log.Warn("keep the placed content of a file for a later rollback", "file", f.Object, "sha256", got, "err", err)
	}
	return placeRead(f, src, dir)
}

// unfetched is why something a start needs did not come from the store:
// the error the store answered with, if it answered (a login that may
// not read the bucket), else errOffline.
func unfetched(fetchErr error) error {
	if fetchErr != nil {
		return fmt.Errorf("fetch: %w", fetchErr)
	}
	return errOffline
}

// openCachedFile opens the cached copy of f at path and returns it with
// the SHA-256 (hex) of its bytes.
func openCachedFile(f spec.File, path string) (*os.File, string, error) {
	src, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("file %q: %w", f.Object, err)
	}
	got, err := digestOf(src)
	if err != nil {
		src.Close()
		return nil, "", fmt.Errorf("file %q: read the cached copy: %w", f.Object, err)
	}
	return src, got, nil
}

// placeKept places the content pinned to pin from <data>/files-pinned,
// else returns notKept, the error of the copy it stands in for, when this
// node did not keep it. A kept copy whose bytes do not have that digest
// is removed, as if it had not been kept.
func (r *Runner) placeKept(f spec.File, pin, dir string, notKept error) error {
	if pin == "" {
		return notKept
	}
	kept := filepath.Join(r.filesPinnedDir(), pin)
	src, err := os.Open(kept)
	if err != nil {
		if !os.IsNotExist(err) {
			r.log.Warn("open the kept pinned content of a file", "file", f.Object, "sha256", pin, "err", err)
		}
		return notKept
	}
	defer src.Close()
	got, err := digestOf(src)
	if err != nil {
		return fmt.Errorf("file %q: read the kept pinned content: %w", f.Object, err)
	}
	if got != pin {
		r.log.Warn("removed a damaged copy of the pinned content of a file", "file", f.Object, "sha256", pin, "has", got)
		os.Remove(kept)
		return notKept
	}
	return placeRead(f, src, dir)
}

// placeRead places src, read to its end to check its digest, as f in the
// instance directory dir, read-only.
func placeRead(f spec.File, src *os.File, dir string) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("file %q: %w", f.Object, err)
	}
	if err := placeBeneath(dir, f.Path, src, 0o444); err != nil {
		return fmt.Errorf("place file %q at %s: %w", f.Object, f.Path, err)
	}
	return nil
}

// keepPinned makes sure <data>/files-pinned holds the content of sha256
// digest, which src, opened at path in the cache, was read to have. A
// hard link costs no space, and keeps the bytes when the cache's copy is
// replaced, by a rename, or removed.
func (r *Runner) keepPinned(src *os.File, path, digest string) error {
	kept := filepath.Join(r.filesPinnedDir(), digest)
	r.uses.use(kept)
	err := os.Link(path, kept)
	if err == nil {
		// Another fetch may have replaced the cache's copy since src was
		// read: the link then names other bytes.
		linked, serr := os.Stat(kept)
		verified, ferr := src.Stat()
		if serr == nil && ferr == nil && os.SameFile(linked, verified) {
			return nil
		}
		if err := os.Remove(kept); err != nil {
			return fmt.Errorf("remove a link to a replaced copy: %w", err)
		}
	} else if os.IsExist(err) {
		return nil
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", path, err)
	}
	if err := writeVerified(r.filesPinnedDir(), kept, src, digest, 0o444); err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	return nil
}

// sandboxAppDirs are the directories of a sandboxed instance that the
// sandbox gives to the app's uid (sandbox's prepareDir). The app may
// replace anything in them, a directory by a link out of the instance
// included, so the runner, which is root, places nothing there. ctl deploy
// refuses such paths in every mode, but only as a rule for new deploys: a
// spec stored by other means (an earlier ctl, a direct write to
// narun-apps) reaches the runner with a warning only.
var sandboxAppDirs = []string{"data", "tmp"}

// checkSandboxPlacements refuses a sandboxed spec that places a file or a
// secret in a directory its app may write.
func checkSandboxPlacements(sp *spec.App) error {
	if sp.Mode != spec.ModeSandbox {
		return nil
	}
	var paths []string
	for _, f := range sp.Files {
		paths = append(paths, f.Path)
	}
	for _, s := range sp.Secrets {
		if s.File != "" {
			paths = append(paths, s.File)
		}
	}
	for _, p := range paths {
		first, _, _ := strings.Cut(filepath.Clean(p), "/")
		if slices.Contains(sandboxAppDirs, first) {
			return fmt.Errorf("path %q is in %s/, which the sandboxed app may write: the runner places nothing where the app could put a link to elsewhere; deploy the spec with another path: %w", p, first, supervisor.ErrPermanent)
		}
	}
	return nil
}

// maxEnvString is the kernel's MAX_ARG_STRLEN, 32 pages: exec refuses a
// single environment string, its NUL included, longer than that. Pages
// are 4 KiB on most machines, 16 or 64 KiB on some arm64 and ppc64le
// kernels, where the limit is that much higher.
var maxEnvString = 32 * os.Getpagesize()

// envFit says why value cannot be the environment variable name, if it
// cannot: exec fails the same way on every attempt.
func envFit(name string, value []byte) error {
	if bytes.IndexByte(value, 0) >= 0 {
		return errors.New("its value holds a NUL byte")
	}
	if len(name)+1+len(value) >= maxEnvString {
		return fmt.Errorf("its value is %d bytes, more than an environment variable can carry, %d KiB (32 pages)", len(value), maxEnvString>>10)
	}
	return nil
}

// errUnset says that narun-secrets holds no value for a secret: never
// set, or deleted (secret delete --force), which revokes it.
var errUnset = errors.New("is not set")

// removeRevoked removes the files an earlier start of the instance in dir
// was given secret name in, which the store no longer holds: the
// instance waits for it with no process that could read them, for as
// long as its spec names the secret, and they held its value in plain.
func (r *Runner) removeRevoked(sp *spec.App, name, dir string) {
	for _, s := range sp.Secrets {
		if s.Name != name || s.File == "" {
			continue
		}
		if err := removeBeneath(dir, s.File); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("remove the file of a deleted secret from its instance", "app", sp.Name, "secret", name, "path", s.File, "err", err)
		}
	}
}

func placeSecret(dir, rel string, v []byte) error {
	return placeBeneath(dir, rel, bytes.NewReader(v), 0o400)
}

// secret decrypts a secret of narun-secrets. The sealed form (never the
// value) is kept under <data>/secrets for when NATS is unreachable.
func (r *Runner) secret(ctx context.Context, res *resources, name string) ([]byte, error) {
	ring, err := r.keys.load()
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	cached := filepath.Join(r.sealedDir(), name)
	r.uses.use(cached)
	var sealed []byte
	var fetchErr error
	for res != nil {
		drops := r.secretDrops.Load()
		e, err := res.secrets.Get(ctx, name)
		switch {
		case err == nil && r.revokedBefore(name, e.Revision()):
			// A replica behind the leader gave the value it deleted.
			return nil, fmt.Errorf("secret %q %w (narun ctl secret set %s)", name, errUnset, name)
		case err == nil && !r.cacheSealed(name, e.Value(), drops):
			// The store may have answered before a delete that the drop
			// acted on: what it says now decides.
			continue
		case err == nil:
			sealed = e.Value()
		case store.IsNotFound(err):
			// Deleted, most likely revoked (secret delete --force): the
			// copy kept for when NATS is away must not bring it back then.
			r.dropIfDeleted(ctx, name)
			return nil, fmt.Errorf("secret %q %w (narun ctl secret set %s)", name, errUnset, name)
		default:
			fetchErr = err
			r.log.Warn("fetch secret; trying the cached copy", "secret", name, "err", err)
		}
		break
	}
	fromCache := sealed == nil
	if fromCache {
		b, err := os.ReadFile(cached)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("secret %q: %w; read the cached copy: %w", name, unfetched(fetchErr), err)
			}
			return nil, fmt.Errorf("secret %q: %w; no cached copy", name, unfetched(fetchErr))
		}
		sealed = b
	}
	var v []byte
	s, err := secrets.Unmarshal(sealed)
	if err != nil {
		err = fmt.Errorf("secret %q: %w", name, err)
	} else {
		v, err = ring.Open(name, s)
	}
	switch {
	case errors.Is(err, secrets.ErrNoKey) && fromCache:
		// Not damage: the key file lost the key (replaced by one with
		// only the new key before this node fetched the secrets sealed
		// again). Removed, the copy could not open even with the key put
		// back while NATS is away.
		return nil, fmt.Errorf("secret %q: cached copy %s kept until the key file holds its key again or NATS answers: %w: %w", name, cached, err, errOffline)
	case err != nil && fromCache:
		// The copy on disk may be what is damaged, not the secret: the
		// store is asked again when it answers, and only its copy can
		// fail for good.
		if rerr := os.Remove(cached); rerr != nil {
			r.log.Warn("remove a cached sealed secret that does not open", "file", cached, "err", rerr)
		}
		return nil, fmt.Errorf("secret %q: cached copy %s does not open (%v); fetched again once NATS answers: %w", name, cached, err, errOffline)
	case errors.Is(err, secrets.ErrNoKey):
		// Retried, as a missing key file is: each attempt reads the key
		// file again, so copying the key there is enough.
		return nil, fmt.Errorf("%w; this node's key file %s lacks it: copy there the key file that holds it, or seal the secret again with a key this node holds (narun ctl secret set %s)", err, r.keys.path, name)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", err, supervisor.ErrPermanent)
	}
	return v, nil
}

// cacheSealed keeps sealed, read from the store after drops copies of
// deleted secrets had been removed, as the cached copy of secret name,
// and reports whether it did. It does not once another was removed since:
// that removal may be this secret's, its delete landing after the read,
// and the copy written back would serve the revoked secret at restarts
// while NATS is away, until the next resync or for good. A removal of
// another secret costs the caller one more read.
func (r *Runner) cacheSealed(name string, sealed []byte, drops uint64) bool {
	unlock := r.sealedLocks.lock(name)
	defer unlock()
	if r.secretDrops.Load() != drops {
		return false
	}
	if err := keepFile(filepath.Join(r.sealedDir(), name), sealed, 0o600); err != nil {
		r.log.Warn("cache sealed secret", "secret", name, "err", err)
	}
	return true
}

// bridgeVerdict is how long a bridged connection may stay silent before
// the check takes it as reaching the app: the launcher ends one at once
// when nothing listens inside the sandbox.
const bridgeVerdict = 100 * time.Millisecond

// bridgeReached tells whether a connection through a sandbox's bridge
// reached something inside. The launcher accepts the bridge's connection
// before it connects inside, and closes it when that fails: connecting
// alone would pass for an app that does not listen.
func bridgeReached(c net.Conn, addr string) error {
	if err := c.SetReadDeadline(time.Now().Add(bridgeVerdict)); err != nil {
		return err
	}
	var b [1]byte
	_, err := c.Read(b[:])
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return fmt.Errorf("nothing listens on %s inside the sandbox", addr)
}

// healthCheck builds the probe of the spec's [health] for instance id; nil
// for "none". known is what a micro check knows of the service's
// responders.
func (r *Runner) healthCheck(sp *spec.App, id string, known *microResponders) func(context.Context, supervisor.Target) error {
	h := sp.Health
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port))
	// On the host network another program may hold the port, and a
	// connection would reach it instead of the app: the listener must be
	// the instance's before anything is sent to it. An instance with a
	// network namespace of its own is reached through its bridge, where
	// no other program listens.
	owned := func(context.Context, supervisor.Target) error { return nil }
	bridged := ownNetwork(sp)
	if !bridged {
		owner := &portOwner{}
		var unknownOnce sync.Once
		owned = func(ctx context.Context, t supervisor.Target) error {
			err := owner.check(ctx, t, h.Port)
			if errors.Is(err, errOwnerUnknown) {
				unknownOnce.Do(func() {
					r.log.Info("cannot tell whether the health check's port is the instance's; checking it by connecting only",
						"app", sp.Name, "instance", id, "port", h.Port, "err", err)
				})
				return nil
			}
			return err
		}
	}
	switch h.Type {
	case spec.HealthTCP:
		return func(ctx context.Context, t supervisor.Target) error {
			if err := owned(ctx, t); err != nil {
				return err
			}
			c, err := t.Dial(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if bridged {
				return bridgeReached(c, addr)
			}
			return nil
		}
	case spec.HealthHTTP:
		url := "http://" + addr + h.Path
		return func(ctx context.Context, t supervisor.Target) error {
			if err := owned(ctx, t); err != nil {
				return err
			}
			client := &http.Client{
				Transport:     &http.Transport{DialContext: t.Dial, DisableKeepAlives: true},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode >= 400 {
				return fmt.Errorf("GET %s: %s", h.Path, resp.Status)
			}
			return nil
		}
	case spec.HealthMicro:
		// What the failures of a process found of the service it serves
		// under another name: kept for the rest of a streak of failed
		// checks once found, and not looked up while the start grace
		// spares the failure a report, as every service on the account
		// answers the lookup and it adds servedByWait to the check. A
		// lookup that found nothing is made again, as the app may register
		// its service late, but only at the streak's failed checks 1, 2,
		// 4, 8… past the grace: an app that never registers one would
		// have the account pinged at every check, while this way one
		// registered late is still found before the streak has doubled.
		// The checks of an instance run one at a time.
		var served struct {
			pid int
			svc servedService
			// failed counts the streak's failed checks past the grace
			// while nothing was found.
			failed int
		}
		return func(ctx context.Context, t supervisor.Target) error {
			if t.PID != served.pid {
				served.pid, served.svc, served.failed = t.PID, servedService{}, 0
			}
			err := r.pingInstance(ctx, h.Service, id, known, func() servedService {
				if served.svc.name == "" && !t.Starting {
					served.failed++
					if served.failed&(served.failed-1) == 0 {
						served.svc = r.servedBy(ctx, id, h.Service)
					}
				}
				return served.svc
			})
			if err == nil {
				served.svc, served.failed = servedService{}, 0
			}
			if err != nil && (errors.Is(err, errOffline) || !r.opts.Conn.IsConnected()) {
				// The runner, not the app, lost NATS: restarting the app
				// for it ([health] restart_after) would not help.
				return supervisor.Inconclusive(err)
			}
			return err
		}
	}
	return nil
}

// instanceMetadata is the NATS Micro metadata key under which a service
// names the instance it runs in (the runner's bridge does; the consumer
// package does it from NARUN_INSTANCE).
const instanceMetadata = "narun_instance"

// microResponders is what the NATS Micro check of an instance knows of
// the responders of its service.
type microResponders struct {
	mu sync.Mutex
	// before are the responders that answered before the instance's
	// process started: not it.
	before map[string]bool
	// named is set once a check passed on an answer that named the
	// instance in its metadata.
	named atomic.Bool
}

func (m *microResponders) baseline() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.before
}

func (m *microResponders) setBaseline(ids map[string]bool) {
	m.mu.Lock()
	m.before = ids
	m.mu.Unlock()
}

// pingInstance succeeds once this instance answers a NATS Micro ping of
// service. A responder is this instance when its metadata names it or, for
// services that do not say, when it was not among those answering before
// the instance's process started (known's baseline); otherwise another
// replica, or the old instance of a rolling update, would vouch for the
// new one. otherService names the service the instance serves instead, if
// it is known, when the instance does not answer.
func (r *Runner) pingInstance(ctx context.Context, service, id string, known *microResponders, otherService func() servedService) error {
	if !r.opts.Conn.IsConnected() {
		return errOffline
	}
	before := known.baseline()
	found := errors.New("found")
	var named bool
	err := r.ping(ctx, service, 100*time.Millisecond, func(p micro.Ping) error {
		inst, ok := p.Metadata[instanceMetadata]
		if ok && inst == id || !ok && !before[p.ID] {
			named = ok
			return found
		}
		return nil
	})
	if errors.Is(err, found) {
		if named {
			known.named.Store(true)
		}
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The other usual cause: a binary that names its service itself,
		// deployed under another app name, which the route's service
		// defaults to.
		other := otherService()
		if other.onSubject && other.name != service {
			// A route to service reaches it (consumer's Config.Subject):
			// renaming the route's service would break the route.
			return fmt.Errorf("no answer from instance %s to a ping of NATS Micro service %q: it serves the subject %q under the name %q (set [health] service = %q: the check pings a service by its name): %w", id, service, service, other.name, other.name, err)
		}
		if other := other.name; other != "" && other != service {
			return fmt.Errorf("no answer from instance %s to a ping of NATS Micro service %q: it serves %q (set service = %q in [[routes]] and [health], or have the app serve %q): %w", id, service, other, other, service, err)
		}
		// The usual cause is an app written as a plain HTTP server whose
		// spec has routes but no [http] port; the other, one that never
		// reached NATS (a login, a TLS file), which its log tells.
		return fmt.Errorf("no answer from instance %s to a ping of NATS Micro service %q (an app that serves plain HTTP needs [http] port; one that uses NATS may not have reached it: see the app's log (narun ctl logs)): %w", id, service, err)
	}
	return fmt.Errorf("ping %s: no answer from instance %s: %w", service, id, err)
}

// servedByWait bounds the search for the service an instance serves, which
// adds to a failed check only.
const servedByWait = 200 * time.Millisecond

// servedBy names the NATS Micro service whose answer to one ping of every
// service names instance id in its metadata; "" when none does within
// servedByWait. ctx only carries values: the check's own deadline is over.
func (r *Runner) servedBy(ctx context.Context, id, subject string) servedService {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), servedByWait)
	defer cancel()
	var served micro.Ping
	found := errors.New("found")
	_ = r.ping(ctx, "", servedByWait, func(p micro.Ping) error {
		if p.Metadata[instanceMetadata] == id {
			served = p
			return found
		}
		return nil
	})
	if served.Name == "" {
		return servedService{}
	}
	return servedService{name: served.Name, onSubject: r.servesSubject(ctx, served, subject)}
}

// servedService is what servedBy found of the service an instance serves.
type servedService struct {
	name string
	// onSubject is set when one of its endpoints listens on the subject
	// the check pinged as a name.
	onSubject bool
}

// servesSubject asks the responder p for its endpoints and reports whether
// one listens on subject; false without an answer.
func (r *Runner) servesSubject(ctx context.Context, p micro.Ping, subject string) bool {
	infoSubject, err := micro.ControlSubject(micro.InfoVerb, p.Name, p.ID)
	if err != nil {
		return false
	}
	m, err := r.opts.Conn.RequestWithContext(ctx, infoSubject, nil)
	if err != nil {
		return false
	}
	var info micro.Info
	if json.Unmarshal(m.Data, &info) != nil {
		return false
	}
	return slices.ContainsFunc(info.Endpoints, func(e micro.EndpointInfo) bool { return e.Subject == subject })
}

// ping sends NATS Micro pings to service every resend and hands each answer
// to each until it returns an error or ctx ends. Every responder of the
// service, across a cluster, answers each ping: the answers queue under
// the client's pending limits, not in a channel of a few slots, so that
// none is dropped while the ones before it are read.
func (r *Runner) ping(ctx context.Context, service string, resend time.Duration, each func(micro.Ping) error) error {
	subject, err := micro.ControlSubject(micro.PingVerb, service, "")
	if err != nil {
		return err
	}
	inbox := r.opts.Conn.NewRespInbox()
	sub, err := r.opts.Conn.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	for {
		if err := r.opts.Conn.PublishRequest(subject, inbox, nil); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		if err := readPings(ctx, sub, resend, each); err != nil {
			return err
		}
	}
}

// readPings hands each answer that reaches sub within resend to each; nil
// when it is time to ping again.
func readPings(ctx context.Context, sub *nats.Subscription, resend time.Duration, each func(micro.Ping) error) error {
	round, cancel := context.WithTimeout(ctx, resend)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(round)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case round.Err() != nil:
				return nil
			case errors.Is(err, nats.ErrNoResponders):
				// Nothing served the service when it was pinged; a
				// process may register it before the next ping.
				continue
			case errors.Is(err, nats.ErrSlowConsumer):
				// Answers past the pending limits were dropped; the
				// ones queued before them are still to read.
				continue
			}
			return fmt.Errorf("read answers: %w", err)
		}
		var p micro.Ping
		if json.Unmarshal(m.Data, &p) != nil {
			continue
		}
		if err := each(p); err != nil {
			return err
		}
	}
}

// respondersOf collects the ids of the instances of service that answer a
// ping within d.
func (r *Runner) respondersOf(ctx context.Context, service string, d time.Duration) map[string]bool {
	ids := map[string]bool{}
	if !r.opts.Conn.IsConnected() {
		return ids
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_ = r.ping(ctx, service, d, func(p micro.Ping) error {
		ids[p.ID] = true
		return nil
	})
	return ids
}

// warnEscaped logs the processes that an exec instance whose process group
// was pgid left running: descendants that left the group (setsid, a
// daemon's double fork), which stopping the instance does not reach. They
// are found by the NARUN_APP and NARUN_INSTANCE they inherited, as nothing
// else ties an orphan to its instance.
func (r *Runner) warnEscaped(inst supervisor.InstanceLaunch, pgid int) {
	app, id := "NARUN_APP="+inst.App, "NARUN_INSTANCE="+inst.Instance
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		env := strings.Split(string(b), "\x00")
		if !slices.Contains(env, app) || !slices.Contains(env, id) {
			continue
		}
		// The group's own processes may not have died yet.
		if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if f, err := statFields(b); err == nil && f[2] == strconv.Itoa(pgid) {
				continue
			}
		}
		pids = append(pids, pid)
	}
	if len(pids) > 0 {
		r.log.Warn(`processes left the instance's process group and outlive it: stopping an app with mode = "exec" does not reach them; mode = "sandbox" does`,
			"app", inst.App, "instance", inst.Instance, "pids", pids)
	}
}

// procStartTime is the start time of pid in clock ticks since boot.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// statFields splits /proc/PID/stat after the command name, which may hold
// spaces: field 0 is the state (the third field of proc(5)).
func statFields(b []byte) ([]string, error) {
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// appCA is the CA apps trust for the servers' certificates: the one given
// for them, else, when they get the runner's own servers, the runner's. A
// CA is no secret, and apps would fail their TLS without it; apps given
// other servers get none of the runner's, which would make them ask a
// plain server for TLS.
func (r *Runner) appCA() string {
	// No URL given for apps: they get the runner's own servers.
	if cmp.Or(r.opts.Config.AppNATSURL, r.opts.AppNATSURL) == "" {
		return cmp.Or(r.opts.Config.AppNATSCA, r.opts.Config.NATSCA)
	}
	return r.opts.Config.AppNATSCA
}

// appTLSEnv tells apps the TLS files of their NATS connection. The
// runner's own certificate is never passed on: it is the runner's login
// on a server that verifies clients.
func (r *Runner) appTLSEnv() []string {
	var env []string
	if ca := r.appCA(); ca != "" {
		env = append(env, "NARUN_NATS_CA="+ca)
	}
	if c, k := r.opts.Config.AppNATSCert, r.opts.Config.AppNATSKey; c != "" || k != "" {
		env = append(env, "NARUN_NATS_CERT="+c, "NARUN_NATS_KEY="+k)
	}
	return env
}
