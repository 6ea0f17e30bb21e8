package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
)

// [nats.jetstream] sync_interval reaches the embedded server's JetStream:
// it is what a device on flash storage tunes to flush its storage less
// often (docs/PERFORMANCE.md, "Disk writes").
func TestSyncIntervalReachesJetStream(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(file, []byte("[nats.jetstream]\nsync_interval = \"10m\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ec := cli.EmbedConfig(cfg)
	ec.Listen, ec.DataDir = "127.0.0.1:0", t.TempDir()
	s, err := embednats.Start(ec)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if got := s.NATS().JetStreamConfig().SyncInterval; got != 10*time.Minute {
		t.Fatalf("JetStream sync interval %s, want the file's 10m", got)
	}
}

// The routes' login reaches the embedded server: without it, a cluster
// with client logins would refuse to start.
func TestEmbedConfigCarriesTheClusterLogin(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	err := os.WriteFile(file, []byte(`[nats.cluster]
name = "narun"
listen = "0.0.0.0:6222"
routes = ["nats-route://10.0.0.2:6222"]
user = "route"
password = "r0ute"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	c := cli.EmbedConfig(cfg).Cluster
	if c.User != "route" || c.Password != "r0ute" || c.Listen != "0.0.0.0:6222" || len(c.Routes) != 1 {
		t.Fatalf("embedded cluster config = %+v, want the file's [nats.cluster]", c)
	}
}

// The servers of a nats_url list are tried in the order written, so a
// device that lists its own server first uses it. No server listens: the
// pool is what nats.go would try, in its order.
func TestNATSOptionsKeepServerOrder(t *testing.T) {
	var urls []string
	for range 10 {
		urls = append(urls, "nats://"+testutil.FreeAddr(t))
	}
	opts, err := cli.NATSOptions("order", config.Client{})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.Servers(); !slices.Equal(got, urls) {
		t.Errorf("server pool %q, want the configured order %q", got, urls)
	}
}
