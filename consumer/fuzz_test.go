package consumer

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// FuzzDecodeRequest feeds request heads in the gateway's format, with any
// values, to the decoder: it must reject or accept them without panicking,
// and what it accepts must be a usable *http.Request.
func FuzzDecodeRequest(f *testing.F) {
	f.Add("GET", "/hello/", "a=1", "example.com", "30000", "HTTP/1.1", "X-A", "v", false, []byte("body"))
	f.Add("POST", "/a%2Fb", "", "", "", "", "content-length", "3", true, []byte("abc"))
	f.Add("", "*", "%zz", "h:1", "x", "HTTP/2.0", "Narun-Path", "/x", false, []byte{})
	f.Fuzz(func(t *testing.T, method, path, query, host, timeout, proto, hk, hv string, stream bool, data []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{HeaderMethod: method, HeaderPath: path, HeaderQuery: query, HeaderHost: host, HeaderTimeout: timeout, HeaderProto: proto} {
			if v != "" {
				h.Set(k, v)
			}
		}
		if hk != "" {
			h.Add(hk, hv)
		}
		if stream {
			h.Set(HeaderBody, BodyStream)
		}
		pulls := 0
		pull := func(context.Context) (*nats.Msg, error) {
			pulls++
			if pulls > 3 {
				return nil, errors.New("too many pulls")
			}
			return &nats.Msg{Header: nats.Header{HeaderFrame: {FrameEnd}}, Data: []byte("tail")}, nil
		}
		r, cancel, err := decodeRequest(context.Background(), &nats.Msg{Header: h, Data: data}, time.Now(), pull, nil)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error %v does not wrap errBadRequest", err)
			}
			return
		}
		defer cancel()
		if r.URL == nil || r.Method == "" || r.Header == nil || r.Body == nil {
			t.Fatalf("incomplete request %+v", r)
		}
		if !strings.HasPrefix(r.URL.Path, "/") && r.URL.Path != "*" && r.URL.Opaque == "" {
			t.Fatalf("path %q", r.URL.Path)
		}
		for k := range r.Header {
			if IsReserved(k) {
				t.Fatalf("protocol header %q leaked into the request", k)
			}
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		want := string(data)
		if stream {
			want += "tail"
		}
		if string(b) != want {
			t.Fatalf("body %q, want %q", b, want)
		}
	})
}
