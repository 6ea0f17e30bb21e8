package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// serveIdleTimeout closes a keep-alive connection that has sent no request
// for this long, as the gateway's listeners do: without it net/http keeps
// one for as long as its client does, and a monitor that opens a new one
// for each check and never closes it (a fresh http.Transport each time)
// made the runner hold one more descriptor per check, for months. A test
// shortens it.
var serveIdleTimeout = 2 * time.Minute

// Serve listens on addr, so a taken port is reported at once, then serves h
// in the background until ctx is done. It returns the address bound (the
// port the kernel chose for port 0) and a channel that yields the
// server's error, or nil after a clean shutdown. What the server has to
// say goes to log: without it net/http writes its failures to accept (out
// of descriptors) in the standard logger's own format, among JSON lines.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (bound string, done <-chan error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: serveIdleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}
	served := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		served <- err
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	return ln.Addr().String(), served, nil
}
