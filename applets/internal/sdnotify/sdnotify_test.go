package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestSend(t *testing.T) {
	for _, tc := range []struct{ kind, name string }{
		{"path", filepath.Join(t.TempDir(), "notify")},
		{"abstract", "@narun-sdnotify-test-" + strings.ReplaceAll(t.Name(), "/", "-")},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			conn := listen(t, tc.name)
			t.Setenv("NOTIFY_SOCKET", tc.name)
			for _, state := range []string{Ready, Stopping} {
				if err := Send(state); err != nil {
					t.Fatal(err)
				}
				if got := receive(t, conn); got != state {
					t.Errorf("received %q, want %q", got, state)
				}
			}
		})
	}
}

func TestSendWithoutServiceManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Send(Ready); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nothing done", err)
	}
}

func TestSendToMissingSocketSaysWhat(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	err := Send(Ready)
	if err == nil || !strings.Contains(err.Error(), "tell the service manager READY=1") {
		t.Errorf("err = %v, want one naming the notification", err)
	}
}

// The watchdog is fed at half WatchdogSec, and only by the process the
// service manager named: a child that inherited the variables is not it.
func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 15 * time.Second},
		{"30000000", self, 15 * time.Second},
		{"30000000", "1", 0},
		{"0", "", 0},
		{"-5", "", 0},
		{"soon", "", 0},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got := WatchdogInterval(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %s, want %s", tc.usec, tc.pid, got, tc.want)
		}
	}
}

// A stop's extension goes out after Stopping, which goes out once, from
// whichever part of a stop comes first: before it, systemd would extend
// the running service's time, not TimeoutStopSec.
func TestExtendStopFollowsStopping(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("NOTIFY_SOCKET", conn.LocalAddr().String())
	if err := ExtendStop(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := AnnounceStop(); err != nil {
		t.Fatal(err)
	}
	if err := Send(Ready); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		got = append(got, receive(t, conn))
	}
	if want := []string{Stopping, "EXTEND_TIMEOUT_USEC=90000000", Ready}; !slices.Equal(got, want) {
		t.Errorf("sent %q, want %q", got, want)
	}
}
