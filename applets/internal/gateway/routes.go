package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/consumer"
)

// Match kinds of a route's path.
const (
	MatchPrefix = "prefix"
	MatchExact  = "exact"
)

// Limits of a route that an app spec's route has too.
const (
	maxRouteBody = 1 << 40
	maxService   = 255
)

// route is a validated config.Route ready for matching.
type route struct {
	cfg      config.Route
	origin   string // where it was defined, for error messages and logs
	host     string // lower case; "" matches any host
	wildcard bool   // host is "*.suffix": host holds ".suffix"
	exact    bool
	methods  []string // upper case; empty allows all
	timeout  time.Duration
	// timeoutMS is the Narun-Timeout of a head published within the first
	// millisecond (see timeLeft), formatted once.
	timeoutMS string
	maxBody   int64
	label     string // metrics label: bounded by configuration, never the raw path
	pat       string
	// patPath is the path part of pat: the path, but for a prefix route
	// other than "/" that ends in a slash, without it, since "/a/" and
	// "/a" match the same paths. It is the shortest path the route
	// matches: a prefix route "/a/" covers "/a", like exact "/a".
	patPath string
	// escPrefix is the path without its trailing slash, escaped, for strip_prefix.
	escPrefix string
	metrics   *routeMetrics
}

// pattern is what two routes must share to compete for the same requests.
func (r *route) pattern() string { return r.pat }

func (r *route) lists(method string) bool {
	return len(r.methods) == 0 || slices.Contains(r.methods, method)
}

func (r *route) matchHost(host string) bool {
	switch {
	case r.host == "":
		return true
	case r.wildcard:
		return len(host) > len(r.host) && strings.HasSuffix(host, r.host) &&
			isSubdomain(host[:len(host)-len(r.host)])
	default:
		return host == r.host
	}
}

