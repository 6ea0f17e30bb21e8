package gateway

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats/natstest"
)

// The admin listener, on every interface by default, has no
// max_connections: a client that asks for /metrics again and again and
// reads none of it left net/http writing an answer with no deadline, and
// held its connection, a goroutine and the answers in the kernel's
// buffers, for ever. The admin server bounds each answer's write, and
// closes the connection of a client that does not read it.
func TestAdminLetsGoOfAClientThatDoesNotRead(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	r := startRun(t, natstest.Connect(t, srv), gwConfig(config.Route{Path: "/", Service: "svc"}), "")
	c, err := net.Dial("tcp", r.addrs["admin"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	requests := strings.Repeat("GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n", 1000)
	let := make(chan error, 1)
	go func() {
		for {
			if _, err := io.WriteString(c, requests); err != nil {
				let <- err
				return
			}
		}
	}()
	select {
	case err := <-let:
		t.Logf("the admin server let the client go: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("a client that reads no answer still holds its admin connection after a minute")
	}
}
