package embednats

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NameClash is a server name that more than one server of the cluster
// goes by. JetStream knows its members by name: members that share one
// count as one, and a new cluster never elects a leader. nats-server
// says so only on the servers that share the name, among dozens of
// lines of the routes it refuses them.
type NameClash struct {
	// Name is the server name, [nats] server_name.
	Name string
	// Addrs are the addresses of the routes from servers of that name,
	// sorted: the route address of a server this one dialled, the address
	// a server dialled from otherwise.
	Addrs []string
	// Own says the name is this server's too.
	Own bool
}

// NameClashes lists the server names that the routes connected now give
// for more than one server, or for a server other than this one with this
// one's name, the latter also when the server refused its route of late;
// nil when every name is its own.
func (s *Server) NameClashes() ([]NameClash, error) {
	rz, err := s.current().Routez(nil)
	if err != nil {
		return nil, fmt.Errorf("list the routes: %w", err)
	}
	return nameClashes(rz, s.logs.sameNameRefused(time.Now())), nil
}

// nameClashes finds the clashes in rz, and in refused, the addresses of
// routes refused for coming from a server of rz's own name.
func nameClashes(rz *server.Routez, refused []string) []NameClash {
	type remote struct {
		addr      string
		solicited bool
	}
	// A server has several routes to another (a pool, one per pinned
	// account): one name with one server id is one server.
	byName := map[string]map[string]remote{}
	for _, r := range rz.Routes {
		if r.RemoteName == "" {
			// Before the remote's INFO.
			continue
		}
		ids := byName[r.RemoteName]
		if ids == nil {
			ids = map[string]remote{}
			byName[r.RemoteName] = ids
		}
		if have, ok := ids[r.RemoteID]; !ok || r.DidSolicit && !have.solicited {
			ids[r.RemoteID] = remote{addr: net.JoinHostPort(r.IP, strconv.Itoa(r.Port)), solicited: r.DidSolicit}
		}
	}
	if len(refused) > 0 {
		if byName[rz.Name] == nil {
			byName[rz.Name] = map[string]remote{}
		}
		for _, addr := range refused {
			// Not a server id: the route was closed before it counted.
			byName[rz.Name]["refused "+addr] = remote{addr: addr}
		}
	}
	var clashes []NameClash
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		ids := byName[name]
		own := name == rz.Name
		if len(ids) < 2 && !own {
			continue
		}
		c := NameClash{Name: name, Own: own}
		for _, r := range ids {
			c.Addrs = append(c.Addrs, r.addr)
		}
		slices.Sort(c.Addrs)
		clashes = append(clashes, c)
	}
	return clashes
}
