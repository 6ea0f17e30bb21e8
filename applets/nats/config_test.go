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

// A [nats] value the embedded server refuses is named with the file, the
// line and the key, as a wrong type is; a value given by a flag is not
// placed in the file, which does not hold it.
func TestConfigErrorsNameTheLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	for _, tt := range []struct {
		name, body string
		args       []string
		want       string
		notWant    string
	}{
		{"max_payload", "[nats]\nlisten = \"127.0.0.1:-1\"\nmax_payload = \"65MiB\"\n", nil,
			file + `:3: key "nats.max_payload": want at most 64 MiB, got 68157440 bytes`, ""},
		{"routes without listen", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.cluster]\nname = \"c\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n", nil,
			file + `:6: key "nats.cluster.routes": set, but nats.cluster.listen is empty`, ""},
		// JetStream needs a server name, a cluster name and routes for a
		// cluster member; nats-server refuses each without the line.
		{"cluster without server_name", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = \"127.0.0.1:-1\"\n", nil,
			file + `:6: key "nats.cluster.listen": set, but nats.server_name is empty`, ""},
		{"cluster without name", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-1\"\n\n[nats.cluster]\nlisten = \"127.0.0.1:-1\"\n", nil,
			file + `:6: key "nats.cluster.listen": set, but nats.cluster.name is empty`, ""},
		{"cluster without routes", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-1\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = \"127.0.0.1:-1\"\n", nil,
			file + `:7: key "nats.cluster.listen": set, but nats.cluster.routes is empty`, ""},
		{"listen from the file", "[nats]\nlisten = \"bogus\"\n", nil,
			file + `:2: key "nats.listen": "bogus": want host:port`, ""},
		{"listen from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\n", []string{"--listen", "bogus"},
			`nats.listen: "bogus": want host:port`, file},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
			args := append([]string{"nats", "--config", file, "--data-dir", t.TempDir()}, tt.args...)
			err := natsapplet.Main(context.Background(), stdio, args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %s", err, tt.want)
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error = %v, places in the file a value a flag gave", err)
			}
		})
	}
}
