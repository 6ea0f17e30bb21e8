package runner

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// neverHealthy stops the test if an event or a status of the app said
// healthy.
func neverHealthy(t *testing.T, ev *events, list []state.Instance) {
	t.Helper()
	for _, e := range ev.list() {
		if e.State == state.Healthy || e.Healthy {
			t.Fatalf("reported healthy while another process held its port: %+v", e.Instance)
		}
	}
	for _, in := range list {
		if in.State == state.Healthy || in.Healthy {
			t.Fatalf("status healthy while another process held its port: %+v", in)
		}
	}
}

// A port on the host network held by another program (here the test
// itself) must not make an instance healthy that does not listen on it:
// neither one that crash-loops on EADDRINUSE nor one that runs on without
// its port. The reason names the port and the holder.
func TestHealthCheckPortHeldByAnother(t *testing.T) {
	t.Parallel()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	// squat holds a free port until the test ends or close is called, and
	// returns the reason a check of that port should give.
	squat := func(t *testing.T) (addr string, port int, reason string, close func()) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		port = ln.Addr().(*net.TCPAddr).Port
		reason = fmt.Sprintf("waiting for health check: port %d is held by another process (pid %d, %s), not by this instance",
			port, os.Getpid(), strings.TrimSpace(string(comm)))
		return ln.Addr().String(), port, reason, func() { ln.Close() }
	}
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)

	t.Run("crash loop", func(t *testing.T) {
		addr, port, want, release := squat(t)
		ev := c.watchEvents(t, "squeezed")
		// The probe takes a moment to start, then exits when it cannot
		// listen, again and again.
		c.deploy(t, "squeezed", "1.0.0", probeBin, fmt.Sprintf("args = [\"bind\", %q]\n[http]\nport = %d\n"+
			"[restart]\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n", addr, port))
		tr.wait(t, "squeezed", "crash loop with the squatter named", func(l []state.Instance) bool {
			neverHealthy(t, ev, l)
			return len(l) == 1 && l[0].Restarts >= 3 && slices.ContainsFunc(ev.list(), func(e state.Event) bool {
				return e.Reason == want
			})
		})
		neverHealthy(t, ev, tr.of("squeezed"))
		// Once the port is free the next start takes it, and is healthy.
		release()
		tr.wait(t, "squeezed", "healthy once the port is free", allIn(1, state.Healthy))
	})

	t.Run("runs without its port", func(t *testing.T) {
		addr, port, want, _ := squat(t)
		ev := c.watchEvents(t, "portless")
		c.deploy(t, "portless", "1.0.0", probeBin, fmt.Sprintf("args = [\"listen\", %q]\n[health]\ntype = \"http\"\nport = %d\n", addr, port))
		tr.waitLine(t, "portless", "probe: listen error: listen tcp "+addr+": bind: address already in use")
		tr.wait(t, "portless", "the squatter named", func(l []state.Instance) bool {
			neverHealthy(t, ev, l)
			return len(l) == 1 && l[0].State == state.Running && l[0].Reason == want
		})
		neverHealthy(t, ev, tr.of("portless"))
	})
}

// An instance that listens on its port itself, on any address that takes
// connections to 127.0.0.1, or through a child of its own, is healthy as
// before.
func TestHealthCheckPortOwnedByInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	for _, tc := range []struct {
		name, bin string
		// args are the app's arguments, %[1]s standing for the port.
		args, health string
	}{
		{"tcp", helloBin, `"--http", "127.0.0.1:%[1]s"`, ""},
		{"http", helloBin, `"--http", "127.0.0.1:%[1]s"`, "[health]\ntype = \"http\"\npath = \"/hello/\"\n"},
		{"ipv4 any", probeBin, `"listen", "0.0.0.0:%[1]s"`, ""},
		// Go listens on [::] here, or on 0.0.0.0 without IPv6.
		{"all addresses", helloBin, `"--http", ":%[1]s"`, ""},
		{"child", probeBin, `"spawn", "listen", "127.0.0.1:%[1]s"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(testutil.FreeAddr(t))
			app := "own-" + strings.ReplaceAll(tc.name, " ", "-")
			c.deploy(t, app, "1.0.0", tc.bin, fmt.Sprintf("args = ["+tc.args+"]\n[http]\nport = %[1]s\n", port)+tc.health)
			tr.wait(t, app, "healthy", allIn(1, state.Healthy))
			if strings.Contains(tr.logs.String(), "cannot tell") {
				t.Errorf("the check did not find the listener's owner:\n%s", tr.logs.String())
			}
		})
	}
}

// A sandboxed instance on the host network shares the host's ports: its
// listener, held by a process in the sandbox's PID namespace, is found
// among the launcher's descendants.
func TestHealthCheckPortOwnedInSandbox(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startSandboxRunner(t, c, nil)
	addr := testutil.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	c.deploy(t, "boxed", "1.0.0", helloBin, fmt.Sprintf("mode = \"sandbox\"\nargs = [\"--http\", %q]\n[sandbox]\nnetwork = \"host\"\n[http]\nport = %s\n", addr, port))
	tr.wait(t, "boxed", "healthy", allIn(1, state.Healthy))
	if strings.Contains(tr.logs.String(), "cannot tell") {
		t.Errorf("the check did not find the listener's owner:\n%s", tr.logs.String())
	}
}

// An app that listens on [::1] only (Node's listen(port, "localhost") where
// localhost is ::1 first) is never reached by the check, which dials
// 127.0.0.1: the reason says so rather than only "connection refused",
// which the app's own "listening on localhost" seems to contradict.
func TestHealthCheckIPv6LoopbackOnly(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	// The first check may come before the app listens; the reason at the
	// end of the start grace is the last check's.
	c.deploy(t, "v6only", "1.0.0", helloBin, fmt.Sprintf("args = [\"--http\", \"[::1]:%[1]d\"]\n[http]\nport = %[1]d\n[health]\nstart_grace = \"1s\"\n", port))
	want := fmt.Sprintf("not healthy 1s after start: nothing listens on 127.0.0.1:%d, which the check and the gateway's requests reach, but something does on [::1]:%d", port, port)
	tr.wait(t, "v6only", "the ::1 listener named", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].State == state.Running && strings.HasPrefix(l[0].Reason, want)
	})
}
