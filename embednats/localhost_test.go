package embednats_test

import (
	"net"
	"net/url"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats"
)

// narun's clients take the server's URL from [nats] listen, narun up's
// apps from its listener: both go through LocalHost, and the host it
// gives for an unspecified listen reaches the server, [::] included (Go
// listens on it dual-stack).
func TestLocalHostReachesTheServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ listen, want string }{
		{"0.0.0.0", "127.0.0.1"},
		{"", "127.0.0.1"},
		{"::", "127.0.0.1"},
		{"127.0.0.1", "127.0.0.1"},
		{"::1", "::1"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"edge-1.example.com", "edge-1.example.com"},
	} {
		if got := embednats.LocalHost(tc.listen); got != tc.want {
			t.Errorf("LocalHost(%q) = %q, want %q", tc.listen, got, tc.want)
		}
	}
	for _, host := range []string{"0.0.0.0", "", "::"} {
		t.Run("listen "+net.JoinHostPort(host, "0"), func(t *testing.T) {
			t.Parallel()
			s, err := embednats.Start(embednats.Config{Listen: net.JoinHostPort(host, "0"), DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			u, err := url.Parse(s.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			if u.Hostname() != embednats.LocalHost(host) {
				t.Errorf("ClientURL %s, want the host LocalHost(%q) = %q", u, host, embednats.LocalHost(host))
			}
			nc, err := nats.Connect((&url.URL{Scheme: "nats", Host: net.JoinHostPort(embednats.LocalHost(host), u.Port())}).String())
			if err != nil {
				t.Fatalf("connect to a server listening on %q: %v", host, err)
			}
			nc.Close()
		})
	}
}
