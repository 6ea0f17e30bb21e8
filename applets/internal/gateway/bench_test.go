package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// BenchmarkProxy512KiB is a body that still travels with the request
// head, in one message, but is larger than the body memory a body takes
// before any of it arrived.
func BenchmarkProxy512KiB(b *testing.B) {
	benchProxy(b, bytes.Repeat([]byte("x"), 512<<10))
}

// BenchmarkProxy1MiB is a body larger than a chunk with the default
// max_payload: part in the head, the rest in one pull.
func BenchmarkProxy1MiB(b *testing.B) {
	benchProxy(b, bytes.Repeat([]byte("x"), 1<<20))
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
			// As net/http's server leaves it in the header: without it
			// the body would travel as one of unknown length.
			req.Header.Set("Content-Length", strconv.Itoa(len(body)))
			w := httptest.NewRecorder()
			e.gw.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Errorf("status %d: %s", w.Code, w.Body)
				return
			}
		}
	})
}

// BenchmarkGRPCUnary measures one unary gRPC call over h2c, end to end:
// a client that sends no Content-Length, as gRPC clients do, so the
// request takes the duplex path.
func BenchmarkGRPCUnary(b *testing.B) {
	e := newEnv(b, gwConfig(config.Route{Path: "/bench.Bench/", Service: "grpcbench"}))
	e.serve(b, "grpcbench", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(req)
		w.Header().Set("Grpc-Status", "0")
	}))
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	b.Cleanup(hs.Close)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	b.Cleanup(tr.CloseIdleConnections)
	msg := grpcMessage(`{"name":"bench"}`)
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest("POST", hs.URL+"/bench.Bench/Echo", io.NopCloser(strings.NewReader(msg)))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(got) != msg || resp.Trailer.Get("Grpc-Status") != "0" {
			b.Fatalf("echo %q, %v, trailers %v", got, err, resp.Trailer)
		}
	}
}
