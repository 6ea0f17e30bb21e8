package consumer_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// A request body that gives fewer or more bytes than its ContentLength
// fails the call, as net/http's Transport fails it, and the service never
// takes what it got for the whole body: a body that fits in the head is
// not sent, and a streamed one ends with a cancel rather than an end
// (PROTOCOL.md §2).
func TestTransportChecksTheBodyAgainstItsContentLength(t *testing.T) {
	const large = 2 << 20 // streamed: more than a message holds
	for _, tc := range []struct {
		name          string
		contentLength int64
		bodyLength    int
	}{
		{name: "in the head, short", contentLength: 10, bodyLength: 5},
		{name: "in the head, long", contentLength: 5, bodyLength: 6},
		{name: "streamed, short", contentLength: large, bodyLength: large - 1},
		{name: "streamed, long", contentLength: large, bodyLength: large + 1},
		{name: "streamed, a chunk long", contentLength: large, bodyLength: large + 1<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, client := handWritten(t)
			nc := client.Transport.(*consumer.Transport).Conn
			requests, err := svc.SubscribeSync("svc")
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Flush(); err != nil {
				t.Fatal(err)
			}
			const marker = "no more requests"
			callErr := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodPost, "http://svc/", bytes.NewReader(make([]byte, tc.bodyLength)))
				req.ContentLength = tc.contentLength
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				callErr <- err
				// After the request on one connection: NATS keeps the order.
				_ = nc.Publish("svc", []byte(marker))
			}()
			for {
				m, err := requests.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("waiting for the requests: %v", err)
				}
				if string(m.Data) == marker {
					break
				}
				if got, whole := body(t, svc, m); whole {
					t.Errorf("the service got a body of %d bytes as whole, for a ContentLength of %d", got, tc.contentLength)
					_ = svc.Publish(m.Reply, nil)
				}
			}
			want := fmt.Sprintf("ContentLength=%d with Body length %d", tc.contentLength, tc.bodyLength)
			if err := <-callErr; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("call: %v, want an error with %q", err, want)
			}
		})
	}
}

// body reads the body of request m as a service does, pulling the rest of
// a streamed one, and says how long it was and whether it came whole.
func body(t *testing.T, svc *nats.Conn, m *nats.Msg) (int, bool) {
	t.Helper()
	n := len(m.Data)
	if m.Header.Get(consumer.HeaderBody) != consumer.BodyStream {
		return n, true
	}
	for {
		chunk, err := svc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FramePull}}}, 10*time.Second)
		if err != nil {
			t.Fatalf("pull: %v", err)
		}
		n += len(chunk.Data)
		switch chunk.Header.Get(consumer.HeaderFrame) {
		case consumer.FrameData:
		case consumer.FrameEnd:
			return n, true
		default:
			return n, false
		}
	}
}
