package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/narun/narun/applets/internal/spec"
)

// execLinks are the paths the runner executes cached binaries by. The
// kernel names a process (/proc/PID/comm: what ps -e, top and pgrep match)
// after the last element of the path given to execve, not after the file
// a symlink there resolves to: run from the cache, every app would show as
// the first 15 hex digits of its digest. So each app and build gets a
// symlink <dir>/<app>/<sha12>/<app> to its verified binary, and that path
// is the process's argv[0] too: a real path to the binary, which programs
// that re-execute themselves rely on.
//
// A symlink rather than a copy, which would cost the disk a second
// binary, or a hard link, which would keep a binary the cache collected
// on disk while a link to it is left. The links lie in the runner's data
// dir, in directories only the runner's user may write, not in an
// instance directory, which the app writes: an app cannot change what the
// runner executes. One per build, since a rolling update runs the old
// build beside the new one.
type execLinks struct {
	dir string
	// apps serialises making an app's links and removing them, and prune
	// asks what to keep under it: a start makes its link after its
	// instance is counted, so a prune never removes a link a start is
	// about to run. Per app, since apps' links lie in directories of their
	// own: one lock for all made a burst of starts wait for each other's
	// file system writes, one by one (docs/PERFORMANCE.md, "Many
	// instances").
	apps keyLocks
}

// path is where app's link to the binary of digest would be, and the
// directory of that build.
func (l *execLinks) path(app, build string) (dir, link string) {
	dir = filepath.Join(l.dir, app, build)
	return dir, filepath.Join(dir, app)
}

// link returns a path named after app that resolves to target, the cached
// binary of digest, creating it if needed. App names are letters, digits,
// '-' and '_', at most 64 of them: a file name, never "." or "..".
func (l *execLinks) link(app, digest, target string) (string, error) {
	if _, err := hex.DecodeString(digest); err != nil || len(digest) != sha256.Size*2 || spec.ValidName(app) != nil {
		return "", fmt.Errorf("exec link for app %q, binary %q: not a valid name", app, digest)
	}
	defer l.apps.lock(app)()
	// The first 12 hex digits name a build wherever an operator meets one
	// (objects in narun-binaries, app history); the whole digest serves a
	// build whose first 12 are another build's of the same app.
	build := digest[:12]
	dir, p := l.path(app, build)
	have, err := os.Readlink(p)
	if err == nil && have == target {
		return p, nil
	}
	if err == nil {
		build = digest
		dir, p = l.path(app, build)
		if have, err = os.Readlink(p); err == nil && have == target {
			return p, nil
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("exec link %s: %w", p, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("exec link: %w", err)
	}
	// Renamed into place, the link is there whole or not at all. Not
	// synced: the runner empties the directory whenever it starts, as it
	// does the instance directories, so no link has to outlive a crash.
	tmp := filepath.Join(dir, ".tmp-"+randomHex(8))
	if err := os.Symlink(target, tmp); err != nil {
		return "", fmt.Errorf("exec link: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("exec link: %w", err)
	}
	return p, nil
}

// prune removes app's links to binaries whose digest keep does not list,
// and the app's directory once it holds none.
func (l *execLinks) prune(app string, keep func() []string) error {
	defer l.apps.lock(app)()
	kept := map[string]bool{}
	for _, d := range keep() {
		kept[d] = true
	}
	appDir := filepath.Join(l.dir, app)
	entries, err := os.ReadDir(appDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("prune exec links: %w", err)
	}
	var errs []error
	left := 0
	for _, e := range entries {
		_, p := l.path(app, e.Name())
		if target, err := os.Readlink(p); err == nil && kept[filepath.Base(target)] {
			left++
			continue
		}
		if err := os.RemoveAll(filepath.Join(appDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("prune exec links: %w", err))
		}
	}
	if left == 0 {
		if err := os.Remove(appDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("prune exec links: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeExcept removes the links of every app that running does not
// name. The caller keeps new apps from starting meanwhile.
func (l *execLinks) removeExcept(running func(app string) bool) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove exec links: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if running(e.Name()) {
			continue
		}
		unlock := l.apps.lock(e.Name())
		if err := os.RemoveAll(filepath.Join(l.dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove exec links of %s: %w", e.Name(), err))
		}
		unlock()
	}
	return errors.Join(errs...)
}
