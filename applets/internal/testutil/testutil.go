// Package testutil holds helpers shared by the applets' tests: finding
// external tools, free ports, waiting on conditions and collecting logs.
package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/narun/narun/embednats/natstest"
)

// Tool finds an external program used by a test, in PATH and then in
// $(go env GOPATH)/bin. When it is missing the test is skipped, unless
// NARUN_REQUIRE_TOOLS=1 (set by scripts/test.sh, which installs the tools).
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if os.Getenv("NARUN_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not found in PATH or GOPATH/bin; scripts/test.sh installs it", name)
	}
	t.Skipf("%s not installed (scripts/test.sh installs it; set NARUN_REQUIRE_TOOLS=1 to make this a failure)", name)
	return ""
}

// FreeAddr is natstest.FreeAddr: a loopback address whose port is free
// now and out of the way of the kernel's choices for other sockets.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return natstest.FreeAddr(t)
}

// Unanswering is a loopback address that answers no SYN, as a device that
// is powered off or cut off: a dial to it times out. It is a listener that
// never accepts, with a backlog of 0 whose queue one connection fills,
// after which the kernel drops the SYNs it gets.
func Unanswering(t testing.TB) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("fill the accept queue of %s: %v", addr, err)
	}
	t.Cleanup(func() { filler.Close() })
	// The handshake's last ACK may reach the listener after the dial
	// returned; until it does, a SYN would still be answered. Of a
	// listener, TCP_INFO's unacked is its accept queue's length.
	Eventually(t, 10*time.Second, "accept queue of "+addr+" full", func() bool {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err == nil && info.Unacked >= 1
	})
	return addr
}

// Silent is a loopback address that accepts connections and never sends a
// byte on them, as a server whose process is stopped (SIGSTOP) or hung:
// its kernel completes the handshake for it.
func Silent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Eventually polls cond every 10ms until it returns true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogBuffer collects what loggers write from several goroutines.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Inode is the inode number of path: a file that keeps it was not written
// again, since every write of narun's goes to a temporary renamed over it.
func Inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// UnreadEntry is a deletion whose read from the leader of its bucket fails,
// as in an election or a slow answer: its key makes a request longer than
// the server takes. The watch tests hand one over before the entries whose
// check must still be made. (A key the leader holds no record of is an
// answer, which stops no later read.)
type UnreadEntry struct{ jetstream.KeyValueEntry }

func (UnreadEntry) Key() string                     { return strings.Repeat("k", 1<<20) }
func (UnreadEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValueDelete }

// UnansweredGet is an object store whose first Get gets no answer, as a
// request that a member which has just lost its group's leader drops: it
// returns only when its context ends. Later ones are served.
type UnansweredGet struct {
	jetstream.ObjectStore
	gets atomic.Int32
}

func (o *UnansweredGet) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	if o.gets.Add(1) == 1 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return o.ObjectStore.Get(ctx, name, opts...)
}

// HoldingUnanswered is an UnansweredGet over an object store of a server
// of its own that holds name with content.
func HoldingUnanswered(t testing.TB, name, content string) *UnansweredGet {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "objects"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutString(ctx, name, content); err != nil {
		t.Fatal(err)
	}
	return &UnansweredGet{ObjectStore: obs}
}

// Gets is how many times Get was called.
func (o *UnansweredGet) Gets() int { return int(o.gets.Load()) }

// WatchHeartbeats waits until bucket's stream has want consumers, one per
// watch of it, and returns their idle heartbeats.
func WatchHeartbeats(t testing.TB, js jetstream.JetStream, bucket string, want int) []time.Duration {
	t.Helper()
	var beats []time.Duration
	Eventually(t, 10*time.Second, fmt.Sprintf("%d watches of %s", want, bucket), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			return false
		}
		beats = beats[:0]
		l := s.ListConsumers(ctx)
		for c := range l.Info() {
			beats = append(beats, c.Config.IdleHeartbeat)
		}
		return l.Err() == nil && len(beats) == want
	})
	return beats
}
