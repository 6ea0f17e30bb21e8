package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// OnSIGHUP makes SIGHUP call reload until ctx ends; reload logs what it
// did, a failure in the words its other triggers use. Without it SIGHUP ends
// a Go process, so `systemctl reload` or a closed terminal would take a
// node down with its apps. The signal stays caught after ctx ends, so a
// SIGHUP during shutdown cannot cut it short.
func OnSIGHUP(ctx context.Context, reload func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload()
			}
		}
	}()
}
