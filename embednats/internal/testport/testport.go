// Package testport gives tests loopback addresses to name servers by
// before they start. It is its own package so that embednats' internal
// tests, which natstest (importing embednats) cannot serve, use it too.
package testport

import (
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
func FreeAddr(t testing.TB) string {
	t.Helper()
	if low := ephemeralLow(); low > minTestPort+1000 {
		for range 100 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(minTestPort+rand.IntN(low-minTestPort)))
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				return addr
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
