package nats_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
	natsapplet "github.com/narun/narun/applets/nats"
)

// A cluster member without a server name, a cluster name or routes does
// not start: JetStream needs all three. The error names the file, the line of
// [nats.cluster] listen and what to set, as narun's other checks of
// [nats] do, not only the nats-server option.
func TestClusterNeedsNamesAndRoutes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	for _, tt := range []struct{ name, body, want string }{
		{"no server_name", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = \"127.0.0.1:-1\"\n",
			file + `:6: key "nats.cluster.listen": set, but nats.server_name is empty`},
		{"no cluster name", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-1\"\n\n[nats.cluster]\nlisten = \"127.0.0.1:-1\"\n",
			file + `:6: key "nats.cluster.listen": set, but nats.cluster.name is empty`},
		{"no routes", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-1\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = \"127.0.0.1:-1\"\n",
			file + `:7: key "nats.cluster.listen": set, but nats.cluster.routes is empty`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
			err := natsapplet.Main(context.Background(), stdio, []string{"nats", "--config", file, "--data-dir", t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %s", err, tt.want)
			}
		})
	}
}
