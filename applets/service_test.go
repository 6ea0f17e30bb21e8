package applets_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// TestServicesUnderServiceManager runs each long-running applet as systemd
// runs a Type=notify unit: it must say READY=1 once it serves, survive
// SIGHUP (`systemctl reload`; Go's default would end the process and a
// node's apps with it), and say STOPPING=1 and exit 0 on SIGTERM.
func TestServicesUnderServiceManager(t *testing.T) {
	srv := natstest.Start(t)
	natsURL := srv.ClientURL()
	for _, tc := range []struct {
		applet string
		args   func(dir string) []string
		// onHUP is what the applet logs when SIGHUP reaches it.
		onHUP string
	}{
		{"nats", func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--listen", testutil.FreeAddr(t)}
		}, "SIGHUP: nothing to reload"},
		{"runner", func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--nats-url", natsURL, "--node-id", "sd", "--admin-listen", testutil.FreeAddr(t)}
		}, "SIGHUP: nothing to reload"},
		{"gw", func(dir string) []string {
			return []string{"--config", gatewayConfig(t, dir), "--nats-url", natsURL, "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t)}
		}, "routes reloaded"},
		{"up", func(dir string) []string {
			return []string{"--config", gatewayConfig(t, dir), "--data-dir", dir, "--nats-listen", testutil.FreeAddr(t),
				"--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", testutil.FreeAddr(t)}
		}, "routes reloaded"},
	} {
		t.Run(tc.applet, func(t *testing.T) {
			dir := t.TempDir()
			p := startNotified(t, dir, append([]string{tc.applet}, tc.args(dir)...)...)
			expectNotice(t, p.notify, "READY=1", &p.out)
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, "the SIGHUP log line", func() bool { return strings.Contains(p.out.String(), tc.onHUP) })
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("the process is gone after SIGHUP: %v\n%s", err, p.out.String())
			}
			expectNotice(t, p.notify, "STOPPING=1", &p.out)
			if err := p.wait(20 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, p.out.String())
			}
		})
	}
}

// A unit with WatchdogSec= kills a service that stops sending WATCHDOG=1
// (and, with KillMode=mixed, a node's apps with it): each long-running
// applet keeps sending it while it runs, from its start on.
func TestServicesFeedTheWatchdog(t *testing.T) {
	srv := natstest.Start(t)
	natsURL := srv.ClientURL()
	for applet, args := range map[string]func(dir string) []string{
		"nats": func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--listen", testutil.FreeAddr(t)}
		},
		"runner": func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--nats-url", natsURL, "--node-id", "wd", "--admin-listen", testutil.FreeAddr(t)}
		},
		"gw": func(dir string) []string {
			return []string{"--config", "/dev/null", "--nats-url", natsURL, "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t)}
		},
		"up": func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--nats-listen", testutil.FreeAddr(t),
				"--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", testutil.FreeAddr(t)}
		},
	} {
		t.Run(applet, func(t *testing.T) {
			dir := t.TempDir()
			// WatchdogSec=1s, as systemd passes it.
			p := startNotifiedEnv(t, dir, []string{"WATCHDOG_USEC=1000000"}, append([]string{applet}, args(dir)...)...)
			if err := p.notify.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
				t.Fatal(err)
			}
			ready, fed := false, 0
			buf := make([]byte, 256)
			for !ready || fed < 2 {
				n, err := p.notify.Read(buf)
				if err != nil {
					t.Fatalf("READY=1 %v, WATCHDOG=1 %d times after it: %v\n%s", ready, fed, err, p.out.String())
				}
				switch string(buf[:n]) {
				case "READY=1":
					ready = true
				case "WATCHDOG=1":
					if ready {
						fed++
					}
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(20 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, p.out.String())
			}
		})
	}
}

