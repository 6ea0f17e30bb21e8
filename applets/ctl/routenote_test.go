package ctl

import (
	"encoding/json"
	"strings"
	"testing"
)

// route list shows narun-routes only: a gateway's own [[gateway.routes]]
// are in its narun.toml, which ctl cannot see. The table says so under it,
// on stderr, whether the list is empty or not (ctl cannot tell whether a
// gateway has routes of its own, and a partial list misleads as an empty
// one does); --json keeps its shape, a list of routes, and says nothing.
func TestRouteListSaysGatewayFileRoutesAreNotListed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const note = "only routes of deployed apps (narun-routes) are listed, not those in a gateway's own narun.toml ([[gateway.routes]])\n"
	check := func(when string, wantApp bool) {
		t.Helper()
		r := h.ok("", "route", "list")
		if r.err != note || strings.Contains(r.out, "narun.toml") || strings.Contains(r.out, "hello") != wantApp {
			t.Errorf("route list %s: stdout %q, stderr %q; want the note on stderr only", when, r.out, r.err)
		}
		r = h.ok("", "route", "list", "--json")
		var routes []map[string]any
		if err := json.Unmarshal([]byte(r.out), &routes); err != nil || r.err != "" || (len(routes) > 0) != wantApp {
			t.Errorf("route list --json %s: stdout %q (%v), stderr %q; want a list of routes and no note", when, r.out, err, r.err)
		}
	}
	check("with no route", false)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	check("with an app's routes", true)
}
