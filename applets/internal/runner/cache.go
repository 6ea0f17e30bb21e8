package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/atomicfile"
	"github.com/narun/narun/applets/internal/memfree"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/supervisor"
)

// errOffline reports that NATS is needed but not reachable; a retry may help.
var errOffline = errors.New("nats not reachable")

// cache keeps binaries under <data>/binaries/<sha256>, written only after
// their digest was verified, and checked again each time one is handed
// out: an SD card or a power cut can change a file after it was written,
// and a changed binary may crash-loop or, worse, run.
type cache struct {
	dir string
	log *slog.Logger
	// flights serialises fetches of the same digest.
	flights keyLocks
	// mu guards the maps below.
	mu sync.Mutex
	// handedOut is when binary last returned each digest's path: gc spares
	// a binary handed out after it began listing what the apps keep, to a
	// new app it could not see yet.
	handedOut map[string]time.Time
	// verified is when check last found each digest's file whole, and
	// what the file looked like then.
	verified map[string]verification
	// afterFetch runs once fetches have stopped for releaseDelay.
	afterFetch *memfree.Debounce
}

// releaseDelay is how long after the last download its buffers are handed
// back to the OS. A download leaves tens of MiB behind: the object store's
// block buffers (in the same process under narun up) and the copies of
// the transfer. They are garbage within a minute, but an idle process runs
// a GC only every two minutes and returns pages slowly after it, so an
// edge device would otherwise carry a deploy's peak for minutes.
const releaseDelay = time.Minute

func newCache(dir string, log *slog.Logger) (*cache, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create binary cache: %w", err)
	}
	return &cache{dir: dir, log: log, handedOut: map[string]time.Time{}, verified: map[string]verification{}, afterFetch: memfree.NewDebounce(releaseDelay, memfree.Release)}, nil
}

func (c *cache) path(digest string) string { return filepath.Join(c.dir, digest) }

// binaryMode is the mode of a cached binary: executable, and written only
// by replacing it.
const binaryMode os.FileMode = 0o555

// binary returns the path of the verified binary b, fetching it from obs
// (nil when NATS is unreachable) unless it is cached.
func (c *cache) binary(ctx context.Context, obs jetstream.ObjectStore, b spec.Binary) (string, error) {
	unlock, err := c.flights.lockCtx(ctx, b.SHA256)
	if err != nil {
		return "", fmt.Errorf("wait for the fetch in flight of binary %s: %w", b.Object, err)
	}
	defer unlock()
	p := c.path(b.SHA256)
	var damaged error
	if fi, err := os.Lstat(p); err == nil {
		if damaged = c.check(p, b.SHA256, fi); damaged == nil && fi.Mode().Perm() != binaryMode {
			// The bytes hold but the mode changed (a chmod -x by hand, a
			// backup restored without modes): every exec would fail with
			// EACCES, counted as a crash, and nothing would fetch it again.
			if err := os.Chmod(p, binaryMode); err != nil {
				damaged = fmt.Errorf("cached binary %s has mode %v, not %v, and its mode could not be set: %w", p, fi.Mode().Perm(), binaryMode, err)
			}
		}
		if damaged == nil {
			c.handOut(b.SHA256)
			return p, nil
		}
	}
	if obs == nil {
		if damaged != nil {
			return "", fmt.Errorf("binary %s: %w; fetched again once NATS answers: %w", b.Object, damaged, errOffline)
		}
		return "", fmt.Errorf("fetch binary %s: %w", b.Object, errOffline)
	}
	obj, err := openObject(ctx, obs, b.Object, fetchStall)
	if err != nil {
		return "", fmt.Errorf("fetch binary %s: %w", b.Object, err)
	}
	defer obj.Close()
	defer c.afterFetch.Trigger()
	if err := writeVerified(c.dir, p, obj, b.SHA256, binaryMode); err != nil {
		return "", fmt.Errorf("fetch binary %s: %w", b.Object, err)
	}
	c.handOut(b.SHA256)
	return p, nil
}

// check verifies the cached binary at p against its digest, and removes
// it when it does not match or cannot be read, so that the next fetch
// replaces it.
func (c *cache) check(p, want string, fi os.FileInfo) error {
	stamp, stamped := stampOf(fi)
	c.mu.Lock()
	v, ok := c.verified[want]
	c.mu.Unlock()
	if stamped && ok && v.stamp == stamp && v.settled() && time.Since(v.at) < recheckAfter {
		return nil
	}
	got, err := fileSHA256(p)
	if err == nil && got == want {
		if stamped {
			c.mu.Lock()
			c.verified[want] = verification{stamp: stamp, at: time.Now()}
			c.mu.Unlock()
		}
		return nil
	}
	var damaged error
	if err != nil {
		damaged = fmt.Errorf("cached binary %s unreadable: %w", p, err)
	} else {
		damaged = fmt.Errorf("cached binary %s damaged: sha256 %s, want %s", p, got, want)
	}
	if rerr := os.Remove(p); rerr != nil {
		damaged = fmt.Errorf("%w; not removed: %w", damaged, rerr)
	}
	c.log.Error("cached binary does not match its digest: not run, fetched again from the object store", "file", p, "err", damaged)
	return damaged
}

