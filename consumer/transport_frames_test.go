package consumer_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// The gateway ignores a frame type it does not know, before the head as
// after it, so that later versions of the protocol can add frames without
// breaking older peers (PROTOCOL.md §3), and drops an interim frame that
// comes after the head. Transport, which reads replies as the gateway does,
// must not fail such a response as a broken reply.
func TestTransportIgnoresFramesItDoesNotKnow(t *testing.T) {
	srv := natstest.Start(t)
	svc := natstest.Connect(t, srv)
	nc := natstest.Connect(t, srv)
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	frame := func(reply, kind string, data string) {
		svc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{consumer.HeaderFrame: {kind}}, Data: []byte(data)})
	}
	responder(t, svc, "later", func(m *nats.Msg) {
		frame(m.Reply, "future", "")
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderBody: {consumer.BodyStream}}, Data: []byte("a")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameInterim}, consumer.HeaderStatus: {"103"}}})
		frame(m.Reply, "future", "not body")
		frame(m.Reply, consumer.FrameData, "b")
		frame(m.Reply, consumer.FrameEnd, "c")
	})
	resp, err := client.Get("http://later/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "abc" {
		t.Errorf("body %q, %v; want \"abc\"", body, err)
	}
}
