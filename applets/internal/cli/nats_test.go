package cli_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
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
