package consumer_test

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// A request whose handler goes quiet, before its head or between two parts
// of a stream (Server-Sent Events between events), has the consumer send
// alive frames that say how long a silence the gateway may allow, so that
// the gateway can tell it from an instance that was killed. None goes out
// while a data frame awaits its ack: the gateway is busy writing then, and
// the frame would take a place in its buffer for the exchange.
func TestQuietRequestsSendAliveFrames(t *testing.T) {
	const every = 50 * time.Millisecond
	consumer.SetAliveEvery(t, every)
	release := make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "quiet"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			_, _ = io.WriteString(w, "event 1\n")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "event 2\n")
			w.(http.Flusher).Flush()
		}
		<-release
		_, _ = io.WriteString(w, "last\n")
	}))
	// Before the service stops (cleanups run last first), which waits for
	// its handlers: a test that failed must not hang there.
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	ask := func(path string) *nats.Subscription {
		t.Helper()
		inbox := nc.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.PublishMsg(&nats.Msg{Subject: "quiet", Reply: inbox, Header: nats.Header{consumer.HeaderPath: {path}, consumer.HeaderTimeout: {"60000"}}}); err != nil {
			t.Fatal(err)
		}
		return sub
	}
	next := func(sub *nats.Subscription, wait time.Duration) (*nats.Msg, error) {
		t.Helper()
		return sub.NextMsg(wait)
	}
	isAlive := func(m *nats.Msg) bool {
		t.Helper()
		if m.Header.Get(consumer.HeaderFrame) != consumer.FrameAlive {
			return false
		}
		if got, want := m.Header.Get(consumer.HeaderAliveTimeout), "250"; got != want {
			t.Errorf("alive frame allows %q ms of silence, want %s (5 times %v)", got, want, every)
		}
		return true
	}

	unary := ask("/unary")
	stream := ask("/stream")
	for range 2 {
		m, err := next(unary, 10*time.Second)
		if err != nil || !isAlive(m) {
			t.Fatalf("before its head, a quiet request sent %v (%v), want alive frames", m, err)
		}
	}

	head, err := next(stream, 10*time.Second)
	if err != nil || head.Header.Get(consumer.HeaderBody) != consumer.BodyStream {
		t.Fatalf("want the streamed head, got %v (%v)", head, err)
	}
	data, err := next(stream, 10*time.Second)
	if err != nil || data.Header.Get(consumer.HeaderFrame) != consumer.FrameData || data.Reply == "" {
		t.Fatalf("want a data frame to ack, got %v (%v)", data, err)
	}
	// Ten times the period the frames would come at.
	if m, err := next(stream, 10*every); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("with a data frame not acked, the stream sent %v (%v), want nothing", m, err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: data.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m, err := next(stream, 10*time.Second)
		if err != nil || !isAlive(m) {
			t.Fatalf("once acked, a quiet stream sent %v (%v), want alive frames", m, err)
		}
	}

	releaseOnce.Do(func() { close(release) })
	for _, sub := range []*nats.Subscription{unary, stream} {
		for {
			m, err := next(sub, 10*time.Second)
			if err != nil {
				t.Fatalf("waiting for the end of the response: %v", err)
			}
			frame := m.Header.Get(consumer.HeaderFrame)
			if frame == consumer.FrameAlive || frame == consumer.FrameData {
				continue
			}
			if frame == "" && m.Header.Get(consumer.HeaderBody) == "" || frame == consumer.FrameEnd {
				if string(m.Data) != "last\n" {
					t.Errorf("the response ended with %q, want %q", m.Data, "last\n")
				}
				break
			}
			t.Fatalf("unexpected message %v", m.Header)
		}
	}
}
