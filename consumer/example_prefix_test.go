package consumer_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
)

// prefixRedirects puts the prefix a strip_prefix route removed back in
// the Location of a response, where the handler made it from r.URL.Path,
// which lacks it: http.ServeMux's own redirects do.
type prefixRedirects struct {
	http.ResponseWriter
	prefix string
}

func (w prefixRedirects) WriteHeader(code int) {
	loc := w.Header().Get("Location")
	// "//host/..." names another host; a Location with the prefix comes
	// from a handler that put it back itself.
	if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") && loc != w.prefix && !strings.HasPrefix(loc, w.prefix+"/") {
		w.Header().Set("Location", w.prefix+loc)
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush keeps the wrapper an http.Flusher, as the consumer's writer is:
// handlers that stream assert it (w.(http.Flusher).Flush()) and would
// panic behind a wrapper without it.
func (w prefixRedirects) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the consumer's writer, for
// what the wrapper does not pass on itself.
func (w prefixRedirects) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withPrefix wraps h for a route with strip_prefix; pass its result to
// ListenAndServe.
func withPrefix(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.Header.Get("X-Forwarded-Prefix"); p != "" {
			w = prefixRedirects{w, p}
		}
		h.ServeHTTP(w, r)
	})
}

// On a route with strip_prefix the handler sees the path without the
// prefix, and a redirect it makes from that path, as http.ServeMux makes
// one from /docs to /docs/, would lead the client out of the route. The
// gateway tells the prefix in X-Forwarded-Prefix, for the handler to put
// it back.
func Example_stripPrefix() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /docs/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the docs")
	})
	h := withPrefix(mux)

	// What the handler gets for GET /api/docs on the route /api/ with
	// strip_prefix = true.
	r := httptest.NewRequest(http.MethodGet, "/docs", nil)
	r.Header.Set("X-Forwarded-Prefix", "/api")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("Location"))
	// Output: 307 /api/docs/
}
