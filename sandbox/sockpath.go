package sandbox

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path a unix socket address holds: sun_path
// is 108 bytes, its NUL included.
const maxSocketPath = 107

// viaShortPath calls f with an address of the unix socket at path that a
// socket address holds: path itself or, when longer, the same file
// reached through a descriptor of its directory (/proc/self/fd/N/name),
// open while f runs. An instance's bridge sockets live in its directory,
// whose path a deep data dir and a long app name (64 characters) make
// longer than that: bind and connect refused them with "invalid argument".
func viaShortPath(path string, f func(addr string) error) error {
	if len(path) <= maxSocketPath {
		return f(path)
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the directory of socket %s: %w", path, err)
	}
	defer unix.Close(dir)
	return f("/proc/self/fd/" + strconv.Itoa(dir) + "/" + filepath.Base(path))
}

// listenUnix listens on the unix socket at path, of any length. Closing
// the listener leaves the file: it may have been bound through a
// descriptor that is closed, or reused, by then.
func listenUnix(path string) (*net.UnixListener, error) {
	var ln *net.UnixListener
	err := viaShortPath(path, func(addr string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// DialBridge connects to the unix socket of a bridge at path, of any
// length.
func DialBridge(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := viaShortPath(path, func(addr string) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unix", addr)
		return err
	})
	return c, err
}