// A long-running applet whose output's reader is gone (a log pipe's
// reader that died, a journald restarted without keeping its streams)
// keeps running, and stops as asked: Go's default, death by SIGPIPE at
// the next log line, would take a node's apps down with narun up.
func TestServicesOutliveTheirLogReader(t *testing.T) {
	for applet, args := range map[string]func(dir string) []string{
		"nats": func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--listen", testutil.FreeAddr(t)}
		},
		"up": func(dir string) []string {
			return []string{"--config", "/dev/null", "--data-dir", dir, "--nats-listen", testutil.FreeAddr(t),
				"--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", testutil.FreeAddr(t)}
		},
	} {
		t.Run(applet, func(t *testing.T) {
			dir := t.TempDir()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], append([]string{applet}, args(dir)...)...)
			cmd.Env = append(os.Environ(), asNarun+"=1", "NOTIFY_SOCKET=")
			cmd.Stdout, cmd.Stderr = w, w
			p := startChild(t, cmd)
			w.Close()
			// Read up to a line of the running applet, then go away.
			var seen strings.Builder
			buf := make([]byte, 4096)
			for !strings.Contains(seen.String(), "nats connected") && !strings.Contains(seen.String(), "nats ready") {
				n, err := r.Read(buf)
				if err != nil {
					t.Fatalf("output ended before the applet ran: %v\n%s", err, seen.String())
				}
				seen.Write(buf[:n])
			}
			r.Close()
			// Both log lines, to a pipe without a reader.
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(30 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM with its output's reader gone: %v", err)
			}
		})
	}
}

// gatewayConfig writes a narun.toml with one route, so a reload has a file
// to read.
func gatewayConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(path, []byte("[[gateway.routes]]\npath = \"/a/\"\nservice = \"a\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// child is a process the test started; it is killed at the end of the
// test if it is still running.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

func startChild(t *testing.T, cmd *exec.Cmd) *child {
	t.Helper()
	c := &child{cmd: cmd, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// wait returns how the process exited, or an error if it still runs
// after limit.
func (c *child) wait(limit time.Duration) error {
	select {
	case <-c.exited:
		return c.err
	case <-time.After(limit):
		return fmt.Errorf("still running %s later", limit)
	}
}

// notified is an applet run as a Type=notify unit: its notices arrive on
// notify.
type notified struct {
	*child
	out    testutil.LogBuffer
	notify *net.UnixConn
}

// startNotified runs the test binary as narun with args and a
// NOTIFY_SOCKET in dir; the process is killed at the end of the test if
// it is still running.
func startNotified(t *testing.T, dir string, args ...string) *notified {
	t.Helper()
	return startNotifiedEnv(t, dir, nil, args...)
}

// startNotifiedEnv is startNotified with env added to the environment.
func startNotifiedEnv(t *testing.T, dir string, env []string, args ...string) *notified {
	t.Helper()
	socket := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	p := &notified{notify: notify}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), asNarun+"=1", "NOTIFY_SOCKET="+socket), env...)
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	p.child = startChild(t, cmd)
	return p
}

func expectNotice(t *testing.T, conn *net.UnixConn, want string, out *testutil.LogBuffer) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no %s from the applet: %v\n%s", want, err, out.String())
	}
	if got := string(buf[:n]); got != want {
		t.Fatalf("notice %q, want %q\n%s", got, want, out.String())
	}
}

