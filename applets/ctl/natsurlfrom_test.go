package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// ctl's connection error says where the URL it tried came from: the file's
// [nats] listen, a nats_url, NARUN_NATS_URL or --nats-url, which an
// operator may not know ctl reads.
func TestConnectErrorNamesTheURLsSource(t *testing.T) {
	t.Parallel()
	closed := testutil.FreeAddr(t)
	other := testutil.FreeAddr(t)
	const ctl = "[ctl]\ntimeout = \"300ms\"\n"
	for _, tc := range []struct {
		name, file string
		env, flag  string
		want       string // PATH is the file
	}{
		{"listen", "[nats]\nlisten = \"" + closed + "\"\n" + ctl, "", "", "connect to NATS at nats://" + closed + " (from [nats] listen in PATH): "},
		{"key", "[nats]\nlisten = \"" + other + "\"\n" + ctl + "nats_url = \"nats://" + closed + "\"\n", "", "", "connect to NATS at nats://" + closed + " (from [ctl] nats_url in PATH): "},
		{"environment", ctl + "nats_url = \"nats://" + other + "\"\n", "nats://" + closed, "", "connect to NATS at nats://" + closed + " (from NARUN_NATS_URL): "},
		{"flag", ctl, "nats://" + other, "nats://" + closed, "connect to NATS at nats://" + closed + " (from --nats-url): "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, dir: t.TempDir()}
			h.config = filepath.Join(h.dir, "narun.toml")
			if err := os.WriteFile(h.config, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			env := []string{asProcess + "=1", quickExit}
			if tc.env != "" {
				env = append(env, "NARUN_NATS_URL="+tc.env)
			}
			args := []string{"node", "list"}
			if tc.flag != "" {
				args = append([]string{"--nats-url", tc.flag}, args...)
			}
			r := h.exec("", nil, env, args)
			if want := strings.ReplaceAll(tc.want, "PATH", h.config); r.code != 1 || !strings.Contains(r.err, want) {
				t.Errorf("ctl node list: exit %d, stderr\n%s\nwant exit 1 and %q", r.code, r.err, want)
			}
		})
	}
}

// Where nothing sets the URL, the error says so and what would: the
// default is 4222, which a test must not dial, so this reads the error
// ctl builds for it.
func TestConnectErrorNamesTheDefault(t *testing.T) {
	t.Parallel()
	got := connectError(config.DefaultNATSURL+urlSource(""), nats.ErrNoServers).Error()
	if want := "connect to NATS at nats://127.0.0.1:4222 (the default; set --nats-url or [ctl] nats_url): nats: no servers available"; !strings.HasPrefix(got, want) {
		t.Errorf("error %q, want %q", got, want)
	}
}
