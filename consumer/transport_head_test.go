package consumer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// A HEAD response served by Serve and read through Transport tells the
// length net/http's server and client tell: none for a handler that
// flushes without setting one (its body is streamed, of a length not
// known when the head goes), the handler's own when it set one.
func TestHeadLengthAsNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{name: "written", h: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello")
		}},
		{name: "flushed", h: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "more")
		}},
		{name: "flushed before writing", h: func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "hello")
		}},
		{name: "flushed with a length", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "9")
			_, _ = io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "more")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(tc.h)
			defer hs.Close()
			want, err := hs.Client().Head(hs.URL)
			if err != nil {
				t.Fatal(err)
			}
			want.Body.Close()
			client, _ := caller(t, tc.h)
			got, err := client.Head("http://svc/")
			if err != nil {
				t.Fatal(err)
			}
			got.Body.Close()
			if got.ContentLength != want.ContentLength || !slices.Equal(got.Header["Content-Length"], want.Header["Content-Length"]) {
				t.Errorf("ContentLength %d, header %q; net/http gives %d, %q", got.ContentLength, got.Header["Content-Length"], want.ContentLength, want.Header["Content-Length"])
			}
		})
	}
}
