package consumer_test

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// A gateway that went away (restarted) has no inbox left: a pull, or a data
// frame, then gets NATS's "no responders", which means the exchange is over
// as a cancel does (PROTOCOL.md). The handler's context ends by the time
// the read or the flush that learnt it returns, as the package promises for
// an exchange the gateway ended: a handler tells a client gone from a bad
// body by it, and a stream waiting for its next event stops.
func TestGatewayGoneEndsTheRequestContext(t *testing.T) {
	ended := make(chan error, 1)
	proceed := make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "gone"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/pull" {
			_, err := io.ReadAll(r.Body)
			if err == nil {
				ended <- errors.New("the body read without a gateway")
				return
			}
			ended <- r.Context().Err()
			return
		}
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "head")
		if err := rc.Flush(); err != nil {
			ended <- err
			return
		}
		select {
		case <-proceed:
		case <-r.Context().Done():
			ended <- r.Context().Err()
			return
		}
		for range 100 {
			_, _ = io.WriteString(w, "event")
			if err := rc.Flush(); err != nil {
				ended <- r.Context().Err()
				return
			}
		}
		ended <- errors.New("100 events flushed without a gateway")
	}))
	wait := func(what string) {
		t.Helper()
		select {
		case err := <-ended:
			if err == nil {
				t.Errorf("%s: the handler's context had not ended", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the handler did not end", what)
		}
	}

	// Nobody listens on the reply subject.
	err := nc.PublishMsg(&nats.Msg{Subject: "gone", Reply: nc.NewInbox(), Header: nats.Header{
		consumer.HeaderMethod: {"POST"}, consumer.HeaderPath: {"/pull"}, consumer.HeaderBody: {consumer.BodyStream}, consumer.HeaderTimeout: {"60000"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	wait("a pull")

	// The gateway takes the head, and goes.
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	err = nc.PublishMsg(&nats.Msg{Subject: "gone", Reply: inbox, Header: nats.Header{consumer.HeaderPath: {"/stream"}, consumer.HeaderTimeout: {"60000"}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || m.Header.Get(consumer.HeaderBody) != consumer.BodyStream {
		t.Fatalf("the streamed head: %v, %v", m, err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	wait("data frames")
}
