package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
)

func mustTable(t *testing.T, rcs ...config.Route) *table {
	t.Helper()
	var rs []*route
	for i, rc := range rcs {
		r, err := compile(rc, "route "+string(rune('A'+i)), time.Second, 1<<20)
		if err != nil {
			t.Fatalf("compile %+v: %v", rc, err)
		}
		rs = append(rs, r)
	}
	tb, err := newTable(rs)
	if err != nil {
		t.Fatalf("new table: %v", err)
	}
	return tb
}

func TestRouteMatch(t *testing.T) {
	tb := mustTable(t,
		config.Route{Path: "/", Service: "root"},
		config.Route{Path: "/api/", Service: "api"},
		config.Route{Path: "/api/users", Match: "exact", Service: "users-exact"},
		config.Route{Path: "/api/users", Service: "users-prefix"},
		config.Route{Host: "*.example.com", Path: "/api/", Service: "wild-api"},
		config.Route{Host: "a.example.com", Path: "/", Service: "a-root"},
		config.Route{Host: "*.b.example.com", Path: "/", Service: "deep-wild"},
		config.Route{Path: "/rw", Methods: []string{"get", "HEAD"}, Service: "reader"},
		config.Route{Path: "/rw", Methods: []string{"POST"}, Service: "writer"},
		config.Route{Path: "/only-get", Methods: []string{"GET"}, Service: "only-get"},
		// HEAD goes where it is listed, though GET is listed first.
		config.Route{Path: "/h", Methods: []string{"GET"}, Service: "h-get"},
		config.Route{Path: "/h", Methods: []string{"HEAD"}, Service: "h-head"},
		// Same length, interleaved definitions: /m1/ POST must still be found.
		config.Route{Path: "/m1/", Methods: []string{"GET"}, Service: "m1-get"},
		config.Route{Path: "/m2/", Service: "m2"},
		config.Route{Path: "/m1/", Methods: []string{"POST"}, Service: "m1-post"},
	)
	tests := []struct {
		host, path, method string
		want               string
		allow              string
	}{
		{"localhost", "/", "GET", "root", ""},
		{"localhost", "/x", "GET", "root", ""},
		{"localhost", "/api", "GET", "api", ""},
		{"localhost", "/api/", "GET", "api", ""},
		{"localhost", "/api/x", "DELETE", "api", ""},
		{"localhost", "/apix", "GET", "root", ""},
		{"localhost", "/api/users", "GET", "users-exact", ""},
		{"localhost", "/api/users/7", "GET", "users-prefix", ""},
		{"localhost", "/api/usersx", "GET", "api", ""},
		{"x.example.com", "/api/q", "GET", "wild-api", ""},
		{"x.example.com", "/other", "GET", "root", ""},
		{"example.com", "/api/q", "GET", "api", ""},
		{"a.example.com", "/api/q", "GET", "a-root", ""}, // longest host beats longest path
		{"a.example.com", "/z", "GET", "a-root", ""},
		{"c.b.example.com", "/api/", "GET", "deep-wild", ""},
		{"localhost", "/rw", "GET", "reader", ""},
		{"localhost", "/rw", "POST", "writer", ""},
		{"localhost", "/rw", "PUT", "", "GET, HEAD, POST"},
		{"localhost", "/only-get/sub", "PUT", "", "GET, HEAD"},
		{"localhost", "/only-get/sub", "HEAD", "only-get", ""},
		{"localhost", "/h", "HEAD", "h-head", ""},
		{"localhost", "/h", "GET", "h-get", ""},
		{"localhost", "/m1/x", "POST", "m1-post", ""},
		{"localhost", "/m1/x", "GET", "m1-get", ""},
		{"localhost", "/m1/x", "PUT", "", "GET, HEAD, POST"},
		{"localhost", "/m1/x", "HEAD", "m1-get", ""},
	}
	for _, tc := range tests {
		t.Run(tc.host+tc.path+" "+tc.method, func(t *testing.T) {
			r, allow := tb.match(tc.host, tc.path, tc.method)
			got := ""
			if r != nil {
				got = r.cfg.Service
			}
			if got != tc.want || strings.Join(allow, ", ") != tc.allow {
				t.Errorf("match = %q allow %q, want %q allow %q", got, allow, tc.want, tc.allow)
			}
		})
	}
}

func TestRouteOrderIsDeterministic(t *testing.T) {
	rcs := []config.Route{
		{Path: "/a/", Service: "a"}, {Path: "/a/b/", Service: "ab"}, {Host: "h", Path: "/", Service: "h"},
		{Path: "/a/b/", Match: "exact", Service: "ab-exact"}, {Host: "*.h", Path: "/a/", Service: "wh"},
	}
	first := mustTable(t, rcs...)
	for i := range 20 {
		// Rotating the definitions must not change the order of the table.
		rot := append(append([]config.Route{}, rcs[i%len(rcs):]...), rcs[:i%len(rcs)]...)
		tb := mustTable(t, rot...)
		for j := range tb.routes {
			if tb.routes[j].cfg.Service != first.routes[j].cfg.Service {
				t.Fatalf("rotation %d: order %v differs from %v", i, services(tb), services(first))
			}
		}
	}
	if got := strings.Join(services(first), " "); got != "h wh ab-exact ab a" {
		t.Errorf("order = %s", got)
	}
}

