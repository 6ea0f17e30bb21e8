package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats/natstest"
)

// A request head whose HEADERS frame does not end it, followed by empty
// CONTINUATION frames without end: net/http's HTTP/2 server bounds a head
// by its header bytes, which these never add to, and read them until the
// idle timeout, two minutes of most of a core per connection. The gateway
// closes a connection once it has sent the gateway's bound without being
// answered anything, over h2c and over TLS alike.
func TestEndlessContinuationFramesCloseTheConnection(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	r, listeners := h2Listeners(t, func(g *Gateway) { g.quietLimit = limit })
	for _, listener := range listeners {
		t.Run(listener.name, func(t *testing.T) {
			c := listener.conn(t)
			if err := c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
				t.Fatal(err)
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
			head := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2frame(0x4, 0, 0, nil)...)
			head = append(head, h2frame(0x1, 0, 1, hpackLit(":method", "GET"))...)
			if _, err := c.Write(head); err != nil {
				t.Fatal(err)
			}
			// 16 times the bound: the kernel's buffers on both sides hold
			// what was written after the close, a few MiB at most.
			const frameSize = 9
			burst := bytes.Repeat(h2frame(0x9, 0, 1, nil), (64<<10)/frameSize)
			sent := 0
			for sent < 16*limit {
				n, err := c.Write(burst)
				sent += n
				if err != nil {
					return
				}
			}
			t.Errorf("sent %d MiB of empty CONTINUATION frames and the gateway still reads them, with a bound of %d MiB", sent>>20, limit>>20)
		})
	}
	_, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
	if got := metricInt(t, m, "narun_gateway_connections_unanswered_total"); got != 2 {
		t.Errorf("narun_gateway_connections_unanswered_total = %d, want 2", got)
	}
}

// What the bound closes is what a client sends while the gateway writes it
// nothing: a body of many times the bound goes through, over HTTP/1.1
// (where nothing is written before the response) as over HTTP/2 (where the
// window updates for what the gateway read are), in clear and over TLS.
func TestBodiesLargerThanTheQuietBoundGoThrough(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	// Above a stream's window, which a client may fill before the
	// gateway writes anything, as quietBound is above the connection's.
	const limit = 2 * h2StreamWindow
	cfg := gwConfig(config.Route{Path: "/", Service: "sum"})
	pool := withTLS(t, &cfg)
	r := startRunPrepared(t, Options{Config: cfg, Conn: natstest.Connect(t, srv)}, func(g *Gateway) { g.quietLimit = limit })
	serveOn(t, natstest.Connect(t, srv), consumerConfig("sum"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	}))
	transport := func(set func(*http.Protocols)) *http.Transport {
		tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{RootCAs: pool}}
		set(tr.Protocols)
		t.Cleanup(tr.CloseIdleConnections)
		return tr
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 8*limit/16)
	sum := sha256.Sum256(body)
	for _, client := range []struct {
		name, url string
		tr        *http.Transport
	}{
		{"HTTP/1.1", "http://" + r.addrs["http"], transport(func(p *http.Protocols) { p.SetHTTP1(true) })},
		{"h2c", "http://" + r.addrs["http"], transport(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) })},
		{"HTTP/1.1 over TLS", "https://" + r.addrs["https"], transport(func(p *http.Protocols) { p.SetHTTP1(true) })},
		{"h2 over TLS", "https://" + r.addrs["https"], transport(func(p *http.Protocols) { p.SetHTTP2(true) })},
	} {
		for _, length := range []string{"known", "unknown"} {
			t.Run(client.name+", length "+length, func(t *testing.T) {
				var rd io.Reader = bytes.NewReader(body)
				if length == "unknown" {
					rd = io.MultiReader(rd)
				}
				resp, err := (&http.Client{Transport: client.tr}).Post(client.url+"/", "application/octet-stream", rd)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if want := map[bool]int{false: 1, true: 2}[strings.HasPrefix(client.name, "h2")]; resp.ProtoMajor != want {
					t.Fatalf("answered over HTTP/%d, want HTTP/%d", resp.ProtoMajor, want)
				}
				got, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || string(got) != hex.EncodeToString(sum[:]) {
					t.Errorf("upload of %d KiB with a bound of %d KiB: %d %s", len(body)>>10, limit>>10, resp.StatusCode, got)
				}
			})
		}
	}
}
