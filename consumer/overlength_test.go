package consumer_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWritePastContentLengthBreaksTheResponse writes more than the
// Content-Length the handler declared, then what would fit: net/http's
// server refuses every write from the first one past the length, so the
// response is short and its client fails to read it, rather than get
// the later bytes as a whole body.
func TestWritePastContentLengthBreaksTheResponse(t *testing.T) {
	writeErrs := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		_, _ = io.WriteString(w, "hello")
		_, err := io.WriteString(w, "abc")
		writeErrs <- err
	})
	for name, get := range getsOfBoth(t, h) {
		resp, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := <-writeErrs; !errors.Is(err, http.ErrContentLength) {
			t.Errorf("%s: the write that fits after one past the length: %v, want %v", name, err, http.ErrContentLength)
		}
		if readErr == nil {
			t.Errorf("%s: the client read the body %q whole", name, body)
		}
	}
}

// getsOfBoth serves h on net/http's server and behind narun until the
// test ends, and gives a GET of each by the server's name, for a test
// that wants narun to answer as net/http does.
func getsOfBoth(t *testing.T, h http.Handler) map[string]func() (*http.Response, error) {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	client, _ := caller(t, h)
	return map[string]func() (*http.Response, error){
		"net/http": func() (*http.Response, error) { return hs.Client().Get(hs.URL) },
		"narun":    func() (*http.Response, error) { return client.Get("http://svc/") },
	}
}
