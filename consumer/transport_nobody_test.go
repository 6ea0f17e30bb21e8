package consumer_test

import (
	"net/http"
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
