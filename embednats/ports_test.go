package embednats_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// Every listener given port 0 keeps the port it bound at the first start
// across a Restart (after a full disk) and a reload of the options (a CA
// file rewritten): leaf nodes, routes and clients were told that port,
// and would not find the server on another.
func TestPortsPickedAtStartAreKept(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "hub")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	caFiles := []string{ca.File}
	putFiles(t, caFile, caFiles...)
	var logs syncBuffer
	s := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", ServerName: "n1",
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		Cluster:   embednats.Cluster{Name: "narun", Listen: "127.0.0.1:0", Routes: []string{"nats-route://127.0.0.1:1"}},
		Leafnodes: embednats.Leafnodes{Listen: "127.0.0.1:0", TLS: embednats.TLS{Cert: cert, Key: key, CA: caFile, Verify: true}}})
	listeners := []struct {
		name string
		addr func() string
	}{
		{"client", s.ClientURL},
		{"leafnode", s.LeafAddr},
		{"cluster", func() string { return s.NATS().ClusterAddr().String() }},
		{"monitoring", func() string { return s.NATS().MonitorAddr().String() }},
	}
	bound := map[string]string{}
	for _, l := range listeners {
		bound[l.name] = l.addr()
	}
	restart := func() {
		if err := s.Restart(); err != nil {
			t.Fatalf("restart: %v", err)
		}
	}
	reload := func() {
		before := strings.Count(logs.String(), "NATS CA files reloaded")
		caFiles = append(caFiles, natstest.NewCA(t).File)
		putFiles(t, caFile, caFiles...)
		waitLogged(t, &logs, "NATS CA files reloaded", before)
	}
	// A reload after a restart too: the options the server runs with
	// then differ from those of the first start.
	for _, step := range []struct {
		name string
		do   func()
	}{
		{"a CA reload", reload},
		{"a restart", restart},
		{"a CA reload after a restart", reload},
		{"a second restart", restart},
	} {
		step.do()
		for _, l := range listeners {
			if addr := l.addr(); addr != bound[l.name] {
				t.Errorf("after %s, the %s listener is on %q, want %q as at the start", step.name, l.name, addr, bound[l.name])
			}
		}
	}
}
