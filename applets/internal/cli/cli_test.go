package cli_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
)

// Flags win over the file, the file wins over the defaults, and the
// environment sits between the two.
func TestFlagsOverrideFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	err := os.WriteFile(file, []byte(`data_dir = "/from/file"
log_level = "warn"
[gateway]
listen = ":1111"
admin_listen = ":2222"
nats_url = "nats://file:4222"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	flags := append(cli.ConfigFlags(), cli.DataDirFlag())
	flags = append(flags, cli.ClientFlags()...)
	flags = append(flags, &ucli.StringFlag{Name: "listen"}, &ucli.StringFlag{Name: "admin-listen"})
	env := map[string]string{"NARUN_DATA_DIR": "/from/env"}
	stdio := cli.IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(k string) string { return env[k] }}
	var got config.File
	run := func(c *ucli.Context, cfg config.File, log *slog.Logger) error {
		cli.Override(c, map[string]*string{"listen": &cfg.Gateway.Listen, "admin-listen": &cfg.Gateway.AdminListen})
		got = cfg
		return nil
	}
	args := []string{"gw", "--config", file, "--listen", ":3333", "--nats-url", "nats://flag:4222", "--log-level", "debug"}
	if err := cli.Service(context.Background(), stdio, args, "test", "", flags, run); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"gateway.listen (flag over file)", got.Gateway.Listen, ":3333"},
		{"gateway.admin_listen (file, no flag)", got.Gateway.AdminListen, ":2222"},
		{"gateway.nats_url (flag over file)", got.Gateway.NATSURL, "nats://flag:4222"},
		{"log_level (flag over file)", got.LogLevel, "debug"},
		{"data_dir (environment over file)", got.DataDir, "/from/env"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
}

// A wrong log level or format in the file is an error of the file, naming
// its line and key like a wrong type, and exits 1; the same mistake in a
// flag is a usage error (exit 2).
func TestLogSettingsErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "narun.toml")
	for _, tt := range []struct {
		name, body string
		args       []string
		code       int
		want       string
	}{
		{"file level", "data_dir = \"/x\"\nlog_level = \"verbose\"\n", nil, 1,
			file + `:2: key "log_level": want debug, info, warn or error, got "verbose"`},
		{"file format", "log_format = \"xml\"\n", nil, 1,
			file + `:1: key "log_format": want text or json, got "xml"`},
		{"flag level", "", []string{"--log-level", "loud"}, 2,
			`--log-level: want debug, info, warn or error, got "loud"`},
		{"flag over a wrong file", "log_level = \"verbose\"\n", []string{"--log-level", "debug"}, 0, ""},
		// Named beside a value of the wrong type, not at the next run.
		{"file level beside a wrong type", "log_level = \"verbose\"\n[gateway]\ntimeout = true\n", nil, 1,
			file + `:1: key "log_level": want debug, info, warn or error, got "verbose"` + "\n" +
				file + `:3: key "gateway.timeout": want a duration such as "30s", got a boolean`},
		{"flag over a wrong file beside a wrong type", "log_level = \"verbose\"\n[gateway]\ntimeout = true\n", []string{"--log-level", "debug"}, 1,
			file + `:3: key "gateway.timeout": want a duration such as "30s", got a boolean`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			stdio := cli.IO{Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(string) string { return "" }}
			args := append([]string{"nats", "--config", file}, tt.args...)
			err := cli.Service(context.Background(), stdio, args, "test", "", cli.ConfigFlags(),
				func(*ucli.Context, config.File, *slog.Logger) error { return nil })
			if got := cli.ExitCode(err); got != tt.code {
				t.Fatalf("exit %d (%v), want %d", got, err, tt.code)
			}
			if msg := stderr.String() + errorText(err); !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want it to contain %q", msg, tt.want)
			}
		})
	}
}

// A relative --data-dir is made absolute against the working directory,
// as the file's and the environment's are.
func TestRelativeDataDirFlag(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	stdio := cli.IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	var got string
	run := func(_ *ucli.Context, cfg config.File, _ *slog.Logger) error { got = cfg.DataDir; return nil }
	flags := append(cli.ConfigFlags(), cli.DataDirFlag())
	if err := cli.Service(context.Background(), stdio, []string{"nats", "--data-dir", "state/narun"}, "test", "", flags, run); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "state", "narun"); got != want {
		t.Errorf("data dir = %q, want %q", got, want)
	}
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestServiceRefusesArguments(t *testing.T) {
	stdio := cli.IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	called := false
	err := cli.Service(context.Background(), stdio, []string{"nats", "--config", "/dev/null", "extra"}, "test", "", cli.ConfigFlags(),
		func(*ucli.Context, config.File, *slog.Logger) error { called = true; return nil })
	var usage *cli.ExitError
	if called || !errors.As(err, &usage) || usage.Code != 2 || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("called %v, err %v; want a usage error (exit 2) naming the argument", called, err)
	}
}
