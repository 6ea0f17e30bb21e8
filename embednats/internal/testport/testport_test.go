package testport

import (
	"net"
	"strconv"
	"testing"
)

// A port one test holds is not drawn by another, in this process or any
// other, until the first ends; then it is free to draw again.
func TestAReservedPortIsNotDrawnAgain(t *testing.T) {
	var port int
	t.Run("holder", func(t *testing.T) {
		// Other packages' tests draw ports meanwhile: hold the first
		// one none of them holds.
		for port = minTestPort; ; port++ {
			if _, ok := reserve(t, port, port+1); ok {
				break
			}
			if port == minTestPort+1000 {
				t.Fatalf("no port free to hold in [%d, %d]", minTestPort, port)
			}
		}
		t.Run("other", func(t *testing.T) {
			if addr, ok := reserve(t, port, port+1); ok {
				t.Errorf("%s drawn again while it is held", addr)
			}
		})
	})
	t.Run("after", func(t *testing.T) {
		if _, ok := reserve(t, port, port+1); !ok {
			t.Errorf("port %d not drawn again after its holder ended", port)
		}
	})
}

// The address drawn is a loopback one a server can listen on.
func TestFreeAddrCanBeListenedOn(t *testing.T) {
	addr := FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	l.Close()
	host, p, _ := net.SplitHostPort(addr)
	if n, _ := strconv.Atoi(p); host != "127.0.0.1" || n == 0 {
		t.Errorf("FreeAddr gave %s", addr)
	}
}
