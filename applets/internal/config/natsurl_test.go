package config_test

import (
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/config"
)

// A client whose nats_url nothing sets goes to the server of the same
// file, at its [nats] listen: ctl, runner and gw run beside it with one
// narun.toml, and went to 4222, another server or none, when it listened
// elsewhere.
func TestNATSURLFollowsTheFilesListen(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        string
		want       [3]string // gateway, runner, ctl
	}{
		{"no file", "", "", all(config.DefaultNATSURL)},
		{"no nats table", "[runner]\nnode_id = \"a\"\n", "", all(config.DefaultNATSURL)},
		{"loopback", "[nats]\nlisten = \"127.0.0.1:24222\"\n", "", all("nats://127.0.0.1:24222")},
		{"any ipv4", "[nats]\nlisten = \"0.0.0.0:24222\"\n", "", all("nats://127.0.0.1:24222")},
		{"any, no host", "[nats]\nlisten = \":24222\"\n", "", all("nats://127.0.0.1:24222")},
		{"any ipv6", "[nats]\nlisten = \"[::]:24222\"\n", "", all("nats://127.0.0.1:24222")},
		{"one address", "[nats]\nlisten = \"10.0.0.5:24222\"\n", "", all("nats://10.0.0.5:24222")},
		{"host name", "[nats]\nlisten = \"edge-1.example.com:24222\"\n", "", all("nats://edge-1.example.com:24222")},
		{"tls", "[nats]\nlisten = \"127.0.0.1:24222\"\n[nats.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n", "", all("tls://127.0.0.1:24222")},
		{"port picked at start", "[nats]\nlisten = \"127.0.0.1:-1\"\n", "", all(config.DefaultNATSURL)},
		{"in-process only", "[nats]\nlisten = \"\"\n", "", all(config.DefaultNATSURL)},
		{"key wins", "[nats]\nlisten = \"127.0.0.1:24222\"\n[ctl]\nnats_url = \"nats://hub:4222\"\n", "",
			[3]string{"nats://127.0.0.1:24222", "nats://127.0.0.1:24222", "nats://hub:4222"}},
		{"environment wins", "[nats]\nlisten = \"127.0.0.1:24222\"\n", "nats://env:4222", all("nats://env:4222")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := loadAlone(t, tc.file, tc.env)
			if got := [3]string{cfg.Gateway.NATSURL, cfg.Runner.NATSURL, cfg.Ctl.NATSURL}; got != tc.want {
				t.Errorf("gateway, runner, ctl nats_url = %q, want %q", got, tc.want)
			}
		})
	}
}

func all(url string) [3]string { return [3]string{url, url, url} }

// loadAlone loads file ("" for none) as the only configuration there is,
// with env as NARUN_NATS_URL, and returns it and the file's path.
func loadAlone(t *testing.T, file, env string) (config.File, string) {
	t.Helper()
	path := ""
	if file != "" {
		path = writeConfig(t, file)
	}
	saved := config.SearchPath
	config.SearchPath = nil
	defer func() { config.SearchPath = saved }()
	cfg, err := config.Load(path, func(k string) string {
		if k == "NARUN_NATS_URL" {
			return env
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// Each client's nats_url says where it came from, for an error that
// names the URL to say which setting to change.
func TestNATSURLSource(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        string
		want       [3]string // gateway, runner, ctl; PATH is the file
	}{
		{"no file", "", "", all("")},
		{"no nats table", "[runner]\nnode_id = \"a\"\n", "", all("")},
		{"listen", "[nats]\nlisten = \"127.0.0.1:24222\"\n", "", all("[nats] listen in PATH")},
		{"listen of the default port", "[nats]\nlisten = \"0.0.0.0:4222\"\n", "", all("[nats] listen in PATH")},
		{"in-process only", "[nats]\nlisten = \"\"\n", "", all("")},
		{"port picked at start", "[nats]\nlisten = \"127.0.0.1:-1\"\n", "", all("")},
		{"tls on the default listen", "[nats.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n", "", all("[nats.tls] in PATH")},
		{"key", "[nats]\nlisten = \"127.0.0.1:24222\"\n[ctl]\nnats_url = \"nats://hub:4222\"\n", "",
			[3]string{"[nats] listen in PATH", "[nats] listen in PATH", "[ctl] nats_url in PATH"}},
		{"environment", "[ctl]\nnats_url = \"nats://hub:4222\"\n", "nats://env:4222", all("NARUN_NATS_URL")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, path := loadAlone(t, tc.file, tc.env)
			want := tc.want
			for i := range want {
				want[i] = strings.ReplaceAll(want[i], "PATH", path)
			}
			if got := [3]string{cfg.Gateway.NATSURLFrom, cfg.Runner.NATSURLFrom, cfg.Ctl.NATSURLFrom}; got != want {
				t.Errorf("gateway, runner, ctl nats_url from %q, want %q", got, want)
			}
		})
	}
}
