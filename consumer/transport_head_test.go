package consumer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
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

// Transport reads a reply's length as the gateway does: the answer to
// HEAD that carries a payload has that payload's length, and a
// Content-Length that is not one unsigned number says no length at all.
func TestTransportReadsTheLengthAsTheGatewayDoes(t *testing.T) {
	svc, client := handWritten(t)
	for _, tc := range []struct {
		subject, method string
		reply           *nats.Msg
		length          int64
		body            string
	}{
		{subject: "payload", method: http.MethodHead, reply: &nats.Msg{Data: []byte("Hi")}, length: 2},
		{subject: "payloadandlength", method: http.MethodHead, reply: &nats.Msg{Header: nats.Header{"Content-Length": {"7"}}, Data: []byte("Hi")}, length: 2},
		{subject: "twolengths", method: http.MethodHead, reply: &nats.Msg{Header: nats.Header{"Content-Length": {"7", "8"}}}, length: -1},
		{subject: "signed", method: http.MethodHead, reply: &nats.Msg{Header: nats.Header{"Content-Length": {"+7"}}}, length: -1},
		{subject: "streamedtwolengths", method: http.MethodGet, reply: &nats.Msg{Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}, "Content-Length": {"5", "6"}}, Data: []byte("123456")}, length: -1, body: "123456"},
	} {
		t.Run(tc.subject, func(t *testing.T) {
			responder(t, svc, tc.subject, func(m *nats.Msg) {
				_ = svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: tc.reply.Header, Data: tc.reply.Data})
				if tc.reply.Header.Get(consumer.HeaderBody) == consumer.BodyStream {
					_ = svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameEnd}}})
				}
			})
			req, _ := http.NewRequest(tc.method, "http://"+tc.subject+"/", nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ContentLength != tc.length || string(body) != tc.body || err != nil {
				t.Errorf("ContentLength %d, body %q, %v; want %d, %q", resp.ContentLength, body, err, tc.length, tc.body)
			}
		})
	}
}
