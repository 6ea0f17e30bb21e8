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
// Sequence orders the entries signed for the key (signing.Order).
type entryRoute struct {
	config.Route
	App      string `json:"app,omitempty"`
	Sequence uint64 `json:"sequence,omitempty"`
}

// EncodeEntry is the narun-routes entry of app's routes, unsigned; seq 0
// leaves the sequence out, for an entry that is not signed.
func EncodeEntry(app string, routes []config.Route, seq uint64) ([]byte, error) {
	list := make([]entryRoute, len(routes))
	for i, r := range routes {
		list[i] = entryRoute{Route: r, App: app, Sequence: seq}
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
	// Sequence is 0 when the entry has none (an earlier release's, or
	// unsigned).
	Sequence uint64
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
		case i > 0 && r.Sequence != e.Sequence:
			return Entry{}, fmt.Errorf("route %d has sequence %d and route 0 %d: an entry ctl did not make", i, r.Sequence, e.Sequence)
		}
		e.Named, e.Sequence = r.App != "", r.Sequence
		e.Routes[i] = r.Route
	}
	return e, nil
}
