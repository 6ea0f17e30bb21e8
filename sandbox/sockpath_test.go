package sandbox

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bridge socket whose path is longer than a socket address holds (an
// instance dir under a deep data dir, of a 64-character app name) is
// listened on, reached, handed a listener over, and removed, by its path.
func TestBridgeOnALongSocketPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("a", 64), "0-abcdef", "run")
	sock := filepath.Join(dir, "nats.sock")
	if len(sock) <= maxSocketPath {
		t.Fatalf("socket path %s is %d bytes: too short for the test", sock, len(sock))
	}
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		c, err := target.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	br, err := ListenBridge(sock, target.Addr().String())
	if err != nil {
		t.Fatalf("listen on %d bytes of socket path: %v", len(sock), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- br.Serve(ctx) }()
	// What a launcher does: hand a listener over, by the socket's path.
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	err = handOver(ln, sock)
	ln.Close()
	if err != nil {
		t.Fatalf("hand over through %d bytes of socket path: %v", len(sock), err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	c.Close()
	if string(b) != "hello" {
		t.Fatalf("through the bridge: %q, %v; want the target's hello", b, err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after the bridge stopped (stat: %v)", err)
	}

	// The inbound side: the launcher listens, the runner dials.
	in := filepath.Join(dir, "http.sock")
	l, err := listenUnix(in)
	if err != nil {
		t.Fatalf("listen on %d bytes of socket path: %v", len(in), err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("in"))
			c.Close()
		}
	}()
	c, err = DialBridge(context.Background(), in)
	if err != nil {
		t.Fatalf("dial %d bytes of socket path: %v", len(in), err)
	}
	b, _ = io.ReadAll(c)
	c.Close()
	if string(b) != "in" {
		t.Fatalf("from the inbound socket: %q", b)
	}
}

// The next start of an instance makes its bridge at the same path while the
// last one's Serve may still be ending: that Serve leaves the new socket,
// or the new launcher would find no runner to hand its listener to.
func TestBridgeEndingLeavesTheNextOnesSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "nats.sock")
	old, err := ListenBridge(sock, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	next, err := ListenBridge(sock, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := old.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := DialBridge(context.Background(), sock)
	if err != nil {
		t.Fatalf("the ended bridge took the next one's socket: %v", err)
	}
	c.Close()
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := next.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("a bridge left its own socket: %v", err)
	}
}
