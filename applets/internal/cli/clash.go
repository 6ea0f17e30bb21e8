package cli

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/narun/narun/embednats"
)

// WatchNameClashes looks every clashEvery until ctx ends for the [nats]
// server_names that the routes of a cluster member show shared (the
// embedded server's NameClashes), for a member that runs its server for
// as long as it runs: a member installed from a copied narun.toml may
// join at any time. Such members keep its server_name, and their routes
// connect, but JetStream takes them for one member and no leader is ever
// elected; nats-server says so only on the duplicated members, among
// dozens of lines of the routes it refuses them.
func WatchNameClashes(ctx context.Context, clashes func() ([]embednats.NameClash, error), log *slog.Logger) {
	var seen clashSeen
	t := time.NewTicker(clashEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cs, err := clashes()
		if err != nil {
			log.Debug("routes not checked for a shared [nats] server_name", "err", err)
			continue
		}
		if !seen.look(clashedNames(cs), ownClash(cs), time.Now()) {
			continue
		}
		for _, c := range cs {
			msg := "members of the cluster share a [nats] server_name: JetStream takes them for one member and elects no leader; give each member its own [nats] server_name"
			if c.Own {
				msg = "another member of the cluster has this member's [nats] server_name: JetStream takes them for one member and elects no leader; give each member its own [nats] server_name"
			}
			log.Error(msg, "server_name", c.Name, "addrs", strings.Join(c.Addrs, ", "))
		}
	}
}

// clashSeen decides which looks say the clash they see. A member that
// lost power and is back within seconds shows its name twice for a
// while: its new routes are up, and its old ones are listed until their
// pings fail, embednats.RouteStaleAfter at most. So a clash between other
// members is said once every look since embednats.RouteStaleAfter has seen
// it. A server of this one's own name is no stale route, and nats-server
// closes its route as soon as it arrives, so it is seen only now and then:
// it is said at once. Either is said again as soon as the names change, and
// about once a minute: the server's own lines (a route refused for a wrong
// login, say) may have buried it.
type clashSeen struct {
	names  string    // seen at the last look
	since  time.Time // first look of names' run of looks
	said   string
	saidAt time.Time
}

// look takes the names a look at now saw clash, "" for none, and whether
// one of them is this server's own, and says whether to log them.
func (s *clashSeen) look(names string, own bool, now time.Time) bool {
	if names != s.names {
		s.names, s.since = names, now
	}
	if names == "" || (!own && now.Sub(s.since) < embednats.RouteStaleAfter) {
		return false
	}
	if names == s.said && now.Sub(s.saidAt) < time.Minute {
		return false
	}
	s.said, s.saidAt = names, now
	return true
}

// ownClash says whether one of cs is of this server's own name.
func ownClash(cs []embednats.NameClash) bool {
	return slices.ContainsFunc(cs, func(c embednats.NameClash) bool { return c.Own })
}

// clashedNames is the names of cs, to tell whether they were said: the
// addresses of routes a member dialled change as they are dialled again.
func clashedNames(cs []embednats.NameClash) string {
	shared := make([]string, len(cs))
	for i, c := range cs {
		shared[i] = c.Name
	}
	return strings.Join(shared, " ")
}

// clashEvery is how often WatchNameClashes looks: a look lists every
// route, so not every second, and a start that waits for JetStream
// still names a clash within seconds of RouteStaleAfter.
const clashEvery = 5 * time.Second
