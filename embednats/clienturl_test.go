package embednats

import (
	"net"
	"net/url"
	"testing"
)

// A server on a link-local address is reached through the interface its
// listen address names; Go's listener address loses it, so the URL apps
// get (narun up's app_nats_url) must take it from the configuration.
func TestClientURLKeepsTheZone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		addr   *net.TCPAddr
		listen string
		want   string
	}{
		{"ipv4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4222}, "127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"ipv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 4222}, "[::1]:4222", "nats://[::1]:4222"},
		{"ipv6 any", &net.TCPAddr{IP: net.IPv6unspecified, Port: 4222}, "[::]:4222", "nats://127.0.0.1:4222"},
		{"link-local, zone from listen", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 4222}, "[fe80::1%eth0]:4222", "nats://[fe80::1%25eth0]:4222"},
		{"link-local, zone from the listener", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 4222, Zone: "eth1"}, "[fe80::1%eth1]:0", "nats://[fe80::1%25eth1]:4222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clientURL(tc.addr, tc.listen)
			if got != tc.want {
				t.Fatalf("client url = %q, want %q", got, tc.want)
			}
			// What nats.go dials: the host as net.Dial takes it.
			u, err := url.Parse(got)
			if err != nil {
				t.Fatalf("client url %q does not parse: %v", got, err)
			}
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				t.Fatalf("client url %q: host %q: %v", got, u.Host, err)
			}
		})
	}
}
