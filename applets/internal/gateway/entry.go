package gateway

import (
	"encoding/json"
	"fmt"

	"github.com/narun/narun/applets/internal/config"
)

// entryRoute is a route as a narun-routes entry stores it. App names the
// key the entry belongs under: a signature covers the entry's bytes, not
// the key it is stored under, and without the name an entry signed for one
// app could be planted under another's key. It is on every route rather
// than around the list so that gateways of earlier releases, which read a
// list of routes and ignore fields they do not know, still read the entry.
type entryRoute struct {
	config.Route
	App string `json:"app,omitempty"`
}

// EncodeEntry is the narun-routes entry of app's routes, unsigned.
func EncodeEntry(app string, routes []config.Route) ([]byte, error) {
	list := make([]entryRoute, len(routes))
	for i, r := range routes {
		list[i] = entryRoute{Route: r, App: app}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode routes of %s: %w", app, err)
	}
	return b, nil
}

// Entry is a narun-routes entry as DecodeEntry read it.
type Entry struct {
	Routes []config.Route
	// Named says whether the entry names its app; one stored by a ctl of
	// an earlier release does not.
	Named bool
}

// DecodeEntry reads the body (signature trailer removed) of the entry
// stored under key, refusing one that names another app.
func DecodeEntry(key string, body []byte) (Entry, error) {
	var list []entryRoute
	if err := json.Unmarshal(body, &list); err != nil {
		return Entry{}, fmt.Errorf("bad JSON: %w", err)
	}
	e := Entry{Routes: make([]config.Route, len(list))}
	for i, r := range list {
		switch {
		case r.App != "" && r.App != key:
			return Entry{}, fmt.Errorf("route %d names app %q, and the entry is stored under %q: an entry made for another app", i, r.App, key)
		case i > 0 && (r.App != "") != e.Named:
			return Entry{}, fmt.Errorf("route %d names its app and route 0 does not, or the other way round: an entry ctl did not make", i)
		}
		e.Named = r.App != ""
		e.Routes[i] = r.Route
	}
	return e, nil
}