// TestSecondSignalStopsAtOnce stops each long-running applet while it has
// something to wait for at shutdown (for gw, a request its service never
// answers, with a shutdown_timeout of minutes): a second SIGINT or SIGTERM
// during that wait must end the process at once, as the README promises.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	srv := natstest.Start(t)
	for _, tc := range []struct {
		applet string
		second syscall.Signal
		// skipped is what the error says the applet stopped without
		// waiting for: only what it waits for at all.
		skipped string
	}{{"gw", syscall.SIGINT, "requests"}, {"gw", syscall.SIGTERM, "requests"}, {"up", syscall.SIGINT, "apps and requests"}} {
		t.Run(tc.applet+" "+signalName(tc.second), func(t *testing.T) {
			dir := t.TempDir()
			httpAddr := testutil.FreeAddr(t)
			path := filepath.Join(dir, "narun.toml")
			if err := os.WriteFile(path, []byte("[gateway]\nshutdown_timeout = \"5m\"\n"+
				"[[gateway.routes]]\npath = \"/slow/\"\nservice = \"slow\"\ntimeout = \"5m\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			natsURL := srv.ClientURL()
			args := []string{tc.applet, "--config", path, "--listen", httpAddr, "--admin-listen", testutil.FreeAddr(t)}
			if tc.applet == "up" {
				natsAddr := testutil.FreeAddr(t)
				natsURL = "nats://" + natsAddr
				args = append(args, "--data-dir", dir, "--nats-listen", natsAddr, "--runner-admin-listen", "")
			} else {
				args = append(args, "--nats-url", natsURL)
			}
			p := startNotified(t, dir, args...)
			expectNotice(t, p.notify, "READY=1", &p.out)

			// The service "slow" takes every request and answers none.
			nc, err := nats.Connect(natsURL)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			received := make(chan struct{}, 1)
			if _, err := nc.Subscribe("slow", func(*nats.Msg) {
				select {
				case received <- struct{}{}:
				default:
				}
			}); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			go func() {
				if resp, err := http.Get("http://" + httpAddr + "/slow/"); err == nil {
					resp.Body.Close()
				}
			}()
			select {
			case <-received:
			case <-time.After(20 * time.Second):
				t.Fatalf("the request never reached the service\n%s", p.out.String())
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// STOPPING=1 says the first signal was taken: the drain runs.
			expectNotice(t, p.notify, "STOPPING=1", &p.out)
			if err := p.cmd.Process.Signal(tc.second); err != nil {
				t.Fatal(err)
			}
			// The drain allows 5 min.
			err = p.wait(20 * time.Second)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("exit after the second signal: %v, want exit status 1\n%s", err, p.out.String())
			}
			if want := "second " + signalName(tc.second) + ": stopped at once, without waiting for " + tc.skipped + "\n"; !strings.Contains(p.out.String(), want) {
				t.Errorf("output does not say %q:\n%s", want, p.out.String())
			}
			// Cut short, narun up still shuts its NATS server down cleanly.
			if tc.applet == "up" && !strings.Contains(p.out.String(), "Server Exiting") {
				t.Errorf("embedded NATS server not shut down:\n%s", p.out.String())
			}
		})
	}
}

func signalName(sig syscall.Signal) string {
	if sig == syscall.SIGINT {
		return "SIGINT"
	}
	return "SIGTERM"
}

// A start whose JetStream store takes long to read (a big one after a
// power cut) asks the service manager for more time before its start
// timeout, which would kill it, and the next start would read the store
// again. A FIFO in place of a stream's metadata file holds the read.
func TestSlowStoreExtendsTheStartTimeout(t *testing.T) {
	dir := t.TempDir()
	reading, release := natstest.HoldStoreRead(t, dir)
	p := startNotified(t, dir, "nats", "--config", "/dev/null", "--data-dir", dir, "--listen", testutil.FreeAddr(t))
	reading()
	expectNotice(t, p.notify, "EXTEND_TIMEOUT_USEC=30000000", &p.out)
	release()
	expectNotice(t, p.notify, "READY=1", &p.out)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectNotice(t, p.notify, "STOPPING=1", &p.out)
	if err := p.wait(20 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.out.String())
	}
}

// A stop while JetStream reads a big store at a start (after a power cut,
// on an SD card: minutes) must not wait for the read: systemd's stop, a
// reboot's, sent SIGTERM, and the applet went on reading, then started
// (narun up its runner and gateway) only to stop, or was killed at
// TimeoutStopSec in the middle of it.
func TestStopWhileTheStoreIsRead(t *testing.T) {
	for _, applet := range []string{"nats", "up"} {
		t.Run(applet, func(t *testing.T) {
			dir := t.TempDir()
			// The read is never let go on: the process must end without it.
			reading, _ := natstest.HoldStoreRead(t, dir)
			args := []string{applet, "--config", "/dev/null", "--data-dir", dir}
			if applet == "nats" {
				args = append(args, "--listen", testutil.FreeAddr(t))
			} else {
				args = append(args, "--nats-listen", testutil.FreeAddr(t), "--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
			}
			p := startNotified(t, dir, args...)
			reading()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			expectNotice(t, p.notify, "STOPPING=1", &p.out)
			if err := p.wait(20 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM while the store is read: %v\n%s", err, p.out.String())
			}
		})
	}
}
