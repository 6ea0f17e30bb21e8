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
	eachURLSource(t, closed, func(t *testing.T, r result, from string) {
		if want := "connect to NATS at nats://" + closed + " (from " + from + "): "; r.code != 1 || !strings.Contains(r.err, want) {
			t.Errorf("ctl node list: exit %d, stderr\n%s\nwant exit 1 and %q", r.code, r.err, want)
		}
	})
}

// eachURLSource runs ctl node list, with a timeout of 300ms, once for
// each place that can give it the URL of addr, the others naming another
// address, and hands check what it did and the place as ctl names it.
func eachURLSource(t *testing.T, addr string, check func(t *testing.T, r result, from string)) {
	other := testutil.FreeAddr(t)
	const ctl = "[ctl]\ntimeout = \"300ms\"\n"
	for _, tc := range []struct {
		name, file string
		env, flag  string
		from       string // PATH is the file
		// emptyEnv sets NARUN_NATS_URL to "", as an env file or an
		// export may leave it: that is no URL, as an empty
		// NARUN_DATA_DIR is no data dir.
		emptyEnv bool
	}{
		{"listen", "[nats]\nlisten = \"" + addr + "\"\n" + ctl, "", "", "[nats] listen in PATH", false},
		{"key", "[nats]\nlisten = \"" + other + "\"\n" + ctl + "nats_url = \"nats://" + addr + "\"\n", "", "", "[ctl] nats_url in PATH", false},
		{"key, environment empty", "[nats]\nlisten = \"" + other + "\"\n" + ctl + "nats_url = \"nats://" + addr + "\"\n", "", "", "[ctl] nats_url in PATH", true},
		{"environment", ctl + "nats_url = \"nats://" + other + "\"\n", "nats://" + addr, "", "NARUN_NATS_URL", false},
		{"flag", ctl, "nats://" + other, "nats://" + addr, "--nats-url", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, dir: t.TempDir()}
			h.config = filepath.Join(h.dir, "narun.toml")
			if err := os.WriteFile(h.config, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			env := []string{asProcess + "=1", quickExit}
			if tc.env != "" || tc.emptyEnv {
				env = append(env, "NARUN_NATS_URL="+tc.env)
			}
			args := []string{"node", "list"}
			if tc.flag != "" {
				args = append([]string{"--nats-url", tc.flag}, args...)
			}
			check(t, h.exec("", nil, env, args), strings.ReplaceAll(tc.from, "PATH", h.config))
		})
	}
}

// Where nothing sets the URL, the error says so and what would: the
// default is 4222, which a test must not dial, so this reads the error
// ctl builds for it.
func TestConnectErrorNamesTheDefault(t *testing.T) {
	t.Parallel()
	got := connectError(config.DefaultNATSURL+urlSource(""), "", tlsGiven{}, nats.ErrNoServers).Error()
	if want := "connect to NATS at nats://127.0.0.1:4222 (the default; set --nats-url or [ctl] nats_url): nats: no servers available"; !strings.HasPrefix(got, want) {
		t.Errorf("error %q, want %q", got, want)
	}
}
