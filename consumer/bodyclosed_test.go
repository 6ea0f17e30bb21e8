package consumer_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// TestBodyClosedOnceTheHandlerReturned reads the request body in a
// goroutine the handler left behind: net/http's server closes the body
// when the handler returns, and such a read then fails with
// http.ErrBodyReadAfterClose, whether the body was small, streamed, or
// sent without a length, rather than take the bytes or a context error.
func TestBodyClosedOnceTheHandlerReturned(t *testing.T) {
	bodies := make(chan *http.Request, 1)
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bodies <- r
	}))
	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{name: "small", body: bytes.NewReader([]byte("hello"))},
		{name: "streamed", body: bytes.NewReader(make([]byte, 3<<20))},
		{name: "without a length", body: io.MultiReader(bytes.NewReader([]byte("hello")))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Post("http://svc/", "text/plain", tc.body)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			r := <-bodies
			// The body is closed before the context ends.
			<-r.Context().Done()
			n, err := r.Body.Read(make([]byte, 8))
			if n != 0 || !errors.Is(err, http.ErrBodyReadAfterClose) {
				t.Errorf("read after the handler returned: %d bytes, %v; want 0, %v", n, err, http.ErrBodyReadAfterClose)
			}
		})
	}
}
