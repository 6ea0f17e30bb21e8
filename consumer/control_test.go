package consumer_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// A header value with a control character (a NUL from a file name, say)
// fails the gateway's whole reply with a 502 (PROTOCOL.md §1), where
// net/http's server would send the response: the value is dropped, as
// net/http's HTTP/2 server drops it, and the rest goes out.
func TestControlCharacterInAHeaderValueIsDropped(t *testing.T) {
	const bad = "a\x00b"
	_, nc, _ := start(t, consumer.Config{Name: "ctl"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("X-Name", bad)
		w.Header().Add("X-Name", "good")
		w.Header().Set("X-Only", bad)
		if r.URL.Path == "/stream" {
			w.Header().Set("Trailer", "X-Sum, X-Bad")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "ok")
			w.Header().Set("X-Sum", "1")
			w.Header().Set("X-Bad", "\x7f")
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	for _, path := range []string{"/whole", "/stream"} {
		var body strings.Builder
		var names []string
		for _, m := range responseMsgs(t, nc, "ctl", nats.Header{consumer.HeaderPath: {path}}) {
			for k, vs := range m.Header {
				for _, v := range vs {
					if strings.ContainsFunc(v, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) {
						t.Errorf("%s: %s: %q went out", path, k, v)
					}
				}
			}
			names = append(names, m.Header.Values("X-Name")...)
			body.Write(m.Data)
			if m.Header.Get(consumer.HeaderFrame) == consumer.FrameEnd {
				if got := m.Header.Get("X-Sum"); got != "1" {
					t.Errorf("%s: trailer X-Sum %q, want 1", path, got)
				}
			}
		}
		if body.String() != "ok" || strings.Join(names, ",") != "good" {
			t.Errorf("%s: body %q, X-Name %q; want \"ok\" and the good value alone", path, body.String(), names)
		}
	}
}
