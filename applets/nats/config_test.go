package nats_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/testutil"
	natsapplet "github.com/narun/narun/applets/nats"
	"github.com/narun/narun/embednats"
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
			file + `:3: key "nats.max_payload": want 256 KiB to 64 MiB, got 68157440 bytes`, ""},
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
		// Each entry of an array of tables is placed at its own line.
		{"user without password", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.users]]\nuser = \"a\"\npassword = \"b\"\n\n[[nats.users]]\nuser = \"c\"\n", nil,
			file + `:8: key "nats.users[1]": every user needs a user name and a password`, ""},
		{"user twice", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.users]]\nuser = \"a\"\npassword = \"b\"\n\n[[nats.users]]\npassword = \"d\"\nuser = \"a\"\n", nil,
			file + `:10: key "nats.users[1].user": user "a" is listed twice`, ""},
		// One key in both lists is placed at the list that repeats it.
		{"nkey twice", "[nats]\nlisten = \"127.0.0.1:-1\"\nnkeys = [\"UD5NFSAHIFKPERRZR6HCTNEEPSNM34SCZJS53OALAVRHILUUADFBBCO7\"]\n\napp_nkeys = [\"UD5NFSAHIFKPERRZR6HCTNEEPSNM34SCZJS53OALAVRHILUUADFBBCO7\"]\n", nil,
			file + `:5: key "nats.app_nkeys": UD5NFSAHIFKPERRZR6HCTNEEPSNM34SCZJS53OALAVRHILUUADFBBCO7 is listed twice`, ""},
		{"reserved user", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.users]]\nuser = \"narun-internal\"\npassword = \"b\"\n", nil,
			file + `:5: key "nats.users[0].user": user name "narun-internal" is reserved`, ""},
		{"leaf remote scheme", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.leafnodes.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n\n[[nats.leafnodes.remotes]]\nurls = [\"http://hub:7422\"]\n", nil,
			file + `:8: key "nats.leafnodes.remotes[1].urls": "http://hub:7422": scheme "http"`, ""},
		{"leaf remote without urls", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.leafnodes.remotes]]\nurls = []\n", nil,
			file + `:4: key "nats.leafnodes.remotes[0]": at least one url is required`, ""},
		{"leaf credentials missing", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.leafnodes.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\ncredentials = \"/nonexistent/hub.creds\"\n", nil,
			file + `:6: key "nats.leafnodes.remotes[0].credentials": open /nonexistent/hub.creds`, ""},
		{"route not a url", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"c\"\nlisten = \"127.0.0.1:-1\"\nroutes = [\"::::\"]\n", nil,
			file + `:8: key "nats.cluster.routes": invalid url "::::"`, ""},
		{"server_name with a space", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge 1\"\n", nil,
			file + `:3: key "nats.server_name": "edge 1": must not contain spaces`, ""},
		{"cluster name with a space", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"my cluster\"\nlisten = \"127.0.0.1:-1\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n", nil,
			file + `:6: key "nats.cluster.name": "my cluster": must not contain spaces`, ""},
		{"domain with a dot", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.jetstream]\ndomain = \"shop.17\"\n", nil,
			file + `:5: key "nats.jetstream.domain": "shop.17": want a NATS subject token`, ""},
		{"domain with a space", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.jetstream]\ndomain = \"shop 17\"\n", nil,
			file + `:5: key "nats.jetstream.domain": "shop 17": want a NATS subject token`, ""},
		{"leaf remote from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.leafnodes.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n", []string{"--leaf-remote", "http://hub:7422"},
			`--leaf-remote: "http://hub:7422": scheme "http"`, file},
		{"empty leaf remote from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\n", []string{"--leaf-remote", ""},
			`--leaf-remote: invalid url ""`, file},
		{"empty route from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"c\"\nlisten = \"127.0.0.1:-1\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n", []string{"--routes", ""},
			`--routes: invalid url ""`, file},
		{"listen from the file", "[nats]\nlisten = \"bogus\"\n", nil,
			file + `:2: key "nats.listen": "bogus": want host:port`, ""},
		{"ipv6 listen without brackets", "[nats]\nlisten = \"::1:4222\"\n", nil,
			file + `:2: key "nats.listen": "::1:4222": want host:port: address ::1:4222: too many colons in address (an IPv6 address takes brackets: "[::1]:4222")`, ""},
		{"ipv6 cluster listen without brackets", "[nats]\nlisten = \"[::1]:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"c\"\nlisten = \"fe80::1%eth0:6222\"\nroutes = [\"nats-route://[::1]:6222\"]\n", nil,
			file + `:7: key "nats.cluster.listen": "fe80::1%eth0:6222": want host:port: address fe80::1%eth0:6222: too many colons in address (an IPv6 address takes brackets: "[fe80::1%eth0]:6222")`, ""},
		{"route with an unescaped zone", "[nats]\nlisten = \"[::1]:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"c\"\nlisten = \"[::1]:-1\"\nroutes = [\"nats-route://[fe80::1%eth0]:6222\"]\n", nil,
			file + `:8: key "nats.cluster.routes": invalid url "nats-route://[fe80::1%eth0]:6222" (a URL writes the zone's % as %25: [fe80::1%25eth0])`, ""},
		// A TLS table is placed at the key at fault, or at the table's
		// header for a key it lacks.
		{"route tls without a ca", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"c\"\nlisten = \"127.0.0.1:-1\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n\n[nats.cluster.tls]\ncert = \"/etc/narun/a.pem\"\nkey = \"/etc/narun/a.key\"\n", nil,
			file + `:10: key "nats.cluster.tls": ca is empty`, ""},
		{"client port tls file missing", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[nats.tls]\ncert = \"/nonexistent/a.pem\"\nkey = \"/nonexistent/a.key\"\n", nil,
			file + `:5: key "nats.tls.cert": load /nonexistent/a.pem with key /nonexistent/a.key: open /nonexistent/a.pem`, ""},
		{"leaf remote tls cert without key", "[nats]\nlisten = \"127.0.0.1:-1\"\n\n[[nats.leafnodes.remotes]]\nurls = [\"tls://127.0.0.1:7422\"]\n\n[nats.leafnodes.remotes.tls]  # to the hub\ncert = \"/nonexistent/leaf.pem\"\n", nil,
			file + `:8: key "nats.leafnodes.remotes[0].tls.cert": set, but key is empty`, ""},
		{"listen from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\n", []string{"--listen", "bogus"},
			`--listen: "bogus": want host:port`, file},
		{"server_name from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-1\"\n", []string{"--server-name", "edge 1"},
			`--server-name: "edge 1": must not contain spaces`, file},
		{"cluster name from a flag", "[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"a\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = \"127.0.0.1:-1\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n", []string{"--cluster-name", "a b"},
			`--cluster-name: "a b": must not contain spaces`, file},
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
			// A wrong flag is a usage error, as README says.
			wantCode := 1
			if tt.args != nil {
				wantCode = 2
			}
			if cli.ExitCode(err) != wantCode {
				t.Errorf("exit code %d, want %d", cli.ExitCode(err), wantCode)
			}
		})
	}
}

