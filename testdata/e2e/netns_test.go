package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test hosts live in network namespaces joined by a bridge in the root
// namespace. Addresses come from 198.18.0.0/15, reserved for network tests;
// no traffic leaves the bridge. Each Net has its own bridge, /24 and names,
// so that tests with nets of their own can run in parallel.
const prefix = "nre2e"

// nets numbers the nets of this run: the number is in their names and
// addresses.
var nets atomic.Int32

// Net is a set of test hosts on one bridge.
type Net struct {
	t      *testing.T
	bridge string
	hosts  []*Host
}

// Host is one device: a network namespace with its own address and data dir.
type Host struct {
	net     *Net
	Name    string
	NS      string
	Addr    string
	DataDir string
	veth    string

	mu    sync.Mutex
	procs []*Proc
}

// Proc is a narun process running on a host.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func mustIP(t *testing.T, args ...string) {
	t.Helper()
	if err := ip(args...); err != nil {
		t.Fatal(err)
	}
}

// cleanupLeftovers removes namespaces and bridges of an earlier run that
// did not finish its own cleanup.
func cleanupLeftovers() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			killNamespace(f[0])
			ip("netns", "del", f[0])
		}
	}
	// A namespace outlives `ip netns del` until its last process is gone,
	// and its veth with it: remove the root end so the names are free.
	out, _ = exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, prefix) {
				ip("link", "del", name)
			}
		}
	}
}

// remove deletes the net's namespaces, links and bridge, leaving other
// nets alone.
func (n *Net) remove() {
	for _, h := range n.hosts {
		killNamespace(h.NS)
		ip("netns", "del", h.NS)
		ip("link", "del", h.veth)
	}
	ip("link", "del", n.bridge)
}

func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// NewNet creates hosts named after names on a bridge of their own: the
// k-th net of the run has 198.18.k.0/24, and its i-th host 198.18.k.(10+i).
func NewNet(t *testing.T, names ...string) *Net {
	t.Helper()
	k := nets.Add(1)
	if k > 250 {
		t.Fatal("e2e: more than 250 nets in one run")
	}
	p := fmt.Sprintf("%s%d", prefix, k)
	n := &Net{t: t, bridge: p + "br"}
	t.Cleanup(func() {
		for _, h := range n.hosts {
			h.StopAll()
		}
		n.remove()
	})
	mustIP(t, "link", "add", n.bridge, "type", "bridge")
	mustIP(t, "addr", "add", fmt.Sprintf("198.18.%d.1/24", k), "dev", n.bridge)
	mustIP(t, "link", "set", n.bridge, "up")
	for i, name := range names {
		h := &Host{net: n, Name: name, NS: p + "-" + name, Addr: fmt.Sprintf("198.18.%d.%d", k, 10+i), DataDir: t.TempDir(), veth: fmt.Sprintf("%sv%d", p, i)}
		n.hosts = append(n.hosts, h)
		mustIP(t, "netns", "add", h.NS)
		mustIP(t, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
		mustIP(t, "link", "set", h.veth, "master", n.bridge)
		mustIP(t, "link", "set", h.veth, "up")
		mustIP(t, "-n", h.NS, "addr", "add", h.Addr+"/24", "dev", "eth0")
		mustIP(t, "-n", h.NS, "link", "set", "eth0", "up")
		mustIP(t, "-n", h.NS, "link", "set", "lo", "up")
	}
	return n
}

// Cut drops the host's link to the others; Heal restores it.
func (h *Host) Cut()  { mustIP(h.net.t, "link", "set", h.veth, "down") }
func (h *Host) Heal() { mustIP(h.net.t, "link", "set", h.veth, "up") }

// Start runs narun with args inside the host's namespace.
func (h *Host) Start(name string, args ...string) *Proc {
	h.net.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, narunBinary(h.net.t)}, args...)...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.net.t.Fatalf("start %s on %s: %v", name, h.Name, err)
	}
	p := &Proc{Name: h.Name + "/" + name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

// Stop sends SIGTERM and waits for the process to exit.
func (p *Proc) Stop(t *testing.T) {
	t.Helper()
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s ignored SIGTERM for 15s; killed. Output:\n%s", p.Name, p.out.String())
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Kill ends every process in the host's namespace at once, as a power cut would.
func (h *Host) Kill() {
	killNamespace(h.NS)
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for _, p := range procs {
		<-p.done
	}
}

// StopAll stops the host's processes gracefully.
func (h *Host) StopAll() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for _, p := range procs {
		if !p.Exited() {
			p.Stop(h.net.t)
		}
	}
}

// WriteFile writes a file into the host's data dir and returns its path.
func (h *Host) WriteFile(name, body string) string {
	p := filepath.Join(h.DataDir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		h.net.t.Fatal(err)
	}
	return p
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lastLines keeps the end of a long output for failure messages.
func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
