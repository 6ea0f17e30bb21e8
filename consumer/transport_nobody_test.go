package consumer_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// A streamed 204 or 304 is a whole response, whose exchange the gateway
// does not cancel (PROTOCOL.md §3): the handler goes on to its end frame,
// and its request counts as served. Transport, which speaks the protocol
// as the gateway does, must not cancel it either.
func TestTransportDoesNotCancelAStreamedNoContent(t *testing.T) {
	srv, nc, _ := start(t, consumer.Config{Name: "svc"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		w.(http.Flusher).Flush()
	}))
	watch := natstest.Connect(t, srv)
	cancels, err := watch.SubscribeSync(consumer.CancelSubject("svc"))
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	resp, err := client.Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d, want 204", resp.StatusCode)
	}
	// What Transport published before comes before this, on one
	// connection and one subject.
	if err := nc.Publish(consumer.CancelSubject("svc"), []byte("marker")); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := cancels.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the marker: %v", err)
		}
		if string(m.Data) == "marker" {
			break
		}
		t.Errorf("Transport cancelled the exchange of a streamed 204 (%s)", m.Data)
	}
}

// A request whose ContentLength promises a body it does not have fails,
// as with net/http's Transport, rather than tell the service of a body
// that never comes; http.NoBody is a body of no bytes, whatever the
// ContentLength says, as net/http sends it.
func TestTransportContentLengthWithoutABody(t *testing.T) {
	client, _ := caller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %q", r.ContentLength, r.Header.Values("Content-Length"))
	}))
	req, _ := http.NewRequest(http.MethodPost, "http://svc/", nil)
	req.ContentLength = 5
	resp, err := client.Do(req)
	if err == nil {
		t.Errorf("a ContentLength of 5 with a nil Body: %s, want an error", readAll(t, resp))
	} else if !strings.Contains(err.Error(), "ContentLength=5 with nil Body") {
		t.Errorf("a ContentLength of 5 with a nil Body: %v, want net/http's error", err)
	}

	req, _ = http.NewRequest(http.MethodPost, "http://svc/", http.NoBody)
	req.ContentLength = 5
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != `0 []` {
		t.Errorf("http.NoBody with a ContentLength of 5: the handler saw %s, want 0 []", got)
	}
}
