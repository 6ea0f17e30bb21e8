package up

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/signing"
)

// A JetStream request sent while a new cluster elects its first leader
// may never be answered (seen with a leader elected on another member a
// tenth of a second later). narun up must go on soon after JetStream
// answers, not a whole scan's bound after such a lost request.
func TestScanGoesOnSoonAfterJetStreamAnswers(t *testing.T) {
	t.Parallel()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats server not ready")
	}
	connect := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// Stands in for JetStream: silent until its cluster has a leader,
	// then answering, with no bucket stored yet.
	answerFrom := time.Now().Add(2 * time.Second)
	responder := connect()
	_, err = responder.Subscribe("$JS.API.>", func(m *nats.Msg) {
		if time.Now().Before(answerFrom) {
			return
		}
		if m.Subject == "$JS.API.INFO" {
			_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.account_info_response","limits":{},"api":{}}`))
			return
		}
		_ = m.Respond([]byte(`{"error":{"code":404,"err_code":10059,"description":"stream not found"}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	k := &nodeKey{key: key}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, _, err := k.scanWhenAnswered(ctx, connect(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if late := time.Since(answerFrom); late > 5*time.Second {
		t.Errorf("the stored specs were read %v after JetStream answered", late.Round(time.Second))
	}
}