func services(tb *table) []string {
	var s []string
	for _, r := range tb.routes {
		s = append(s, r.cfg.Service)
	}
	return s
}

func TestRouteStripPrefix(t *testing.T) {
	tests := []struct {
		route, escaped, want string
	}{
		{"/api/", "/api/users", "/users"},
		{"/api/", "/api/", "/"},
		{"/api", "/api", "/"},
		{"/api", "/api/a%2Fb", "/a%2Fb"},
		{"/sp ace/", "/sp%20ace/x", "/x"},
	}
	for _, tc := range tests {
		r, err := compile(config.Route{Path: tc.route, Service: "s", StripPrefix: true}, "t", time.Second, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := stripEscaped(tc.escaped, r); got != tc.want {
			t.Errorf("strip %q from %q = %q, want %q", tc.route, tc.escaped, got, tc.want)
		}
	}
}

func TestRouteErrors(t *testing.T) {
	tests := []struct {
		name   string
		routes []config.Route
		want   string
	}{
		{"duplicate", []config.Route{{Path: "/a/", Service: "x"}, {Path: "/a/", Service: "y"}}, "duplicate route: route A and route B"},
		{"duplicate methods overlap", []config.Route{{Path: "/a", Methods: []string{"GET", "PUT"}, Service: "x"}, {Path: "/a", Methods: []string{"put"}, Service: "y"}}, "with methods PUT"},
		{"duplicate all vs some", []config.Route{{Path: "/a", Service: "x"}, {Path: "/a", Methods: []string{"GET"}, Service: "y"}}, "duplicate route"},
		{"duplicate host case", []config.Route{{Host: "A.com", Path: "/", Service: "x"}, {Host: "a.com", Path: "/", Service: "y"}}, "duplicate route"},
		{"relative path", []config.Route{{Path: "a", Service: "x"}}, "must start with /"},
		{"bad match", []config.Route{{Path: "/", Match: "regex", Service: "x"}}, `match "regex"`},
		{"wildcard service", []config.Route{{Path: "/", Service: "x.*"}}, "literal NATS subject"},
		{"empty service", []config.Route{{Path: "/"}}, "literal NATS subject"},
		{"host with port", []config.Route{{Host: "a.com:80", Path: "/", Service: "x"}}, "without port"},
		{"inner wildcard", []config.Route{{Host: "a.*.com", Path: "/", Service: "x"}}, "leading"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rs []*route
			var err error
			for i, rc := range tc.routes {
				var r *route
				r, err = compile(rc, "route "+string(rune('A'+i)), time.Second, 1)
				if err != nil {
					break
				}
				rs = append(rs, r)
			}
			if err == nil {
				_, err = newTable(rs)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Same path, disjoint methods, or exact next to prefix: not duplicates.
	mustTable(t, config.Route{Path: "/a", Methods: []string{"GET"}, Service: "x"}, config.Route{Path: "/a", Methods: []string{"POST"}, Service: "y"},
		config.Route{Path: "/a", Match: "exact", Service: "z"})
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b": "/a/b", "/a/../b": "/b", "/a/./b/": "/a/b/", "//a": "/a", "/..": "/", "": "/", "/hello/../admin": "/admin",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckAppRoutes(t *testing.T) {
	x := []config.Route{{Path: "/x/"}}
	for _, tc := range []struct {
		name   string
		routes []config.Route
		others map[string][]config.Route
		want   string // "" for no error
	}{
		{"free path", x, map[string][]config.Route{"b": {{Path: "/y/"}}}, ""},
		{"taken path", x, map[string][]config.Route{"b": {{Path: "/x/"}}}, `app "b" route #1 (path "/x/") and app "a" route #1 (path "/x/")`},
		{"redeploy of the same app", x, map[string][]config.Route{"a": {{Path: "/x/"}}}, ""},
		{"same path, other methods", []config.Route{{Path: "/x/", Methods: []string{"POST"}}}, map[string][]config.Route{"b": {{Path: "/x/", Methods: []string{"GET"}}}}, ""},
		{"same path, other host", []config.Route{{Path: "/x/", Host: "a.example.com"}}, map[string][]config.Route{"b": {{Path: "/x/"}}}, ""},
		{"others that clash among themselves", []config.Route{{Path: "/z/"}}, map[string][]config.Route{"b": {{Path: "/x/"}}, "c": {{Path: "/x/"}}}, ""},
		{"invalid route of its own", []config.Route{{Path: "x"}}, nil, `app "a" route #1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckAppRoutes("a", tc.routes, tc.others)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
