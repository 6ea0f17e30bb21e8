package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
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
	t.Parallel()
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
			r, _, allow := tb.match(tc.host, tc.path, tc.method)
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

// TestRouteExactAndTrailingSlash covers paths that a route names both with
// and without a trailing slash: an exact route wins the path it names over
// any prefix route, however the prefix is written, and the prefix routes /a
// and /a/, which match the same paths, are one pattern.
func TestRouteExactAndTrailingSlash(t *testing.T) {
	t.Parallel()
	type request struct{ path, method, want, allow string }
	tests := []struct {
		name     string
		routes   []config.Route
		requests []request
	}{
		{"exact /api/v1, then prefix /api/v1/", []config.Route{
			{Path: "/api/v1", Match: "exact", Service: "exact"},
			{Path: "/api/v1/", Service: "prefix"},
		}, []request{
			{"/api/v1", "GET", "exact", ""},
			{"/api/v1/", "GET", "prefix", ""},
			{"/api/v1/x", "GET", "prefix", ""},
			{"/api/v1x", "GET", "", ""},
		}},
		{"prefix /api/v1/, then exact /api/v1", []config.Route{
			{Path: "/api/v1/", Service: "prefix"},
			{Path: "/api/v1", Match: "exact", Service: "exact"},
		}, []request{
			{"/api/v1", "GET", "exact", ""},
			{"/api/v1/", "GET", "prefix", ""},
			{"/api/v1/x", "GET", "prefix", ""},
		}},
		{"exact /api next to prefixes /api/ and /", []config.Route{
			{Path: "/", Service: "root"},
			{Path: "/api/", Service: "prefix"},
			{Path: "/api", Match: "exact", Service: "exact"},
		}, []request{
			{"/api", "GET", "exact", ""},
			{"/api/", "GET", "prefix", ""},
			{"/apix", "GET", "root", ""},
		}},
		{"exact /, then prefix /", []config.Route{
			{Path: "/", Match: "exact", Service: "exact"},
			{Path: "/", Service: "prefix"},
		}, []request{
			{"/", "GET", "exact", ""},
			{"/x", "GET", "prefix", ""},
		}},
		{"prefix /, then exact /", []config.Route{
			{Path: "/", Service: "prefix"},
			{Path: "/", Match: "exact", Service: "exact"},
		}, []request{
			{"/", "GET", "exact", ""},
			{"/x", "GET", "prefix", ""},
		}},
		{"exact /a/ next to prefix /a", []config.Route{
			{Path: "/a", Service: "prefix"},
			{Path: "/a/", Match: "exact", Service: "exact"},
		}, []request{
			{"/a", "GET", "prefix", ""},
			{"/a/", "GET", "exact", ""},
			{"/a/x", "GET", "prefix", ""},
		}},
		// A route /b of the same length sorts between them unless /a and
		// /a/ are one pattern.
		{"prefixes /a and /a/ split by method", []config.Route{
			{Path: "/", Service: "root"},
			{Path: "/a", Methods: []string{"GET"}, Service: "a-get"},
			{Path: "/b", Service: "b"},
			{Path: "/a/", Methods: []string{"POST"}, Service: "a-post"},
		}, []request{
			{"/a", "GET", "a-get", ""},
			{"/a", "POST", "a-post", ""},
			{"/a/x", "GET", "a-get", ""},
			{"/a/x", "POST", "a-post", ""},
			{"/a", "HEAD", "a-get", ""},
			{"/a", "PUT", "", "GET, HEAD, POST"},
			{"/a/", "PUT", "", "GET, HEAD, POST"},
			{"/ab", "PUT", "root", ""},
			{"/b", "PUT", "b", ""},
		}},
		{"prefix /a does not match /ab", []config.Route{
			{Path: "/", Service: "root"},
			{Path: "/a", Service: "a"},
		}, []request{
			{"/a", "GET", "a", ""},
			{"/a/b", "GET", "a", ""},
			{"/ab", "GET", "root", ""},
			{"/ab/", "GET", "root", ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := mustTable(t, tc.routes...)
			for _, rq := range tc.requests {
				r, _, allow := tb.match("localhost", rq.path, rq.method)
				got := ""
				if r != nil {
					got = r.cfg.Service
				}
				if got != rq.want || strings.Join(allow, ", ") != rq.allow {
					t.Errorf("%s %s: match = %q allow %q, want %q allow %q (order %v)", rq.method, rq.path, got, allow, rq.want, rq.allow, services(tb))
				}
			}
		})
	}
}

func TestRouteOrderIsDeterministic(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
	tests := []struct {
		name   string
		routes []config.Route
		want   string
	}{
		{"duplicate", []config.Route{{Path: "/a/", Service: "x"}, {Path: "/a/", Service: "y"}}, "duplicate route: route A and route B"},
		{"duplicate methods overlap", []config.Route{{Path: "/a", Methods: []string{"GET", "PUT"}, Service: "x"}, {Path: "/a", Methods: []string{"put"}, Service: "y"}}, "with methods PUT"},
		{"duplicate all vs some", []config.Route{{Path: "/a", Service: "x"}, {Path: "/a", Methods: []string{"GET"}, Service: "y"}}, "duplicate route"},
		{"duplicate host case", []config.Route{{Host: "A.com", Path: "/", Service: "x"}, {Host: "a.com", Path: "/", Service: "y"}}, "duplicate route"},
		{"duplicate message", []config.Route{{Path: "/a/", Service: "x"}, {Path: "/a/", Service: "y"}}, "duplicate route: route A and route B both map any host /a/ (prefix) with methods (all)"},
		{"duplicate trailing slash", []config.Route{{Path: "/api/v1", Service: "x"}, {Path: "/api/v1/", Service: "y"}}, "duplicate route: route A and route B both map any host /api/v1 and /api/v1/ (prefix) with methods (all)"},
		{"duplicate trailing slash first", []config.Route{{Host: "A.com", Path: "/a/", Methods: []string{"GET"}, Service: "x"}, {Host: "a.com", Path: "/a", Service: "y"}}, "duplicate route: route A and route B both map a.com /a/ and /a (prefix) with methods GET"},
		{"duplicate trailing slash methods", []config.Route{{Path: "/a", Methods: []string{"GET", "PUT"}, Service: "x"}, {Path: "/a/", Methods: []string{"PUT"}, Service: "y"}}, "both map any host /a and /a/ (prefix) with methods PUT"},
		{"relative path", []config.Route{{Path: "a", Service: "x"}}, "must start with /"},
		{"bad match", []config.Route{{Path: "/", Match: "regex", Service: "x"}}, `match "regex"`},
		{"wildcard service", []config.Route{{Path: "/", Service: "x.*"}}, "literal NATS subject"},
		// A route of the file without service: no subject is wrong,
		// none is set.
		{"empty service", []config.Route{{Path: "/"}}, `route A: no service: set service to the subject of the NATS Micro service that answers the route`},
		{"empty token in service", []config.Route{{Path: "/", Service: "a..b"}}, `service "a..b": want a literal NATS subject (no spaces, NUL, '*', '>' or empty token)`},
		{"host with port", []config.Route{{Host: "a.com:80", Path: "/", Service: "x"}}, "without port"},
		// An app spec refuses the NUL only; net/http any of them.
		{"host with a tab", []config.Route{{Host: "a\tb.example", Path: "/", Service: "x"}}, `host "a\tb.example": a control character is in no request's host`},
		{"inner wildcard", []config.Route{{Host: "a.*.com", Path: "/", Service: "x"}}, "leading"},
		// Two methods in one string (a comma list) name no method a
		// request could have: every request would get 405.
		{"methods in one string", []config.Route{{Path: "/", Methods: []string{"GET,POST"}, Service: "x"}}, `method "GET,POST" is not an HTTP method: list each method as a string of its own`},
		{"method with a quote", []config.Route{{Path: "/", Methods: []string{`"GET"`}, Service: "x"}}, `method "\"GET\"" is not an HTTP method`},
		// The first route defined that shares a method is named, not
		// the one of the first method shared.
		{"duplicate names the first", []config.Route{
			{Path: "/a", Methods: []string{"PUT"}, Service: "x"}, {Path: "/a", Methods: []string{"GET"}, Service: "y"},
			{Path: "/a", Methods: []string{"GET", "PUT"}, Service: "z"},
		}, "route A and route C both map any host /a (prefix) with methods PUT"},
		// A route of all methods shares with one that lists some exactly
		// those: "(all)" would send the reader to look for a second route
		// of all methods.
		{"duplicate of all methods", []config.Route{{Path: "/a", Methods: []string{"PUT"}, Service: "x"}, {Path: "/a", Service: "y"}}, "route A and route B both map any host /a (prefix) with methods PUT"},
		{"duplicate of all methods first", []config.Route{{Path: "/hello/", Service: "x"}, {Path: "/hello/", Methods: []string{"GET"}, Service: "y"}}, "route A and route B both map any host /hello/ (prefix) with methods GET"},
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
	// Exact routes with and without the slash name different paths; other
	// hosts.
	mustTable(t, config.Route{Path: "/a", Match: "exact", Service: "x"}, config.Route{Path: "/a/", Match: "exact", Service: "y"},
		config.Route{Path: "/a/", Service: "z"}, config.Route{Path: "/", Service: "v"},
		config.Route{Host: "a.com", Path: "/a", Service: "t"})
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/a/b": "/a/b", "/a/../b": "/b", "/a/./b/": "/a/b/", "//a": "/a", "/..": "/", "": "/", "/hello/../admin": "/admin",
		"/a/.": "/a/", "/a/b/..": "/a/", "/a/..": "/", "/a/.b": "/a/.b", "/a/..b": "/a/..b",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckAppRoutes(t *testing.T) {
	t.Parallel()
	x := []config.Route{{Path: "/x/"}}
	for _, tc := range []struct {
		name   string
		routes []config.Route
		others map[string][]config.Route
		want   string // "" for no error
	}{
		{"free path", x, map[string][]config.Route{"b": {{Path: "/y/"}}}, ""},
		{"taken path", x, map[string][]config.Route{"b": {{Path: "/x/"}}}, `app "b" route #1 (path "/x/") and app "a" route #1 (path "/x/")`},
		{"taken path with a trailing slash", []config.Route{{Path: "/x"}}, map[string][]config.Route{"b": {{Path: "/x/"}}}, `app "b" route #1 (path "/x/") and app "a" route #1 (path "/x") both map any host /x/ and /x (prefix)`},
		{"redeploy of the same app", x, map[string][]config.Route{"a": {{Path: "/x/"}}}, ""},
		{"redeploy without the trailing slash", []config.Route{{Path: "/x"}}, map[string][]config.Route{"a": {{Path: "/x/"}}}, ""},
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

// TestAddAppRoutesTrailingSlash: an app whose route differs from one before
// it only by a trailing slash is left out, as for the same path.
func TestAddAppRoutesTrailingSlash(t *testing.T) {
	t.Parallel()
	base, err := compile(config.Route{Path: "/x", Service: "cfg"}, "config route #1", time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]string{}
	routes := addAppRoutes([]*route{base}, map[string][]config.Route{
		"b": {{Path: "/x/"}},
		"c": {{Path: "/y"}},
		"d": {{Path: "/y/"}},
	}, time.Second, 1, func(app string, err error) { skipped[app] = err.Error() })
	var kept []string
	for _, r := range routes {
		kept = append(kept, r.cfg.Service)
	}
	if got := strings.Join(kept, " "); got != "cfg c" {
		t.Errorf("kept %s, want cfg c", got)
	}
	if !strings.Contains(skipped["b"], `duplicate route: config route #1 and app "b" route #1 (path "/x/") both map any host /x and /x/ (prefix)`) ||
		!strings.Contains(skipped["d"], `app "c" route #1 (path "/y") and app "d" route #1 (path "/y/")`) || len(skipped) != 2 {
		t.Errorf("skipped %q", skipped)
	}
}

// A narun-routes entry may hold thousands of routes of one pattern, each
// with its own method: any client that can write the bucket may store
// one. Checking them pair by pair took seconds for 20000, at every update
// of the bucket; the check now costs each route's methods.
func BenchmarkNewTableOnePattern(b *testing.B) {
	var routes []*route
	for i := range 20000 {
		r, err := compile(config.Route{Path: "/", Methods: []string{fmt.Sprintf("M%d", i)}, Service: "s"}, "r", time.Second, 1)
		if err != nil {
			b.Fatal(err)
		}
		routes = append(routes, r)
	}
	for b.Loop() {
		if _, err := newTable(routes); err != nil {
			b.Fatal(err)
		}
	}
}

// A pattern of thousands of routes, each with a method of its own (one
// narun-routes entry may hold them), costs a request a lookup by method,
// not a scan of them all: the 405 of a method none lists allocates
// nothing, and each method still reaches its route.
func TestRouteMatchLargePattern(t *testing.T) {
	const n = 20000
	rcs := []config.Route{{Path: "/other/", Service: "other"}}
	for i := range n {
		rcs = append(rcs, config.Route{Path: "/big/", Methods: []string{fmt.Sprintf("M%d", i)}, Service: fmt.Sprintf("s%d", i)})
	}
	tb := mustTable(t, rcs...)
	for _, i := range []int{0, n / 2, n - 1} {
		if r, _, _ := tb.match("localhost", "/big/x", fmt.Sprintf("M%d", i)); r == nil || r.cfg.Service != fmt.Sprintf("s%d", i) {
			t.Errorf("M%d matched %v, want s%d", i, r, i)
		}
	}
	r, refused, allow := tb.match("localhost", "/big/x", "PUT")
	if r != nil || refused == nil || len(allow) != n {
		t.Fatalf("PUT: route %v, refused %v, %d methods allowed; want a 405 allowing %d", r, refused, len(allow), n)
	}
	if allocs := testing.AllocsPerRun(20, func() { tb.match("localhost", "/big/x", "PUT") }); allocs != 0 {
		t.Errorf("a 405 of a pattern of %d routes: %v allocations, want 0", n, allocs)
	}
}

// A rebuild of the routes of many apps, as every change of narun-routes
// asks for: each app was checked by building a table of all the routes
// before it, 0.86 s for 2000 apps of one route each (docs/PERFORMANCE.md,
// "Many routes"); checked against an index, a few ms.
func BenchmarkAddAppRoutes2000(b *testing.B) {
	kv := map[string][]config.Route{}
	for i := range 2000 {
		kv[fmt.Sprintf("app%04d", i)] = []config.Route{{Path: fmt.Sprintf("/app%04d/", i)}}
	}
	for b.Loop() {
		routes := addAppRoutes(nil, kv, time.Second, 1, func(app string, err error) { b.Fatalf("app %s left out: %v", app, err) })
		if len(routes) != len(kv) {
			b.Fatalf("%d routes, want %d", len(routes), len(kv))
		}
	}
}

// A gateway that starts with many entries in narun-routes applies them
// with one rebuild of its table, not one per entry: a rebuild compiles
// every route of every app, so a start cost O(apps²) (1.0 s for 1000
// apps, 0.1 s now). Each rebuild logs the app it leaves out, which
// counts them.
func TestStartAppliesBucketInOneRebuild(t *testing.T) {
	t.Parallel()
	var logs testutil.LogBuffer
	e := newEnvLogged(t, gwConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	kv := routesKV(t, e.nc)
	ctx := context.Background()
	// "clash" sorts after "aclash" and maps its path too: left out at
	// every rebuild.
	for _, app := range []string{"aclash", "clash"} {
		if _, err := kv.PutString(ctx, app, `[{"path":"/same/"}]`); err != nil {
			t.Fatal(err)
		}
	}
	const others = 30
	for i := range others {
		if _, err := kv.PutString(ctx, fmt.Sprintf("app%02d", i), fmt.Sprintf(`[{"path":"/app%02d/"}]`, i)); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.gw.watchRoutes(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 20*time.Second, "narun-routes read", e.gw.routesCurrent)
	if r, _, _ := e.gw.table.Load().match("x", fmt.Sprintf("/app%02d/", others-1), "GET"); r == nil {
		t.Fatal("the last app's route is not served once the bucket was read")
	}
	if n := strings.Count(logs.String(), `msg="ignoring routes of app" app=clash`); n != 1 {
		t.Errorf("the clashing app was left out by %d rebuilds, want 1:\n%s", n, logs.String())
	}
}

// The cost of routing a request among many routes, to one of them and to
// none (a 404): match scanned the patterns in order, 24 µs for a 404 among
// 5000 routes, and now looks only at those of the path's first segment
// (docs/PERFORMANCE.md, "Many routes").
func BenchmarkMatchManyRoutes(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		var rs []*route
		for i := range n {
			r, err := compile(config.Route{Path: fmt.Sprintf("/app%04d/", i), Service: "s"}, "r", time.Second, 1)
			if err != nil {
				b.Fatal(err)
			}
			rs = append(rs, r)
		}
		tb, err := newTable(rs)
		if err != nil {
			b.Fatal(err)
		}
		for _, tc := range []struct{ name, path, want string }{
			{"404", "/nothing/here", ""},
			{"match", fmt.Sprintf("/app%04d/x", n-1), fmt.Sprintf("/app%04d/", n-1)},
		} {
			b.Run(fmt.Sprintf("%d/%s", n, tc.name), func(b *testing.B) {
				for b.Loop() {
					r, _, _ := tb.match("localhost", tc.path, "GET")
					if got := ""; r != nil && r.cfg.Path != tc.want || r == nil && tc.want != "" {
						if r != nil {
							got = r.cfg.Path
						}
						b.Fatalf("%s matched %q, want %q", tc.path, got, tc.want)
					}
				}
			})
		}
	}
}

// A route path written as a client may send it, not as the gateway matches
// requests (decoded, "." and ".." resolved, "//" as "/"), matched no request
// at all, in silence: each place routes are read from refuses it, naming
// the path it would have to be.
func TestRoutePathAsMatched(t *testing.T) {
	t.Parallel()
	refused := map[string]string{
		"/a/../b": "/b", "/a/./b": "/a/b", "/a/.": "/a/", "/a/..": "/", "/..": "/",
		"/a//b": "/a/b", "//": "/", "//a/": "/a/", "/a//": "/a/",
		"/caf%C3%A9": "/café", "/caf%c3%a9/": "/café/", "/a%2Fb": "/a/b", "/a/%2E%2E/b": "/b", "/100%25": "/100%",
	}
	why := func(origin, path, want string) string {
		return fmt.Sprintf(`%s: path %q matches no request: the gateway matches a request by its path decoded, with "." and ".." segments resolved and "//" as "/"; want %q`, origin, path, want)
	}
	for path, want := range refused {
		_, err := compile(config.Route{Path: path, Service: "s"}, "r", time.Second, 1)
		if err == nil || err.Error() != why("r", path, want) {
			t.Errorf("compile %q: %v, want %s", path, err, why("r", path, want))
		}
		// A path that matches requests as written is accepted.
		if _, err := compile(config.Route{Path: want, Service: "s"}, "r", time.Second, 1); err != nil {
			t.Errorf("compile %q, the path %q was refused for: %v", want, path, err)
		}
	}
	for _, path := range []string{"/a/.b", "/a/..b", "/a.", "/café", "/sp ace/", "/100%", "/a%zz", "/a%4"} {
		if _, err := compile(config.Route{Path: path, Service: "s"}, "r", time.Second, 1); err != nil {
			t.Errorf("compile %q: %v", path, err)
		}
	}

	// The configuration file names the line of the route's path.
	nc := natstest.Connect(t, natstest.Start(t))
	file := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, file, "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n\n[[gateway.routes]]\npath = \"/a//b\"\nservice = \"b\"\n")
	f, _, err := readConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := why(file+`:6: route #2 (path "/a//b")`, "/a//b", "/a/b")
	if _, err := New(Options{Config: f.Gateway, Conn: nc, ConfigPath: file, ConfigContent: loaded(t, file)}); err == nil || err.Error() != want {
		t.Errorf("configuration file: %v, want %s", err, want)
	}

	// narun-routes: the app's routes are left out, and the log says why.
	var logs testutil.LogBuffer
	e := newEnvLogged(t, gwConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	e.gw.setAppEntry("dotted", []byte(`[{"path":"/x/../caf%C3%A9"}]`))
	if r, _, _ := e.gw.table.Load().match("x", "/café", "GET"); r != nil {
		t.Errorf("narun-routes entry: route %s served", r.pattern())
	}
	if !strings.Contains(logs.String(), `msg="ignoring routes of app" app=dotted`) || !strings.Contains(logs.String(), `want \"/café\"`) {
		t.Errorf("narun-routes entry: the log does not say what the path must be:\n%s", logs.String())
	}

	// ctl deploy refuses the spec.
	want = why(`app "app" route #1 (path "/./a")`, "/./a", "/a")
	if err := CheckAppRoutes("app", []config.Route{{Path: "/./a"}}, nil); err == nil || err.Error() != want {
		t.Errorf("deploy: %v, want %s", err, want)
	}
}

// stalledHistory is narun-routes whose History does not answer until
// release is closed, then says the key has a record: a store that cannot
// yet tell whether an app's routes were removed. asked receives the keys
// asked for.
type stalledHistory struct {
	jetstream.KeyValue
	asked   chan string
	release chan struct{}
}

func (s stalledHistory) History(ctx context.Context, key string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	select {
	case s.asked <- key:
	default:
	}
	<-s.release
	return nil, nil
}

// Whether the routes held from before the watch (the cache), which
// narun-routes no longer lists, were removed is asked of the store's
// history: a store that does not answer held up the watch, and every
// deploy behind it, for 10 s per app. Updates now go on meanwhile, an app
// stored again meanwhile keeps its routes when the answer comes, and
// /readyz waits for the answer.
func TestUnansweredHistoryHoldsUpNoUpdate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig())
	kv := routesKV(t, e.nc)
	ctx := context.Background()
	e.gw.setAppEntries([]appEntry{{"gone", []byte(`[{"path":"/gone/"}]`)}, {"back", []byte(`[{"path":"/back/"}]`)}})
	if _, err := kv.PutString(ctx, "first", `[{"path":"/first/"}]`); err != nil {
		t.Fatal(err)
	}
	stalled := stalledHistory{KeyValue: kv, asked: make(chan string, 1), release: make(chan struct{})}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := e.gw.followBucket(wctx, stalled, make(chan nats.Status), e.gw.reconnects()); err != nil {
			t.Errorf("follow narun-routes: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	var once sync.Once
	release := func() { once.Do(func() { close(stalled.release) }) }
	t.Cleanup(release) // before the watch is stopped
	select {
	case <-stalled.asked:
	case <-time.After(20 * time.Second):
		t.Fatal("the history of the apps narun-routes does not list is not asked for")
	}
	for _, app := range []string{"back", "later"} {
		if _, err := kv.PutString(ctx, app, `[{"path":"/`+app+`/"}]`); err != nil {
			t.Fatal(err)
		}
	}
	served := func(path string) bool {
		r, _, _ := e.gw.table.Load().match("x", path, "GET")
		return r != nil
	}
	testutil.Eventually(t, 20*time.Second, "an update served while the store does not answer", func() bool { return served("/later/") })
	if e.gw.routesCurrent() {
		t.Error("routes reported current before the store said which were removed")
	}
	release()
	testutil.Eventually(t, 20*time.Second, "the removed app's routes gone, and routes current", func() bool {
		return !served("/gone/") && e.gw.routesCurrent()
	})
	for _, path := range []string{"/first/", "/back/", "/later/"} {
		if !served(path) {
			t.Errorf("%s not served once the store answered", path)
		}
	}
}

// manyMethods is n distinct methods of four letters or fewer.
func manyMethods(n int) []string {
	ms := make([]string, n)
	for i := range ms {
		ms[i] = strings.ToUpper(strconv.FormatInt(int64(i), 36))
	}
	return ms
}

// A narun-routes entry as large as a message carries, of one route that
// lists some 130000 methods, as anyone who may write the bucket can store
// by hand, is applied at once, and so is an entry stored after it: each
// method was checked against those before it, some 20 s for 130000, at
// every rebuild of the table, so every change of the bucket waited as
// long.
func TestRouteOfManyMethodsAppliedAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig())
	kv := routesKV(t, e.nc)
	ctx := context.Background()
	methods := manyMethods(130000)
	big, err := json.Marshal([]config.Route{{Path: "/many/", Methods: methods}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "many", big); err != nil {
		t.Fatalf("put an entry of %d bytes: %v", len(big), err)
	}
	if _, err := kv.PutString(ctx, "other", `[{"path":"/other/"}]`); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.gw.watchRoutes(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 10*time.Second, "both entries served", func() bool {
		tb := e.gw.table.Load()
		r1, _, _ := tb.match("x", "/other/", "GET")
		r2, _, _ := tb.match("x", "/many/", methods[len(methods)-1])
		return r1 != nil && r2 != nil
	})
}
