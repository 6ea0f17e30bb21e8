package applets_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A port below ip_unprivileged_port_start, given to a user that is not
// root (a first `narun up` on a laptop), fails the start with the key that
// moves it and what the port takes, for each of narun up's listeners. Run
// as root, narun is started without CAP_NET_BIND_SERVICE, as any other
// user is: the bind is refused, so no port below 1024 is ever taken.
func TestPrivilegedPortNamesTheKey(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Skipf("no ip_unprivileged_port_start: %v", err)
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || start < 2 {
		t.Skipf("every port is open to every user here (ip_unprivileged_port_start %q)", b)
	}
	low := "127.0.0.1:" + strconv.Itoa(start-1)
	for _, tc := range []struct{ flag, key string }{
		{"--nats-listen", "nats.listen"},
		{"--listen", "gateway.listen"},
		{"--admin-listen", "gateway.admin_listen"},
		{"--runner-admin-listen", "runner.admin_listen"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			args := []string{"up", "--config", "/dev/null", "--data-dir", filepath.Join(t.TempDir(), "data"), "--node-id", "n1"}
			for _, f := range []string{"--nats-listen", "--listen", "--admin-listen", "--runner-admin-listen"} {
				addr := "127.0.0.1:0"
				if f == tc.flag {
					addr = low
				}
				args = append(args, f, addr)
			}
			code, out := runWithoutBindCapability(t, args...)
			want := "ports below " + strconv.Itoa(start) + " need root or CAP_NET_BIND_SERVICE; choose another with key \"" + tc.key + "\""
			if code != 1 || !strings.Contains(out, "permission denied: "+want) {
				t.Fatalf("exit %d, output:\n%s\nwant 1 and %q", code, out, want)
			}
		})
	}
}

// runWithoutBindCapability runs the test binary as narun with args,
// without CAP_NET_BIND_SERVICE: as root, forked from a thread whose
// bounding set lacks it, which the thread then takes with it when Go ends
// it (it stays locked).
func runWithoutBindCapability(t *testing.T, args ...string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		out  string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if os.Geteuid() == 0 {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_NET_BIND_SERVICE, 0, 0, 0); err != nil {
				done <- result{err: err}
				return
			}
		}
		cmd := exec.Command(self, args...)
		cmd.Args[0] = "narun"
		cmd.Env = append(os.Environ(), asNarun+"=1")
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			done <- result{code: ee.ExitCode(), out: string(out)}
			return
		}
		done <- result{out: string(out), err: err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("run narun %v: %v", args, r.err)
	}
	return r.code, r.out
}