// recheckAfter is how long a verified binary whose file has not changed
// (same inode, size, modification and change times) is run without
// hashing it again: a burst of starts (a hundred apps of one binary, a
// crash loop) hashes it once, not once per start, which on a device
// without SHA instructions costs tens of milliseconds per start of a
// 10 MiB binary. Any write, replacement or mode change is seen at once;
// damage the filesystem does not record (the medium decaying) within it.
const recheckAfter = time.Minute

type verification struct {
	stamp fileStamp
	at    time.Time
}

// timestampGrain bounds how coarse file times are: the kernel takes them
// from a clock that ticks every few milliseconds.
const timestampGrain = time.Second

// settled reports whether the file had not changed for a while when it was
// hashed: a write soon after the hash, within the same tick of the file
// times, would leave the stamp as it was (git's "racy" index entries).
func (v verification) settled() bool {
	return time.Unix(v.stamp.ctime.Unix()).Before(v.at.Add(-timestampGrain))
}

// fileStamp is what a write, a replacement or a chmod of a file changes.
type fileStamp struct {
	ino, size    int64
	mtime, ctime syscall.Timespec
}

func stampOf(fi os.FileInfo) (fileStamp, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, false
	}
	return fileStamp{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}

// fileSHA256 returns the SHA-256 (hex) of the file at p.
func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digestOf(f)
}

// digestOf reads f to its end and returns the hex SHA-256 of its bytes.
func digestOf(f io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (c *cache) handOut(digest string) {
	c.mu.Lock()
	c.handedOut[digest] = time.Now()
	c.mu.Unlock()
}

// gc removes the cached binaries whose digest is not in keep, except those
// handed out since listed, when the caller began to list what it keeps.
func (c *cache) gc(keep map[string]bool, listed time.Time) []string {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		// Temporary files belong to fetches in flight.
		if keep[name] || len(name) != sha256.Size*2 || strings.HasPrefix(name, ".") {
			continue
		}
		unlock := c.flights.lock(name)
		c.mu.Lock()
		recent := !c.handedOut[name].Before(listed)
		if !recent {
			delete(c.handedOut, name)
			delete(c.verified, name)
		}
		c.mu.Unlock()
		if !recent && os.Remove(filepath.Join(c.dir, name)) == nil {
			removed = append(removed, name)
		}
		unlock()
	}
	return removed
}

// entryUses is when each entry of the caches of files and sealed secrets
// (a path) was last about to be read or written. gc spares an entry used
// since it began listing what the apps keep, as the binaries' cache does
// with handedOut: a spec it could not see then (a deploy landing
// meanwhile) needs it, and that spec's start may have just fetched it.
type entryUses struct {
	mu sync.Mutex
	at map[string]time.Time
}

// use records that each of paths is about to be read or written. It comes
// first: a gc that has not removed the entry yet spares it, and one that
// has did so before the write, which puts it back.
func (u *entryUses) use(paths ...string) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.at == nil {
		u.at = map[string]time.Time{}
	}
	for _, p := range paths {
		u.at[p] = now
	}
}

// removeUnused removes path unless it was used since listed, when gc
// began listing what the apps keep. The check and the removal hold mu, so
// no use falls between them.
func (u *entryUses) removeUnused(path string, listed time.Time) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.at[path].Before(listed) {
		return nil
	}
	return os.Remove(path)
}

// forgetBefore drops the uses before listed: every later gc begins its
// listing after listed, so they spare nothing.
func (u *entryUses) forgetBefore(listed time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for p, at := range u.at {
		if at.Before(listed) {
			delete(u.at, p)
		}
	}
}

// writeVerified copies r into a temporary file in dir, syncs it, checks its
// SHA-256 against want (hex; "" accepts any) and only then renames it to
// dst with the given mode. On a mismatch nothing is left behind and the
// error wraps supervisor.ErrPermanent: the pinned digest will not change.
func writeVerified(dir, dst string, r io.Reader, want string, mode os.FileMode) error {
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		tmp.Close()
		return fmt.Errorf("download: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); want != "" && got != want {
		return fmt.Errorf("sha256 mismatch: want %s, got %s; not used: %w", want, got, supervisor.ErrPermanent)
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(dst))
}

// writeFileAtomic writes data to path through a synced temporary file,
// creating its directory first.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return atomicfile.Write(path, data, mode)
}

// removeSynced removes path, if it exists, and syncs its directory, so
// that the removal lands before what the caller writes next.
func removeSynced(path string) error {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// keepFile is writeFileAtomic for the copies the runner keeps of what
// NATS holds (specs, sealed secrets), which are saved again at every start
// though they seldom change: a file that holds data already is left alone,
// as each write costs flash a synced file, a rename and a synced directory.
func keepFile(path string, data []byte, mode os.FileMode) error {
	if held, err := os.ReadFile(path); err == nil && bytes.Equal(held, data) {
		return nil
	}
	return writeFileAtomic(path, data, mode)
}