// isSubdomain says whether labels, what a Host has before a wildcard's
// name, is one or more DNS labels. net/http admits in a Host characters no
// name has (",;=!()"): without this "evil.com,x.example.com" matched
// "*.example.com", and a service that reads the first of X-Forwarded-Host's
// comma-separated values (Express does) took it for "evil.com".
// Underscores are let through, as names in use have them.
func isSubdomain(labels string) bool {
	prev := byte('.')
	for i := 0; i < len(labels); i++ {
		c := labels[i]
		switch {
		case c == '.':
			if prev == '.' {
				return false
			}
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		prev = c
	}
	return prev != '.'
}

func (r *route) matchPath(p string) bool {
	rp := r.cfg.Path
	if r.exact {
		return p == rp
	}
	if strings.HasSuffix(rp, "/") {
		return strings.HasPrefix(p, rp) || p == rp[:len(rp)-1]
	}
	return p == rp || (strings.HasPrefix(p, rp) && p[len(rp)] == '/')
}

// stripped removes the route's prefix from a matched path.
func (r *route) stripped(p string) string {
	rest := strings.TrimPrefix(p, strings.TrimSuffix(r.cfg.Path, "/"))
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return rest
}

// table is an immutable, ordered set of routes: most specific first.
type table struct {
	routes []*route
	// patterns holds the routes by pattern, in the same order: match
	// looks at one route of each, since a pattern's routes match the same
	// hosts and paths, then picks among them by method. A pattern of
	// thousands of routes, as one narun-routes entry may hold, would
	// otherwise cost every request matching it a scan of them all.
	patterns []patternMatch
	// bySegment holds, by the first segment of their path, the indexes
	// in patterns of the patterns whose path has one; anywhere, in order,
	// those of the others ("/"). A path matches only patterns of
	// its own first segment or of anywhere, since a prefix ends at a
	// segment boundary: a request looks at those, not at every pattern,
	// which cost it 24 µs among 5000 routes.
	bySegment map[string][]int
	anywhere  []int
}

// firstSegment is the first segment of path p ("a" of "/a/b"), "" when it
// has none (p is "/", starts with "//" or not with "/").
func firstSegment(p string) string {
	if len(p) < 2 || p[0] != '/' {
		return ""
	}
	if i := strings.IndexByte(p[1:], '/'); i >= 0 {
		return p[1 : 1+i]
	}
	return p[1:]
}

// patternMatch is what match needs of the routes of one pattern.
type patternMatch struct {
	// first stands for the pattern's routes in matching host and path.
	first *route
	// byMethod holds the routes by the methods they list; nil when the
	// pattern has one route, which first then is: lists costs less than
	// a map lookup for a handful of methods.
	byMethod map[string]*route
	// refused is the route whose metrics count a 405, and allow what the
	// pattern's routes accept, as match returns them; allow is shared.
	refused *route
	allow   []string
}

// newPatternMatch is what match needs of p, the routes of one pattern:
// their method index, built to check them for duplicates, serves to pick
// among them.
func newPatternMatch(p *patternRoutes) patternMatch {
	rs := p.routes
	m := patternMatch{first: rs[0], refused: rs[len(rs)-1]}
	if len(rs) > 1 {
		m.byMethod = p.byMethod
	}
	for _, r := range rs {
		m.allow = append(m.allow, r.methods...)
	}
	// Listing GET allows HEAD too, as RFC 9110 (9.3.2) has it and
	// net/http's ServeMux does.
	if slices.Contains(m.allow, http.MethodGet) {
		m.allow = append(m.allow, http.MethodHead)
	}
	slices.Sort(m.allow)
	m.allow = slices.Clip(slices.Compact(m.allow))
	return m
}

// pick is the route of the pattern for method, or the 405's refused route
// and Allow list when none allows it. A route that lists HEAD takes it
// before one that lists GET.
func (p *patternMatch) pick(method string) (r, refused *route, allow []string) {
	if p.byMethod == nil {
		if p.first.lists(method) || method == http.MethodHead && p.first.lists(http.MethodGet) {
			return p.first, nil, nil
		}
		return nil, p.refused, p.allow
	}
	if r := p.byMethod[method]; r != nil {
		return r, nil, nil
	}
	if method == http.MethodHead {
		if r := p.byMethod[http.MethodGet]; r != nil {
			return r, nil, nil
		}
	}
	return nil, p.refused, p.allow
}

// compile validates one route and fills in the gateway defaults.
func compile(rc config.Route, origin string, defTimeout time.Duration, defMaxBody int64) (*route, error) {
	return compileAt(rc, origin, func(string) string { return origin }, defTimeout, defMaxBody)
}

// compileAt is compile with each problem placed by at, given the key at
// fault ("timeout"), as a route of a file places it on that key's line.
func compileAt(rc config.Route, origin string, at func(key string) string, defTimeout time.Duration, defMaxBody int64) (*route, error) {
	r := &route{cfg: rc, origin: origin, timeout: rc.Timeout.D(), maxBody: int64(rc.MaxBody)}
	if r.timeout == 0 {
		r.timeout = defTimeout
	}
	if r.maxBody == 0 {
		r.maxBody = defMaxBody
	}
	r.timeoutMS = strconv.FormatInt(r.timeout.Milliseconds(), 10)
	// Every problem of the route is named, not only its first, so that one
	// --check or reload finds them all.
	var problems []error
	bad := func(key, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: "+format, append([]any{at(key)}, args...)...))
	}
	if !strings.HasPrefix(rc.Path, "/") {
		bad("path", "path %q must start with /", rc.Path)
	} else if want := matchedPath(rc.Path); want != rc.Path {
		bad("path", "path %q matches no request: the gateway matches a request by its path decoded, with \".\" and \"..\" segments resolved and \"//\" as \"/\"; want %q", rc.Path, want)
	}
	switch rc.Match {
	case "", MatchPrefix:
		r.cfg.Match = MatchPrefix
	case MatchExact:
		r.exact = true
	default:
		bad("match", "match %q: want %q or %q", rc.Match, MatchPrefix, MatchExact)
	}
	switch {
	// A route of the file has no default service, as an app's has its
	// name: one left out is no subject to correct.
	case rc.Service == "":
		bad("service", "no service: set service to the subject of the NATS Micro service that answers the route")
	case !validSubject(rc.Service):
		bad("service", "service %q: want a literal NATS subject (no spaces, NUL, '*', '>' or empty token)", rc.Service)
	// A request to one is sent with the gateway's own login: a route to
	// "$JS.API.>" would give any HTTP client the JetStream API.
	case consumer.IsReservedSubject(rc.Service):
		bad("service", "service %q: the $, _NARUN. and _INBOX. subjects are NATS's and narun's own, not a service's", rc.Service)
	// An app spec's limit. A request's subject past the server's control
	// line (4 KiB) made it close the gateway's connection, and end every
	// request in flight on it.
	case len(rc.Service) > maxService:
		bad("service", "service of %d characters: more than the maximum %d", len(rc.Service), maxService)
	}
	host, wildcard, err := routeHost(rc.Host)
	if err != nil {
		bad("host", "host %q: %v", rc.Host, err)
	}
	r.cfg.Host, r.host, r.wildcard = host, strings.TrimPrefix(host, "*"), wildcard
	for _, m := range rc.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		// A method is a token (RFC 9110): "GET,POST" in one string, or a
		// quoted one, names none a request could have, and every
		// request would get 405.
		if !isToken(m) {
			bad("methods", "method %q is not an HTTP method: list each method as a string of its own (methods = [\"GET\", \"POST\"])", m)
			continue
		}
		r.methods = append(r.methods, m)
	}
	// Sorted, then compacted: a check of each method against those before
	// it cost a route of 130000 methods, which a narun-routes entry can
	// list, 20 s at every rebuild of the table.
	slices.Sort(r.methods)
	r.methods = slices.Compact(r.methods)
	// An app spec's limits, for the file's routes and for the entries of
	// narun-routes, which anyone who may write the bucket can put there
	// by hand: a typo (an extra zero) holds a request, its body and the
	// service that answers it for hours.
	if rc.Timeout.D() > spec.MaxTimeout {
		bad("timeout", "timeout %s: more than the maximum %s", rc.Timeout.D(), spec.MaxTimeout)
	}
	if rc.MaxBody > maxRouteBody {
		bad("max_body", "max_body %d: more than the maximum %d (1TiB)", rc.MaxBody, maxRouteBody)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	r.escPrefix = (&url.URL{Path: strings.TrimSuffix(rc.Path, "/")}).EscapedPath()
	r.patPath = rc.Path
	if !r.exact && rc.Path != "/" {
		r.patPath = strings.TrimSuffix(rc.Path, "/")
	}
	r.pat = r.cfg.Host + " " + r.patPath + " " + r.cfg.Match
	r.label = r.cfg.Host + r.cfg.Path
	if r.exact {
		r.label += " (exact)"
	}
	return r, nil
}

// routeHost is a route's host as requests are matched against it: lower
// case, without a trailing dot, "*.example.com" for a wildcard, "" for
// none.
func routeHost(host string) (h string, wildcard bool, err error) {
	h = strings.ToLower(host)
	// A name written absolute, as DNS has it ("example.com."), is the
	// host requestHost makes of a request for it, with or without the
	// dot: kept, the route matched no request at all.
	if trimmed, ok := strings.CutSuffix(h, "."); ok {
		if trimmed == "" {
			return "", false, errors.New("want a host name")
		}
		h = trimmed
	}
	// net/http answers 400 to a Host that holds one: the route would
	// match no request.
	if strings.IndexFunc(h, func(c rune) bool { return c < ' ' || c == 0x7f }) >= 0 {
		return "", false, errors.New("a control character is in no request's host")
	}
	// Clients send an international name as its A-label, and net/http
	// answers a Host that is not ASCII with 400: a route for the name as
	// people write it would match no request at all.
	if strings.IndexFunc(h, func(c rune) bool { return c >= utf8.RuneSelf }) >= 0 {
		return "", false, errors.New("want it in ASCII, as clients send it: an international name as its A-label (\"xn--...\", as `idn2 NAME` prints it)")
	}
	// Told apart from a host with a port, which the colons would make it
	// look like to whoever reads the error.
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil && a.Is6() {
		return "", false, errors.New("an IPv6 address is not a route host (a request sent to one matches the routes without a host)")
	}
	if strings.Contains(h, ":") || strings.ContainsAny(h, " /") {
		return "", false, errors.New("want a host name without port or scheme")
	}
	if suffix, ok := strings.CutPrefix(h, "*"); ok {
		if !strings.HasPrefix(suffix, ".") || len(suffix) < 2 || strings.Contains(suffix, "*") {
			return "", false, errors.New(`a wildcard must be a leading "*."`)
		}
		return h, true, nil
	}
	if strings.Contains(h, "*") {
		return "", false, errors.New(`a wildcard must be a leading "*."`)
	}
	return h, false, nil
}

// addAppRoutes compiles the routes of the apps in kv onto base, in app
// name order: an app whose routes do not compile, or clash with those before
// it, is left out whole and reported to skip, since one deploy must not
// break the others. Each app is checked against an index of the routes kept
// so far, not by building a table of them all: that cost every rebuild
// O(apps × routes), 0.86 s for 2000 apps of one route, at every change of
// narun-routes and once per app when a gateway starts. base must not clash
// within itself (rebuild checks it first).
func addAppRoutes(base []*route, kv map[string][]config.Route, timeout time.Duration, maxBody int64, skip func(app string, err error)) []*route {
	routes := slices.Clone(base)
	kept := patternIndex{}
	for _, r := range base {
		kept.add(r)
	}
	for _, app := range slices.Sorted(maps.Keys(kv)) {
		appRoutes, err := compileApp(app, kv[app], timeout, maxBody)
		if err == nil {
			err = kept.clash(appRoutes)
		}
		if err != nil {
			skip(app, err)
			continue
		}
		for _, r := range appRoutes {
			kept.add(r)
		}
		routes = append(routes, appRoutes...)
	}
	return routes
}

// matchedPath is p as ServeHTTP hands request paths to match: decoded,
// then cleaned (cleanPath). A route path that differs from it matched no
// request, since the client's "/caf%C3%A9" or "/a//b" reaches the matcher
// as "/café" or "/a/b". A '%' without two hex digits after it is kept, as
// a request's "%25" reaches the matcher.
func matchedPath(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if c, err := strconv.ParseUint(p[i+1:i+3], 16, 8); err == nil {
				if b == nil {
					b = append(make([]byte, 0, len(p)), p[:i]...)
				}
				b = append(b, byte(c))
				i += 2
				continue
			}
		}
		if b != nil {
			b = append(b, p[i])
		}
	}
	if b != nil {
		p = string(b)
	}
	return cleanPath(p)
}

