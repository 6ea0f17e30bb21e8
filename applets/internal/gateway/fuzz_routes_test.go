package gateway

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
)

// FuzzRouteMatch builds a table from three arbitrary routes and matches an
// arbitrary request: compiling either rejects a route or accepts it, the
// table never panics, a match really matches, and the answer does not
// depend on the order the routes were defined in.
func FuzzRouteMatch(f *testing.F) {
	f.Add("", "/hello/", "prefix", "", "*.example.com", "/api", "exact", "GET,POST", "api.example.com", "/api", "exact", "", "api.example.com", "/api", "GET")
	f.Add("a.b", "/", "", "PUT", "", "/x/", "prefix", "", "*.b", "/x/y", "", "delete", "a.b", "/x/y/z", "DELETE")
	f.Fuzz(func(t *testing.T, h1, p1, m1, meth1, h2, p2, m2, meth2, h3, p3, m3, meth3, host, path, method string) {
		var routes []*route
		for i, rc := range []config.Route{
			{Host: h1, Path: p1, Match: m1, Methods: splitMethods(meth1), Service: "s1"},
			{Host: h2, Path: p2, Match: m2, Methods: splitMethods(meth2), Service: "s2"},
			{Host: h3, Path: p3, Match: m3, Methods: splitMethods(meth3), Service: "s3"},
		} {
			r, err := compile(rc, "r"+string(rune('1'+i)), time.Second, 1<<20)
			if err == nil {
				routes = append(routes, r)
			}
		}
		forward, err := newTable(routes)
		if err != nil {
			return
		}
		reversed := slices.Clone(routes)
		slices.Reverse(reversed)
		backward, err := newTable(reversed)
		if err != nil {
			t.Fatalf("duplicate detection depends on order: forward ok, backward %v", err)
		}
		host, _ = requestHost(host)
		r1, _, allow1 := forward.match(host, path, method)
		r2, _, allow2 := backward.match(host, path, method)
		if (r1 == nil) != (r2 == nil) || (r1 != nil && r1.pattern() != r2.pattern()) || !slices.Equal(allow1, allow2) {
			t.Fatalf("match depends on definition order: %v %v / %v %v", r1, allow1, r2, allow2)
		}
		if r3, _, allow3 := forward.scan(host, path, method); r1 != r3 || !slices.Equal(allow1, allow3) {
			t.Fatalf("match by segment gives %v %v, a scan of every pattern %v %v", r1, allow1, r3, allow3)
		}
		if r1 != nil && (!r1.matchHost(host) || !r1.matchPath(path) || !(r1.lists(method) || method == http.MethodHead && r1.lists(http.MethodGet))) {
			t.Fatalf("route %s returned for a request it does not match", r1.pattern())
		}
		if r1 != nil && r1.cfg.StripPrefix && !strings.HasPrefix(r1.stripped(path), "/") {
			t.Fatalf("stripped path %q lost its leading slash", r1.stripped(path))
		}
	})
}

// scan is match without the index by segment: the first pattern in table
// order that matches host and path decides.
func (t *table) scan(host, path, method string) (r, refused *route, allow []string) {
	for i := range t.patterns {
		p := &t.patterns[i]
		if p.first.matchHost(host) && p.first.matchPath(path) {
			return p.pick(method)
		}
	}
	return nil, nil, nil
}

func splitMethods(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
