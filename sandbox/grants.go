package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// grants are the paths of the allow-list, each opened (O_PATH) once, as
// openGrant resolved it: the mounts made writable and the Landlock rules
// use these descriptors, never the path again, which the app may have
// changed meanwhile. Keyed by the cleaned path; a missing path is absent.
type grants map[string]*os.File

// maxLinks is the kernel's limit of symbolic links followed in one lookup.
const maxLinks = 40

// openGrants opens every path the sandbox grants. A path below one the app
// may write (a grant nested in another, or in data/ or /tmp) is the app's
// to replace, or a directory on its way, with a symbolic link to anywhere,
// between two starts or while another replica starts: following it would
// grant whatever it names, as runc once followed a volume nested in
// another (CVE-2021-30465). Such a link is refused, not followed.
func openGrants(cfg *Config) (grants, error) {
	var writable []string
	for _, p := range writablePaths(cfg) {
		// Only where a link may lie is decided here; each of these paths
		// is itself opened below, through links checked like any other.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		writable = append(writable, p)
	}
	g := grants{}
	for _, p := range append(landlockPaths(cfg), cfg.Landlock.Paths...) {
		path := filepath.Clean(p.Path)
		if _, ok := g[path]; ok {
			continue
		}
		f, err := openGrant(path, writable)
		switch {
		case errors.Is(err, unix.ENOENT):
			// Landlock reports a missing path that is not optional.
			continue
		case err != nil:
			g.close()
			return nil, fmt.Errorf("path %s: %w", p.Path, err)
		}
		g[path] = f
	}
	return g, nil
}

// openGrant opens path with O_PATH as the kernel would resolve it, except
// that it does not follow a symbolic link lying in a directory at or below
// one of writable: the app may have put it there. Each component is opened
// from the descriptor of the one before, so renaming a directory already
// passed changes nothing.
func openGrant(path string, writable []string) (*os.File, error) {
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open("/", flags|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	cur := "/" // the real path of fd
	rest := strings.Split(path, "/")
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == "" || name == "." {
			continue
		}
		next, err := unix.Openat(fd, name, flags, 0)
		if err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "open", Path: filepath.Join(cur, name), Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(fd)
			unix.Close(next)
			return nil, &os.PathError{Op: "stat", Path: filepath.Join(cur, name), Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			unix.Close(fd)
			fd, cur = next, filepath.Join(cur, name)
			continue
		}
		link := filepath.Join(cur, name)
		if w, ok := within(cur, writable); ok {
			unix.Close(fd)
			unix.Close(next)
			return nil, fmt.Errorf("%s is a symbolic link in %s, which the app may write: not followed", link, w)
		}
		if links++; links > maxLinks {
			unix.Close(fd)
			unix.Close(next)
			return nil, &os.PathError{Op: "open", Path: path, Err: unix.ELOOP}
		}
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(next, "", buf)
		unix.Close(next)
		if err != nil {
			unix.Close(fd)
			return nil, &os.PathError{Op: "readlink", Path: link, Err: err}
		}
		target := string(buf[:n])
		if filepath.IsAbs(target) {
			root, err := unix.Open("/", flags|unix.O_DIRECTORY, 0)
			unix.Close(fd)
			if err != nil {
				return nil, &os.PathError{Op: "open", Path: "/", Err: err}
			}
			fd, cur = root, "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// within returns the path of writable that dir is at or below.
func within(dir string, writable []string) (string, bool) {
	for _, w := range writable {
		if w == "/" || dir == w || strings.HasPrefix(dir, w+"/") {
			return w, true
		}
	}
	return "", false
}

// fdPath is a path that reaches the file f holds, whatever became of the
// path it was opened by.
func fdPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}

func (g grants) close() {
	for _, f := range g {
		f.Close()
	}
}
