package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// OnSIGHUP makes SIGHUP call reload until ctx ends. Without it SIGHUP ends
// a Go process, so `systemctl reload` or a closed terminal would take a
// node down with its apps. The signal stays caught after ctx ends, so a
// SIGHUP during shutdown cannot cut it short.
func OnSIGHUP(ctx context.Context, log *slog.Logger, reload func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := reload(); err != nil {
					log.Error("SIGHUP: reload failed, keeping the current configuration", "err", err)
				}
			}
		}
	}()
}