func compileApp(app string, rcs []config.Route, timeout time.Duration, maxBody int64) ([]*route, error) {
	var out []*route
	for i, rc := range rcs {
		if rc.Service == "" {
			rc.Service = app
		}
		r, err := compile(rc, fmt.Sprintf("app %q route #%d (path %q)", app, i+1, rc.Path), timeout, maxBody)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// CheckAppRoutes reports whether app's routes can be served next to those
// that other apps have in narun-routes (others, by app name), as a gateway
// compiles them; the error names both routes of a clash. Gateways give a
// clashing route to the app whose name sorts first, so without this check
// a deploy could lose its route, or take another app's, in silence. Routes
// from a gateway's own configuration file are not known here.
func CheckAppRoutes(app string, routes []config.Route, others map[string][]config.Route) error {
	const timeout, maxBody = time.Second, 1
	mine, err := compileApp(app, routes, timeout, maxBody)
	if err != nil {
		return err
	}
	others = maps.Clone(others)
	delete(others, app) // a redeploy replaces the app's own routes
	theirs := addAppRoutes(nil, others, timeout, maxBody, func(string, error) {})
	_, err = newTable(append(theirs, mine...))
	return err
}

func validSubject(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	return !strings.ContainsAny(s, " \t\r\n\x00*>")
}

// hostRank orders exact hosts before wildcards before "any host".
func (r *route) hostRank() int {
	switch {
	case r.host == "":
		return 0
	case r.wildcard:
		return 1
	default:
		return 2
	}
}

// newTable orders routes so the first match is the most specific: longest
// host, then longest path (that of a prefix route without its trailing
// slash, so that an exact route wins the path it names), exact before
// prefix; definition order breaks the remaining ties among routes of one
// pattern, so the result never depends on map iteration. Prefix routes that
// differ only by a trailing slash are one pattern: with overlapping methods
// they are duplicates.
func newTable(routes []*route) (*table, error) {
	byPattern := patternIndex{}
	for _, r := range routes {
		if o := byPattern[r.pattern()].overlapping(r); o != nil {
			return nil, duplicate(o, r)
		}
		byPattern.add(r)
	}
	sorted := slices.Clone(routes)
	slices.SortStableFunc(sorted, func(a, b *route) int {
		return cmp.Or(
			cmp.Compare(b.hostRank(), a.hostRank()),
			cmp.Compare(len(b.host), len(a.host)),
			cmp.Compare(len(b.patPath), len(a.patPath)),
			cmp.Compare(btoi(b.exact), btoi(a.exact)),
			// Routes of one pattern must be adjacent for match.
			strings.Compare(a.pat, b.pat),
		)
	})
	// A pattern's routes are adjacent in sorted, in the order they were
	// added (a stable sort whose last key is the pattern).
	t := &table{routes: sorted, bySegment: map[string][]int{}}
	for i := 0; i < len(sorted); {
		p := byPattern[sorted[i].pattern()]
		if seg := firstSegment(p.routes[0].cfg.Path); seg != "" {
			t.bySegment[seg] = append(t.bySegment[seg], len(t.patterns))
		} else {
			t.anywhere = append(t.anywhere, len(t.patterns))
		}
		t.patterns = append(t.patterns, newPatternMatch(p))
		i += len(p.routes)
	}
	return t, nil
}

// duplicates names each of routes that overlaps one before it, with the
// first such one, as newTable refuses the first.
func duplicates(routes []*route) []error {
	byPattern := patternIndex{}
	var errs []error
	for _, r := range routes {
		if o := byPattern[r.pattern()].overlapping(r); o != nil {
			errs = append(errs, duplicate(o, r))
			continue
		}
		byPattern.add(r)
	}
	return errs
}

// patternIndex holds the routes added to a table so far by pattern.
type patternIndex map[string]*patternRoutes

func (x patternIndex) add(r *route) {
	p := x[r.pattern()]
	if p == nil {
		p = &patternRoutes{byMethod: map[string]*route{}}
		x[r.pattern()] = p
	}
	p.add(r)
}

// clash reports the first of rs that overlaps a route held, or one of rs
// before it; the routes held come first, as they would in a table.
func (x patternIndex) clash(rs []*route) error {
	var mine patternIndex
	if len(rs) > 1 {
		mine = patternIndex{}
	}
	for _, r := range rs {
		o := x[r.pattern()].overlapping(r)
		if o == nil && mine != nil {
			o = mine[r.pattern()].overlapping(r)
		}
		if o != nil {
			return duplicate(o, r)
		}
		if mine != nil {
			mine.add(r)
		}
	}
	return nil
}

// duplicate is the error of route r overlapping o, added before it.
func duplicate(o, r *route) error {
	paths := o.cfg.Path
	if r.cfg.Path != o.cfg.Path {
		paths += " and " + r.cfg.Path
	}
	return fmt.Errorf("duplicate route: %s and %s both map %s %s (%s) with methods %s", o.origin, r.origin, hostOrAny(r.cfg.Host), paths, r.cfg.Match, methodsText(o.methods, r.methods))
}

// patternRoutes are the routes of one pattern added to a table so far,
// indexed so that finding the one a new route overlaps costs the new
// route's methods, not the routes before it: a narun-routes entry of
// thousands of routes of one pattern, as any client that can write the
// bucket may store, took seconds to check pair by pair at every update.
// The routes held never overlap each other: a method names at most one,
// and a route that allows all methods is the only one.
type patternRoutes struct {
	routes   []*route
	byMethod map[string]*route
}

// overlapping returns the first route added whose methods overlap r's,
// nil for none.
func (p *patternRoutes) overlapping(r *route) *route {
	switch {
	case p == nil || len(p.routes) == 0:
		return nil
	case len(r.methods) == 0 || len(p.routes[0].methods) == 0:
		return p.routes[0]
	}
	var first *route
	for _, m := range r.methods {
		if o := p.byMethod[m]; o != nil && (first == nil || slices.Index(p.routes, o) < slices.Index(p.routes, first)) {
			first = o
		}
	}
	return first
}

func (p *patternRoutes) add(r *route) {
	p.routes = append(p.routes, r)
	for _, m := range r.methods {
		p.byMethod[m] = r
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func hostOrAny(h string) string {
	if h == "" {
		return "any host"
	}
	return h
}

// methodsText names the methods two routes share: a route of all methods
// (none listed) shares every method of the other.
func methodsText(a, b []string) string {
	switch {
	case len(a) == 0 && len(b) == 0:
		return "(all)"
	case len(a) == 0:
		return strings.Join(b, ",")
	case len(b) == 0:
		return strings.Join(a, ",")
	}
	var common []string
	for _, m := range a {
		if slices.Contains(b, m) {
			common = append(common, m)
		}
	}
	return strings.Join(common, ",")
}

// match finds the route for a request. The most specific pattern that
// matches host and path decides: if none of its routes allows the method,
// the answer is 405 with allow listing what they accept (not to be
// changed: the table's), and refused is the last of them, whose metrics
// count the 405. A route that lists HEAD takes it before one that lists
// GET.
func (t *table) match(host, path, method string) (r, refused *route, allow []string) {
	// The patterns of path's segment and those of anywhere, merged in
	// table order.
	var seg []int
	if s := firstSegment(path); s != "" {
		seg = t.bySegment[s]
	}
	rest := t.anywhere
	for len(seg) > 0 || len(rest) > 0 {
		var i int
		if len(rest) == 0 || len(seg) > 0 && seg[0] < rest[0] {
			i, seg = seg[0], seg[1:]
		} else {
			i, rest = rest[0], rest[1:]
		}
		p := &t.patterns[i]
		if p.first.matchHost(host) && p.first.matchPath(path) {
			return p.pick(method)
		}
	}
	return nil, nil, nil
}

// requestHost is the host a request was sent to, lower case, without port;
// not ok when the port is not a number, which net/http lets through.
func requestHost(hostport string) (host string, ok bool) {
	h := hostport
	if name, port, err := net.SplitHostPort(hostport); err == nil {
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return "", false
			}
		}
		h = name
	}
	return strings.ToLower(strings.TrimSuffix(h, ".")), true
}
