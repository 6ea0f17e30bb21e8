package consumer_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// A caller that stops reading a stream for a while, with everything sent
// so far read and acked, leaves the service quiet: it sends alive frames
// for as long as that lasts, as the protocol lets it, and the caller must
// still read the rest of the stream when it comes back.
func TestTransportSurvivesAliveFramesWhileNotRead(t *testing.T) {
	consumer.SetAliveEvery(t, 10*time.Millisecond)
	release := make(chan struct{})
	srv, nc, _ := start(t, consumer.Config{Name: "svc"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "last\n")
	}))
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })

	// Counts the alive frames on their way to the caller's inbox.
	watch := natstest.Connect(t, srv)
	var alive atomic.Int32
	sub, err := watch.Subscribe(nats.InboxPrefix+">", func(m *nats.Msg) {
		if m.Header.Get(consumer.HeaderFrame) == consumer.FrameAlive {
			alive.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	ctx := t.Context()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || string(buf[:n]) != "first\n" {
		t.Fatalf("first part %q, %v", buf[:n], err)
	}
	// The caller does other things while the service stays quiet.
	waitFor(t, "100 alive frames", func() bool { return alive.Load() >= 100 })
	releaseOnce.Do(func() { close(release) })
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "last\n" {
		t.Fatalf("after the pause: %q, %v", rest, err)
	}
}

// An alive frame whose Narun-Alive-Timeout is not one number of
// milliseconds above 0 is ignored, as the gateway ignores it
// (PROTOCOL.md §4): the caller waits for the service until its own
// deadline, rather than taking the service for gone after a second.
func TestTransportIgnoresAliveFramesWithoutATimeout(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value []string
	}{
		{name: "zero", value: []string{"0"}},
		{name: "negative", value: []string{"-5000"}},
		{name: "past a Duration", value: []string{"9223372036854775807"}},
		{name: "two values", value: []string{"1000", "1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, client := handWritten(t)
			responder(t, svc, "svc", func(m *nats.Msg) {
				_ = svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{
					consumer.HeaderFrame:        {consumer.FrameAlive},
					consumer.HeaderAliveTimeout: tc.value,
				}})
			})
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/", nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, consumer.ErrServiceGone) {
				t.Errorf("call: %v, want the context's deadline", err)
			}
		})
	}
}

// oneByteAtATime is a request body that never ends, a byte per read.
type oneByteAtATime struct{}

func (oneByteAtATime) Read(p []byte) (int, error) {
	p[0] = 'x'
	return 1, nil
}

// A pull is a message of the exchange as much as a response frame: after
// an alive frame, a service that pulls its request body for longer than
// the silence it allowed, without a pause as long, is not gone, as the
// gateway hears it (PROTOCOL.md §4).
func TestTransportHearsThePullsAfterAnAliveFrame(t *testing.T) {
	const allowed = 2 * time.Second
	svc, client := handWritten(t)
	responder(t, svc, "svc", func(m *nats.Msg) {
		_ = svc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{
			consumer.HeaderFrame:        {consumer.FrameAlive},
			consumer.HeaderAliveTimeout: {strconv.FormatInt(allowed.Milliseconds(), 10)},
		}})
		pulled := 0
		for start := time.Now(); time.Since(start) < allowed*3/2; pulled++ {
			chunk, err := svc.RequestMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FramePull}}}, 5*time.Second)
			if err != nil || chunk.Header.Get(consumer.HeaderFrame) != consumer.FrameData {
				return
			}
		}
		_ = svc.PublishMsg(&nats.Msg{Subject: m.Reply, Data: []byte(strconv.Itoa(pulled) + " bytes")})
	})
	req, _ := http.NewRequest(http.MethodPost, "http://svc/", oneByteAtATime{})
	req.ContentLength = -1
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("call: %v, want the service's answer", err)
	}
	resp.Body.Close()
}
