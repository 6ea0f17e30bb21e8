package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecodeReply feeds arbitrary reply heads, as a responder in any
// language could send them, to the gateway's decoding: a reply is either
// rejected as malformed or yields a valid HTTP status and headers that
// net/http accepts.
func FuzzDecodeReply(f *testing.F) {
	f.Add("NATS/1.0\r\nNarun-Status: 201\r\nContent-Type: text/plain\r\n\r\n", []byte("hi"))
	f.Add("NATS/1.0 503\r\n\r\n", []byte(""))
	f.Add("NATS/1.0\r\nnats-service-error-code: 7\r\nNats-Service-Error: bad\r\n\r\n", []byte(""))
	f.Add("NATS/1.0\r\nNarun-Body: stream\r\nNarun-Frame: data\r\nConnection: close\r\n\r\n", []byte("x"))
	f.Fuzz(func(t *testing.T, block string, data []byte) {
		h, err := nats.DecodeHeadersMsg([]byte(block))
		if err != nil {
			return
		}
		m := &nats.Msg{Header: h, Data: data}
		meta := scanMeta(h)
		hd, err := decodeHead(m, meta)
		if err != nil {
			return
		}
		if hd.status < 200 || hd.status > 599 {
			t.Fatalf("status %d out of range", hd.status)
		}
		if hd.errMsg != "" && hd.status < 400 {
			t.Fatalf("service error mapped to %d", hd.status)
		}
		w := httptest.NewRecorder()
		copyReplyHeaders(w.Header(), h)
		for k := range w.Header() {
			if skipReplyHeader(k) {
				t.Fatalf("header %q should have been dropped", k)
			}
		}
		setTrailers(http.Header{}, h, replyConnection(h))
	})
}
