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
)

// ServeBridge is the runner's half of an outbound bridge: it listens on
// the unix socket socketPath and forwards every connection to target, a
// TCP "host:port" (a nats:// URL is accepted). It returns when ctx is
// done, after removing the socket; a stale socket file is replaced.
func ServeBridge(ctx context.Context, socketPath, target string) error {
	if u, ok := strings.CutPrefix(target, "nats://"); ok {
		target = u
	}
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o700); err != nil {
		return fmt.Errorf("create bridge dir: %w", err)
	}
	if err := os.Remove(socketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale bridge socket: %w", err)
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listen on bridge socket: %w", err)
	}
	defer os.Remove(socketPath)
	var d net.Dialer
	return forward(ctx, ln, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", target)
	})
}

// forward accepts on ln until ctx is done and splices each connection to
// a fresh one from dial. A failed dial drops that one connection only.
func forward(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error)) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
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