// A member whose [nats] server_name changed over its store would join the
// cluster as one more member for good (embednats refuses it): the error
// names the file's line, or the flag, that gave the new name, at a start
// and, as here, at a --check before it.
func TestRenamedMemberNamesTheLine(t *testing.T) {
	dataDir, clusterAddr := t.TempDir(), testutil.FreeAddr(t)
	s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:-1", DataDir: dataDir, ServerName: "edge-1",
		Cluster: embednats.Cluster{Name: "narun", Listen: clusterAddr, Routes: []string{"nats-route://" + clusterAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	file := filepath.Join(t.TempDir(), "narun.toml")
	body := fmt.Sprintf("[nats]\nlisten = \"127.0.0.1:-1\"\nserver_name = \"edge-2\"\n\n[nats.cluster]\nname = \"narun\"\nlisten = %q\nroutes = [\"nats-route://%s\"]\n", clusterAddr, clusterAddr)
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args          []string
		want, notWant string
	}{
		{nil, file + `:3: key "nats.server_name": "edge-2", but the data dir`, ""},
		{[]string{"--server-name", "edge-3"}, `--server-name: "edge-3", but the data dir`, file},
	} {
		stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
		args := append([]string{"nats", "--check", "--config", file, "--data-dir", dataDir}, tt.args...)
		err := natsapplet.Main(context.Background(), stdio, args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error = %v, want it to contain %s", err, tt.want)
			continue
		}
		if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
			t.Errorf("error = %v, places in the file a value a flag gave", err)
		}
	}
}
