package cli

import (
	"testing"
	"time"

	"github.com/narun/narun/embednats"
)

// A clash between other members is said once it has outlived a stale
// route, again only after a minute or when the names change, and a member
// back from a power cut, whose old routes are listed until their pings
// fail, is no clash. A server of this one's own name is said at once: its
// route is closed as soon as it arrives, so no look sees it for long.
func TestClashSaidOnceItOutlivesStaleRoutes(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	type look struct {
		at    time.Duration
		names string
		own   bool
		say   bool
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"member back from a power cut", []look{
			{0, "", false, false},
			{clashEvery, "u1", false, false},
			{2 * clashEvery, "u1", false, false},
			{3 * clashEvery, "", false, false},
		}},
		{"shared name", []look{
			{0, "u1", false, false},
			{clashEvery, "u1", false, false},
			{embednats.RouteStaleAfter, "u1", false, true},
			{embednats.RouteStaleAfter + clashEvery, "u1", false, false},
			{embednats.RouteStaleAfter + time.Minute, "u1", false, true},
		}},
		{"names change", []look{
			{0, "u1", false, false},
			{embednats.RouteStaleAfter, "u1", false, true},
			{embednats.RouteStaleAfter + clashEvery, "u1 u2", false, false},
			{2*embednats.RouteStaleAfter + clashEvery, "u1 u2", false, true},
		}},
		{"a server of this one's name, seen now and then", []look{
			{0, "u1", true, true},
			{clashEvery, "", false, false},
			{2 * clashEvery, "u1", true, false},
			{time.Minute, "u1", true, true},
		}},
		{"gone and back", []look{
			{0, "u1", false, false},
			{embednats.RouteStaleAfter, "u1", false, true},
			{embednats.RouteStaleAfter + clashEvery, "", false, false},
			{embednats.RouteStaleAfter + 2*clashEvery, "u1", false, false},
			{2*embednats.RouteStaleAfter + 2*clashEvery, "u1", false, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s clashSeen
			for _, l := range tc.looks {
				if got := s.look(l.names, l.own, start.Add(l.at)); got != l.say {
					t.Errorf("look at %s seeing %q: said %v, want %v", l.at, l.names, got, l.say)
				}
			}
		})
	}
}
