package runner

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/embednats/natstest"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"runner", "extra"}, `unexpected argument "extra"`},
		{[]string{"runner", "--label", "novalue"}, `label "novalue": want key=value`},
		{[]string{"runner", "--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
			err := Main(context.Background(), stdio, tt.args)
			if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Main(%q) = %v (exit %d), want a usage error with %q", tt.args, err, cli.ExitCode(err), tt.want)
			}
		})
	}
}

// Bad values of the file are refused at start, naming the file, the line
// and the key, before NATS is dialled: a heartbeat interval longer than
// half the life of a heartbeat in narun-nodes (the node would vanish
// between two), a malformed trusted key, a node id or label no spec could
// name or select.
func TestBadFileRefusedAtStart(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"heartbeat interval too long", "[runner]\nnode_id = \"n\"\nheartbeat_interval = \"40s\"\n",
			`:3: key "runner.heartbeat_interval": want at most 15s, got 40s`},
		{"malformed trusted key", "[runner]\nnode_id = \"n\"\ntrusted_keys = [\"narun-ed25519:bogus\"]\n",
			`:3: key "runner.trusted_keys[0]": "narun-ed25519:bogus": not a 32-byte Ed25519 public key in base64`},
		{"node id with a dot", "[runner]\nnode_id = \"edge-1.example.com\"\n",
			`:2: key "runner.node_id": node id "edge-1.example.com": may contain only letters`},
		{"label no spec could select", "[runner]\nnode_id = \"n\"\n[runner.labels]\n\"-x\" = \"y\"\n",
			`:4: key "runner.labels.-x": label name "-x": want a letter or digit`},
		{"label without a value", "[runner]\nnode_id = \"n\"\nlabels = { role = \"\" }\n",
			`:3: key "runner.labels.role": label value must be 1..128 characters`},
		{"apps' certificate without its key", "[runner]\nnode_id = \"n\"\napp_nats_cert = \"/etc/narun/tls/apps.pem\"\n",
			`:3: key "runner.app_nats_cert": set, but runner.app_nats_key is empty`},
		{"apps' CA missing", "[runner]\nnode_id = \"n\"\napp_nats_ca = \"/nonexistent/ca.pem\"\n",
			`:3: key "runner.app_nats_ca": open /nonexistent/ca.pem: no such file or directory`},
		{"apps' certificate missing", "[runner]\nnode_id = \"n\"\napp_nats_cert = \"/nonexistent/apps.pem\"\napp_nats_key = \"/nonexistent/apps.key\"\n",
			`:3: key "runner.app_nats_cert": /nonexistent/apps.pem with key /nonexistent/apps.key: open /nonexistent/apps.pem`},
		{"label without a value among others", "[runner]\nnode_id = \"n\"\n[runner.labels]\nzone = \"a\"\nrole = \"\"\n",
			`:5: key "runner.labels.role": label value must be 1..128 characters`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "narun.toml")
			if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
			// Stopped already: without the check the runner would start,
			// and return at once.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := Main(ctx, stdio, []string{"runner", "--config", file, "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), file+tc.want) {
				t.Errorf("Main = %v, want an error with %s", err, file+tc.want)
			}
		})
	}
}

// An admin address another process holds fails the start naming the flag
// or the file's key and line that set it, as narun up names its own.
func TestStartNamesTheAdminListenInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	srv := natstest.Start(t)
	file := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(file, []byte("[runner]\nnode_id = \"n1\"\nadmin_listen = \""+addr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"flag", "--admin-listen " + addr, []string{"--config", "/dev/null", "--node-id", "n1", "--admin-listen", addr}},
		{"file", file + `:3: key "runner.admin_listen"`, []string{"--config", file}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
			args := append([]string{"runner", "--nats-url", srv.ClientURL(), "--data-dir", t.TempDir()}, tc.args...)
			err := Main(context.Background(), stdio, args)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("Main = %v, want an error naming %s and the address in use", err, tc.want)
			}
		})
	}
}
