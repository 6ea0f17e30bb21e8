package embednats

import (
	"reflect"
	"testing"

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
		name   string
		routes []*server.RouteInfo
		want   []NameClash
	}{
		{"a pool to each of two others", []*server.RouteInfo{
			route("u1", "A", "10.0.0.1", 6222, true), route("u1", "A", "10.0.0.1", 40001, false), route("u1", "A", "10.0.0.1", 6222, true),
			route("u3", "C", "10.0.0.3", 6222, true), route("u3", "C", "10.0.0.3", 40002, false),
		}, nil},
		{"before INFO", []*server.RouteInfo{route("", "", "10.0.0.1", 6222, true), route("", "", "10.0.0.3", 6222, true)}, nil},
		{"two servers of one name", []*server.RouteInfo{
			route("u1", "A", "10.0.0.3", 40002, false), route("u1", "A", "10.0.0.3", 6222, true),
			route("u1", "B", "10.0.0.1", 6222, true), route("u3", "C", "10.0.0.4", 6222, true),
		}, []NameClash{{Name: "u1", Addrs: []string{"10.0.0.1:6222", "10.0.0.3:6222"}}}},
		{"another server of this one's name", []*server.RouteInfo{route("u2", "B", "10.0.0.2", 40003, false)},
			[]NameClash{{Name: "u2", Addrs: []string{"10.0.0.2:40003"}, Own: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nameClashes(&server.Routez{Name: "u2", Routes: tc.routes})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
