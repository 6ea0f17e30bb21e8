package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// OutboundConnLimit is how many connections an app may hold through one
// outbound bridge at once; the runner closes any more at once. Each costs
// the runner two sockets and the splices' pipes, and the target (the
// embedded NATS server) one more: unbounded, one app could take every
// descriptor of the runner's process. A NATS client holds one connection.
const OutboundConnLimit = 64

// OutboundBridge is the runner's half of an outbound bridge. The launcher
// opens a TCP listener inside the sandbox's network namespace and hands
// it over the bridge's unix socket (SCM_RIGHTS); the runner accepts the
// app's connections on it and joins each to the target. The app's bytes
// then cross one kernel splice, not a copy in the launcher and another in
// the runner.
type OutboundBridge struct {
	ln     *net.UnixListener
	path   string
	target string
	// socket is the file made at path, which Serve removes only while
	// path still names it: the next start of the instance makes its own
	// there, maybe before this one's Serve has finished.
	socket os.FileInfo
}

// ListenBridge opens the unix socket at socketPath (replacing a stale
// one) for a launcher to hand its listener to; Serve joins the app's
// connections to target, a TCP "host:port" (a nats:// URL is accepted).
// The socket must exist before the launcher starts, so this is separate
// from Serve.
func ListenBridge(socketPath, target string) (*OutboundBridge, error) {
	if u, ok := strings.CutPrefix(target, "nats://"); ok {
		target = u
	}
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o700); err != nil {
		return nil, fmt.Errorf("create bridge dir: %w", err)
	}
	if err := os.Remove(socketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale bridge socket: %w", err)
	}
	ln, err := listenUnix(socketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on bridge socket: %w", err)
	}
	socket, err := os.Lstat(socketPath)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on bridge socket: %w", err)
	}
	return &OutboundBridge{ln: ln, path: socketPath, target: target, socket: socket}, nil
}

// removeSocket removes the bridge's socket unless another bridge has made
// its own at the same path since.
func (b *OutboundBridge) removeSocket() {
	if fi, err := os.Lstat(b.path); err == nil && os.SameFile(fi, b.socket) {
		os.Remove(b.path)
	}
}

// Serve takes the listeners launchers hand over and serves each until ctx
// is done; it then closes them, removes the socket and returns.
func (b *OutboundBridge) Serve(ctx context.Context) error {
	defer b.removeSocket()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { b.ln.Close() })
	defer stop()
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", b.target) }
	for {
		c, err := b.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", b.path, err)
		}
		ln, err := receiveListener(c)
		c.Close()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ln.Close()
			_ = forward(ctx, ln, dial, OutboundConnLimit)
		}()
	}
}

// handOver sends ln's socket to the runner listening on socketPath. The
// caller may close ln afterwards: the socket lives on in the runner.
func handOver(ln *net.TCPListener, socketPath string) error {
	f, err := ln.File()
	if err != nil {
		return fmt.Errorf("duplicate listener: %w", err)
	}
	defer f.Close()
	conn, err := DialBridge(context.Background(), socketPath)
	if err != nil {
		return fmt.Errorf("reach the runner: %w", err)
	}
	defer conn.Close()
	c := conn.(*net.UnixConn)
	if _, _, err := c.WriteMsgUnix([]byte{'L'}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("send listener: %w", err)
	}
	return nil
}

// receiveListener reads the one listener a launcher sends on c.
func receiveListener(c *net.UnixConn) (net.Listener, error) {
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return nil, fmt.Errorf("read listener: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("read listener: want one control message, got %d (%v)", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, fmt.Errorf("read listener: %w", err)
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("read listener: want one descriptor, got %d", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "bridge listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("read listener: %w", err)
	}
	return ln, nil
}

// forward accepts on ln until ctx is done and splices each connection to
// a fresh one from dial. A failed dial drops that one connection only.
// With limit above 0, a connection beyond limit open ones is closed as
// soon as accepted.
func forward(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), limit int) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer wg.Wait()
	var slots chan struct{}
	if limit > 0 {
		slots = make(chan struct{}, limit)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
			default:
				c.Close()
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if slots != nil {
				defer func() { <-slots }()
			}
			defer c.Close()
			up, err := dial(ctx)
			if err != nil {
				return
			}
			defer up.Close()
			stopConn := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
			defer stopConn()
			splice(c, up)
		}()
	}
}

// splice copies both ways and returns when both directions are done,
// passing half-closes on so request/response protocols finish.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
