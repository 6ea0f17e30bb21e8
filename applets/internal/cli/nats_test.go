package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

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
