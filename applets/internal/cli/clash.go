package cli

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/narun/narun/embednats"
)

// NameClashes says the [nats] server_names that the routes of a cluster
// member show shared (the embedded server's NameClashes): members
// installed from one copied narun.toml keep its server_name, and their
// routes connect, but JetStream takes them for one member and no leader
// is ever elected. nats-server says so only on the duplicated members,
// among dozens of lines of the routes it refuses them. The zero value is
// ready to use.
type NameClashes struct {
	said string
	at   time.Time
}

// Look asks clashes for the shared names and logs them as soon as they
// change, and again about once a minute: the server's own lines (a route
// refused for a wrong login, say) may have buried the first.
func (n *NameClashes) Look(clashes func() ([]embednats.NameClash, error), log *slog.Logger) {
	cs, err := clashes()
	if err != nil {
		log.Debug("routes not checked for a shared [nats] server_name", "err", err)
		return
	}
	shared := clashedNames(cs)
	if shared == "" || (shared == n.said && time.Since(n.at) < time.Minute) {
		return
	}
	for _, c := range cs {
		msg := "members of the cluster share a [nats] server_name: JetStream takes them for one member and elects no leader; give each member its own [nats] server_name"
		if c.Own {
			msg = "another member of the cluster has this member's [nats] server_name: JetStream takes them for one member and elects no leader; give each member its own [nats] server_name"
		}
		log.Error(msg, "server_name", c.Name, "addrs", strings.Join(c.Addrs, ", "))
	}
	n.said, n.at = shared, time.Now()
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

// WatchNameClashes looks for shared server names every clashEvery until
// ctx ends, for a member that runs its server for as long as it runs: a
// member installed from a copied narun.toml may join at any time.
func WatchNameClashes(ctx context.Context, clashes func() ([]embednats.NameClash, error), log *slog.Logger) {
	var n NameClashes
	t := time.NewTicker(clashEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.Look(clashes, log)
		}
	}
}

// clashEvery is how often WatchNameClashes looks: a look lists every
// route, so not every second, and a start that waits for JetStream
// still names a clash within seconds.
const clashEvery = 5 * time.Second
