// Package sdnotify speaks systemd's notify protocol, so that a unit with
// Type=notify counts narun as started only once it serves, and sees it
// stopping: units ordered After=narun.service then start when its ports
// answer, not when its process exists.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Ready and Stopping are the states narun reports.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Watchdog is the keep-alive a unit with WatchdogSec= waits for.
const Watchdog = "WATCHDOG=1"

// WatchdogInterval is how often to send Watchdog: half the WatchdogSec the
// service manager passed in WATCHDOG_USEC, as sd_watchdog_enabled(3)
// advises; 0 when it wants none, or wants it from another process
// (WATCHDOG_PID).
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// Extend asks for d more, from now, before a start that has not said
// Ready, or a stop under way, times out (TimeoutStartSec, TimeoutStopSec);
// it never shortens them.
func Extend(d time.Duration) string {
	return fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds())
}

// stop is the process's one Stopping notice.
var stop struct {
	once sync.Once
	err  error
}

// AnnounceStop sends Stopping, once per process whoever calls it first,
// and returns once it has gone out.
func AnnounceStop() error {
	stop.once.Do(func() { stop.err = Send(Stopping) })
	return stop.err
}

// ExtendStop asks for d more for the stop under way, after Stopping:
// systemd applies an extension to the state it believes the service is
// in, and one that came first, from another goroutine of the stop,
// extended the running service's time instead of TimeoutStopSec.
func ExtendStop(d time.Duration) error {
	if err := AnnounceStop(); err != nil {
		return err
	}
	return Send(Extend(d))
}

// Send writes state to the socket the service manager named in
// NOTIFY_SOCKET. Without that variable (not started by a service manager
// that asked) it does nothing. A name starting with '@' is an abstract
// socket, which Go's net package maps itself.
func Send(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("tell the service manager %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("tell the service manager %s: %w", state, err)
	}
	return nil
}
