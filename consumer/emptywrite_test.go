package consumer_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestEmptyWriteSucceedsAsNetHTTP writes no bytes where a body is refused
// (a 204 or 304, past the Content-Length): net/http's server takes such a
// write, whose bytes break no rule, and refuses only one with bytes, so
// fmt.Fprint(w, "") succeeds behind narun as behind net/http.
func TestEmptyWriteSucceedsAsNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    func(w http.ResponseWriter) error
	}{
		{name: "204", h: func(w http.ResponseWriter) error {
			w.WriteHeader(http.StatusNoContent)
			_, err := w.Write(nil)
			return err
		}},
		{name: "304", h: func(w http.ResponseWriter) error {
			w.WriteHeader(http.StatusNotModified)
			_, err := fmt.Fprint(w, "")
			return err
		}},
		{name: "past the length", h: func(w http.ResponseWriter) error {
			w.Header().Set("Content-Length", "1")
			_, _ = io.WriteString(w, "ab")
			_, err := w.Write([]byte{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { errs <- tc.h(w) })
			results := map[string]error{}
			for name, get := range getsOfBoth(t, h) {
				resp, err := get()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results[name] = <-errs
			}
			if results["narun"] != results["net/http"] {
				t.Errorf("empty write: %v; net/http's server gives %v", results["narun"], results["net/http"])
			}
		})
	}
}
