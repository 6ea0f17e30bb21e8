package embednats

import (
	"reflect"
	"testing"
	"time"

	"github.com/narun/narun/embednats/internal/testport"
	"github.com/nats-io/nats-server/v2/server"
)

// A server's pool of routes to another is one server, however many routes
// it has; two server ids under one name, or another server under this
// one's name, are a clash, named with where they are.
func TestNameClashes(t *testing.T) {
	t.Parallel()
	route := func(name, id, ip string, port int, solicited bool) *server.RouteInfo {
		return &server.RouteInfo{RemoteName: name, RemoteID: id, IP: ip, Port: port, DidSolicit: solicited}
	}
	for _, tc := range []struct {
		name    string
		routes  []*server.RouteInfo
		refused []string
		want    []NameClash
	}{
		{"a pool to each of two others", []*server.RouteInfo{
			route("u1", "A", "10.0.0.1", 6222, true), route("u1", "A", "10.0.0.1", 40001, false), route("u1", "A", "10.0.0.1", 6222, true),
			route("u3", "C", "10.0.0.3", 6222, true), route("u3", "C", "10.0.0.3", 40002, false),
		}, nil, nil},
		{"before INFO", []*server.RouteInfo{route("", "", "10.0.0.1", 6222, true), route("", "", "10.0.0.3", 6222, true)}, nil, nil},
		{"two servers of one name", []*server.RouteInfo{
			route("u1", "A", "10.0.0.3", 40002, false), route("u1", "A", "10.0.0.3", 6222, true),
			route("u1", "B", "10.0.0.1", 6222, true), route("u3", "C", "10.0.0.4", 6222, true),
		}, nil, []NameClash{{Name: "u1", Addrs: []string{"10.0.0.1:6222", "10.0.0.3:6222"}}}},
		{"another server of this one's name", []*server.RouteInfo{route("u2", "B", "10.0.0.2", 40003, false)},
			nil, []NameClash{{Name: "u2", Addrs: []string{"10.0.0.2:40003"}, Own: true}}},
		{"a route refused from a server of this one's name", []*server.RouteInfo{route("u1", "A", "10.0.0.1", 6222, true)},
			[]string{"10.0.0.5:40004"}, []NameClash{{Name: "u2", Addrs: []string{"10.0.0.5:40004"}, Own: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nameClashes(&server.Routez{Name: "u2", Routes: tc.routes}, tc.refused)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Two members installed from one copied narun.toml share its server_name.
// nats-server closes the route between them as soon as the second INFO
// arrives, so a look at the routes connected at any moment seldom finds
// it: each member must still name the other server of its own name, the
// only clash that members of a three-server cluster copied whole can see.
func TestEachMemberSharingANameSeesTheClash(t *testing.T) {
	t.Parallel()
	addrs := []string{testport.FreeAddr(t), testport.FreeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats-route://"+a)
	}
	var members []*Server
	for _, a := range addrs {
		s, err := Start(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), ServerName: "dup",
			Cluster: Cluster{Name: "narun", Listen: a, Routes: routes}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		members = append(members, s)
	}
	for i, s := range members {
		deadline := time.Now().Add(30 * time.Second)
		for {
			cs, err := s.NameClashes()
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) == 1 && cs[0].Name == "dup" && cs[0].Own && len(cs[0].Addrs) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d at %s: clashes %+v, want the other server named dup", i, addrs[i], cs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
