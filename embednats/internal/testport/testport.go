// Package testport gives tests loopback addresses to name servers by
// before they start. It is its own package so that embednats' internal
// tests, which natstest (importing embednats) cannot serve, use it too.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a loopback address whose port is free now, for a
// server a test must name before it starts (a cluster's routes). The port
// is below the kernel's range for the local ports of outgoing connections
// (ip_local_port_range): one the kernel picks for a listener on port 0 is
// from that range, and a connection any test opens meanwhile may take it
// before the server binds it, which failed CI runs with "address already
// in use".
//
// The port stays reserved to the test until it ends, across processes:
// `go test ./...` runs packages at once, and two of them drawing the same
// port, each finding it free before either bound it, failed a CI run the
// same way.
func FreeAddr(t testing.TB) string {
	t.Helper()
	if low := ephemeralLow(); low > minTestPort+1000 {
		if addr, ok := reserve(t, minTestPort, low); ok {
			return addr
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// reserve draws a port in [low, high) that no other test holds and that
// is free, and holds it for t. The hold is a socket in Linux's abstract
// namespace, named after the port: the kernel frees it when the test
// closes it or its process dies, so a killed test run leaves nothing.
func reserve(t testing.TB, low, high int) (string, bool) {
	for range 100 {
		port := low + rand.IntN(high-low)
		hold, err := net.Listen("unix", fmt.Sprintf("@narun-testport-%d", port))
		if err != nil {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			hold.Close()
			continue
		}
		l.Close()
		t.Cleanup(func() { hold.Close() })
		return addr, true
	}
	return "", false
}

// minTestPort keeps FreeAddr's ports clear of the well-known and
// registered services a machine may run.
const minTestPort = 20000

// ephemeralLow is the first port of the kernel's range for outgoing
// connections, Linux's default when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
