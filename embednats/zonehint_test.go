package embednats

import "testing"

// The hint quotes an IPv6 address with its zone escaped, and nothing of a
// URL whose brackets are not an address's (a password's).
func TestZoneHint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ raw, want string }{
		{"nats-route://[fe80::1%eth0]:6222", " (a URL writes the zone's % as %25: [fe80::1%25eth0])"},
		{"nats-route://[fe80::1%25eth0]:6222", ""},
		{"nats-route://[2001:db8::1]:6222", ""},
		{"nats-route://r:p[w%zz]@host:6222", ""},
		{"nats-route://host:6222", ""},
	} {
		if got := zoneHint(tc.raw); got != tc.want {
			t.Errorf("zoneHint(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}
