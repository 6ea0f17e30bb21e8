package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/narun/narun/applets/internal/config"
)

// BenchmarkProxySmall measures the hot path: a 16-byte POST and a small
// reply, one message each way, gateway handler and consumer in-process.
func BenchmarkProxySmall(b *testing.B) {
	benchProxy(b, []byte(`{"name":"bench"}`))
}

// BenchmarkProxy64KiB is the same with a 64 KiB body: still one message
// each way, but the payload copies dominate.
func BenchmarkProxy64KiB(b *testing.B) {
	benchProxy(b, bytes.Repeat([]byte("x"), 64<<10))
}

func benchProxy(b *testing.B, body []byte) {
	e := newEnv(b, gwConfig(config.Route{Path: "/hello/", Service: "hello"}))
	e.serve(b, "hello", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"message":"Hello, bench!"}`)
	}))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/hello/", bytes.NewReader(body))
			w := httptest.NewRecorder()
			e.gw.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
}
