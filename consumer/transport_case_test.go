package consumer_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// A responder in another language may write the protocol's header names in
// another case, and spaces after a value: the gateway reads them alike
// (PROTOCOL.md: "accepts any case back", "spaces and tabs around a
// header's value are not part of it"), and so must Transport, which
// speaks the protocol as the gateway does.
func TestTransportReadsRepliesAsTheGatewayDoes(t *testing.T) {
	srv := natstest.Start(t)
	svc := natstest.Connect(t, srv)
	nc := natstest.Connect(t, srv)
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	responder(t, svc, "lower", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-status": {"201 "}, "narun-body": {"stream"}, "content-type": {"text/plain"}}, Data: []byte("part1,")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-frame": {"data "}}, Data: []byte("part2")})
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"narun-frame": {"end"}, "x-sum": {"2"}}})
	})
	responder(t, svc, "lowererr", func(m *nats.Msg) {
		svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"nats-service-error-code": {"409"}, "nats-service-error": {"conflict"}}})
	})

	resp, err := client.Get("http://lower/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || string(body) != "part1,part2" || resp.Trailer.Get("X-Sum") != "2" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("got %d %q (%v), trailers %v, header %v; want 201 \"part1,part2\", X-Sum 2 and text/plain", resp.StatusCode, body, err, resp.Trailer, resp.Header)
	}

	resp, err = client.Get("http://lowererr/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || string(body) != "conflict" {
		t.Errorf("got %d %q, want 409 \"conflict\"", resp.StatusCode, body)
	}
}
