package cli

import (
	"testing"
	"time"

	"github.com/narun/narun/embednats"
)

// A clash is said once it has outlived a stale route, again only after a
// minute or when the names change, and a member back from a power cut,
// whose old routes are listed until their pings fail, is no clash.
func TestClashSaidOnceItOutlivesStaleRoutes(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	type look struct {
		at    time.Duration
		names string
		say   bool
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"member back from a power cut", []look{
			{0, "", false},
			{clashEvery, "u1", false},
			{2 * clashEvery, "u1", false},
			{3 * clashEvery, "", false},
		}},
		{"shared name", []look{
			{0, "u1", false},
			{clashEvery, "u1", false},
			{embednats.RouteStaleAfter, "u1", true},
			{embednats.RouteStaleAfter + clashEvery, "u1", false},
			{embednats.RouteStaleAfter + time.Minute, "u1", true},
		}},
		{"names change", []look{
			{0, "u1", false},
			{embednats.RouteStaleAfter, "u1", true},
			{embednats.RouteStaleAfter + clashEvery, "u1 u2", false},
			{2*embednats.RouteStaleAfter + clashEvery, "u1 u2", true},
		}},
		{"gone and back", []look{
			{0, "u1", false},
			{embednats.RouteStaleAfter, "u1", true},
			{embednats.RouteStaleAfter + clashEvery, "", false},
			{embednats.RouteStaleAfter + 2*clashEvery, "u1", false},
			{2*embednats.RouteStaleAfter + 2*clashEvery, "u1", false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s clashSeen
			for _, l := range tc.looks {
				if got := s.look(l.names, start.Add(l.at)); got != l.say {
					t.Errorf("look at %s seeing %q: said %v, want %v", l.at, l.names, got, l.say)
				}
			}
		})
	}
}
