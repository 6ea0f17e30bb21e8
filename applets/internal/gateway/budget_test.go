package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// Request bodies share max_body_memory: with room for two 512 KiB bodies,
// a third waits until one is done with, in the meantime a small request
// passes, and one that waits past its route's deadline gets 503 with
// Retry-After. Two clients that send half a head's body and stall hold
// the room while the gateway reads.
func TestBodyMemoryIsShared(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("svc"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	}))
	cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)},
		config.Route{Path: "/hurried", Service: "svc", Timeout: config.Duration(300 * time.Millisecond)})
	cfg.MaxBodyMemory = 1 << 20
	r := startRun(t, natstest.Connect(t, srv), cfg, "")
	base := "http://" + r.addrs["http"]
	metric := func(name string) string {
		_, m := get(t, "http://"+r.addrs["admin"]+"/metrics")
		for line := range strings.Lines(m) {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}

	const size = 512 << 10
	body := bytes.Repeat([]byte("b"), size)
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", r.addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		if _, err := c.Write(body[:size/2]); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	testutil.Eventually(t, 10*time.Second, "both stalled bodies to hold the body memory", func() bool {
		return metric("narun_gateway_body_memory_bytes") == strconv.Itoa(1<<20)
	})

	third := make(chan string, 1)
	go func() {
		resp, err := http.Post(base+"/up", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			third <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		third <- resp.Status + " " + string(b)
	}()
	testutil.Eventually(t, 10*time.Second, "the third body to wait for room", func() bool {
		return metric("narun_gateway_body_memory_waits_total") == "1"
	})

	resp, err := http.Post(base+"/small", "text/plain", strings.NewReader("small"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "5" {
		t.Fatalf("a small request while the body memory is full: %s %q, want 200 \"5\"", resp.Status, got)
	}

	resp, err = http.Post(base+"/hurried", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a body that waited past its deadline: %s (Retry-After %q) %q, want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"), got)
	}

	select {
	case s := <-third:
		t.Fatalf("the third body was served while the room was taken: %s", s)
	default:
	}
	if _, err := stalled[0].Write(body[size/2:]); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-third:
		if want := "200 OK " + strconv.Itoa(size); s != want {
			t.Fatalf("third body: %s, want %s", s, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the third body still waits after a stalled one was done")
	}
}
