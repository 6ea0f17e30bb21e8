// Package natstest starts embedded NATS servers for tests: random port,
// temporary store, shut down when the test ends.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats"
)

// Start runs a JetStream-enabled server on a random loopback port.
func Start(t testing.TB) *embednats.Server {
	t.Helper()
	return StartConfig(t, embednats.Config{})
}

// StartConfig runs a server with cfg; Listen and DataDir default to a random
// loopback port and a temporary directory.
func StartConfig(t testing.TB, cfg embednats.Config) *embednats.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:-1"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	s, err := embednats.Start(cfg)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens an in-process connection closed when the test ends.
func Connect(t testing.TB, s *embednats.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(opts...)
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
