package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/narun/narun/applets/internal/config"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

// loadFailsWith loads a config file of body and wants the error to be
// its path followed by want.
func loadFailsWith(t *testing.T, body, want string) {
	t.Helper()
	p := writeConfig(t, body)
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	if want := p + want; err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
}

const example = "../../../testdata/narun.toml"

// exampleWithExamples is testdata/narun.toml with its example settings,
// the lines commented out as "#key = value", put in.
func exampleWithExamples(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if len(l) > 1 && l[0] == '#' && l[1] != ' ' {
			lines[i] = l[1:]
		}
	}
	return writeConfig(t, strings.Join(lines, "\n"))
}

// A copy of testdata/narun.toml changes nothing: what it sets is what
// no file gives.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	cfg, err := config.Load(example, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Load(writeConfig(t, ""), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	// The file spells out what the empty default means.
	want.Path, want.LogFormat, want.Content = example, "text", cfg.Content
	// The same URL, which the file's listen now gives.
	for _, c := range []*config.Client{&want.Gateway.Client, &want.Runner.Client, &want.Ctl.Client} {
		c.NATSURLFrom = "[nats] listen in " + example
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("testdata/narun.toml is not the defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

// The example settings are keys narun accepts, with values of their types.
func TestExampleConfigExamplesLoad(t *testing.T) {
	cfg, err := config.Load(exampleWithExamples(t), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.ServerName != "edge-1" || cfg.NATS.MaxPayload != 1<<20 || cfg.NATS.JetStream.MaxStore != 1<<30 {
		t.Errorf("nats table not read: %+v", cfg.NATS)
	}
	if len(cfg.Gateway.Routes) != 1 || cfg.Gateway.Routes[0].Timeout.D() != 10*time.Second || cfg.Gateway.Routes[0].Service != "hello" {
		t.Errorf("gateway routes not read: %+v", cfg.Gateway.Routes)
	}
	if cfg.Runner.Labels["role"] != "edge" || cfg.Ctl.Timeout.D() != 15*time.Second {
		t.Errorf("runner/ctl tables not read: %+v %+v", cfg.Runner, cfg.Ctl)
	}
	if len(cfg.NATS.Leafnodes.Remotes) != 1 || len(cfg.NATS.Users) != 2 {
		t.Errorf("array tables not read: %+v", cfg.NATS)
	} else if cfg.NATS.Users[0].Role != config.RoleAdmin || cfg.NATS.Users[1].Role != config.RoleApp || len(cfg.NATS.AppNKeys) != 1 {
		t.Errorf("roles not read: %+v", cfg.NATS)
	}
}

func TestStrictErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key in table", "[gateway]\nlisten = \":8080\"\nlisne = \":1\"\n", []string{":3:", `"gateway.lisne"`}},
		{"unknown top-level key", "data_dir = \"/x\"\n\nbogus = 1\n", []string{":3:", `"bogus"`}},
		{"unknown key in array table", "[[gateway.routes]]\npath = \"/a\"\nservise = \"a\"\n", []string{":3:", "servise"}},
		{"unknown table", "[runer]\nnode_id = \"x\"\n", []string{":1:", "runer"}},
		{"empty data dir", "log_level = \"info\"\ndata_dir = \"\"\n", []string{":2:", `key "data_dir": want a directory, got ""`}},
		{"wrong type", "[gateway]\nlisten = 8080\n", []string{":2:", "listen", "want a string, got an integer"}},
		{"bad duration", "[gateway]\ntimeout = \"soon\"\n", []string{":2:", "timeout", "invalid duration"}},
		// The decoder places a key of an entry at the same key of the last.
		{"wrong type in an entry of a list", "[[gateway.routes]]\npath = \"/a\"\n[[gateway.routes]]\npath = 2\n[[gateway.routes]]\npath = \"/c\"\n",
			[]string{":4:", `key "gateway.routes.path"`, "want a string, got an integer"}},
		{"bad size", "[gateway]\nmax_body = \"lots\"\n", []string{":2:", "max_body", "invalid size"}},
		{"syntax", "[gateway\n", []string{"table name"}},
		// The decoder counts the line break it stopped at into the next line.
		{"unclosed table header", "log_level = \"info\"\n[gateway\nlisten = \":1\"\n", []string{":2:", "table name"}},
		{"unclosed table header after a BOM", "\xef\xbb\xbflog_level = \"info\"\n[gateway\nlisten = \":1\"\n", []string{":2:", "table name"}},
		{"unterminated string", "log_level = \"info\"\nlog_format = \"text\n", []string{":2:", "cannot contain newlines"}},
		// The decoder points at the byte before a control character.
		{"control character alone on a line", "log_level = \"info\"\n\n\x01\n", []string{":3:", "control characters: '0x01'"}},
		{"control character first on a line", "log_level = \"info\"\n\x00log_format = \"text\"\n", []string{":2:", "control characters: '0x00'"}},
		{"control character in a value", "log_level = \"info\"\n\nlog_format = \"te\x7fxt\"\n", []string{":3:", "control characters: '0x7f'"}},
		{"bare carriage return", "log_level = \"info\"\n\r\n\rlog_format = \"text\"\n", []string{":3:", "control characters: '0x0d'"}},
		{"control character after a BOM", "\xef\xbb\xbflog_level = \"info\"\n\x01\n", []string{":2:", "control characters: '0x01'"}},
		{"unknown role", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\n\n[[nats.users]]\nuser = \"c\"\npassword = \"d\"\nrole = \"apps\"\n",
			[]string{":8:", `key "nats.users.role"`, `unknown role "apps"`}},
		{"nkey not a public key", "[nats]\nlisten = \"127.0.0.1:4222\"\nnkeys = [\"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF\"]\n",
			[]string{":3:", `key "nats.nkeys"`, "is not the public key of a user nkey"}},
		{"nkey seed", "[nats]\napp_nkeys = [\n  \"SUAAAGFDH6PWMORXDO6PT6BZDWQKKWUCN6VEP4A7IRRA32ZOMJODICSQXU\",\n]\n",
			[]string{`key "nats.app_nkeys"`, "a user nkey seed, the private half"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.body)
			_, err := config.Load(p, noEnv)
			if err == nil {
				t.Fatal("loaded a bad config")
			}
			for _, w := range append(tc.want, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A value of the wrong kind is refused in TOML's words: what the key
// wants and what it got, never the Go types it decodes into.
func TestTypeErrorsSayWhatTheKeyWants(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"string", "[gateway]\nlisten = 8080\n", `:2: key "gateway.listen": want a string, got an integer`},
		{"bool", "[gateway]\naccess_log = \"yes\"\n", `:2: key "gateway.access_log": want true or false, got a string`},
		{"list", "[gateway]\ntrusted_keys = \"k\"\n", `:2: key "gateway.trusted_keys": want a list of strings, got a string`},
		{"list element", "[nats]\nnkeys = [1]\n", `:2: key "nats.nkeys": want a list of strings, got a list holding an integer`},
		{"list of nkeys", "[nats]\napp_nkeys = \"k\"\n", `:2: key "nats.app_nkeys": want a list of strings, got a string`},
		{"table", "gateway = 3\n", `:1: key "gateway": want a table, got an integer`},
		{"table of strings", "[runner.labels]\nzone = 1\n", `:2: key "runner.labels.zone": want a string, got an integer`},
		{"table of strings, a string", "[runner]\nlabels = \"edge\"\n", `:2: key "runner.labels": want a table of strings, got a string`},
		{"table of strings, a list", "[runner]\nnode_id = \"n\"\nlabels = [\"edge\"]\n", `:3: key "runner.labels": want a table of strings, got a list`},
		{"array of tables", "[nats]\nusers = \"a\"\n", `:2: key "nats.users": want a list of tables, got a string`},
		{"array of tables element", "[nats]\nusers = [1]\n", `:2: key "nats.users": want a list of tables, got a list holding an integer`},
		{"key in array of tables", "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\nstrip_prefix = \"yes\"\n", `:4: key "gateway.routes.strip_prefix": want true or false, got a string`},
		{"duration", "[gateway]\ntimeout = 30\n", `:2: key "gateway.timeout": want a duration such as "30s", got an integer`},
		{"duration list", "[ctl]\ntimeout = [\"1s\"]\n", `:2: key "ctl.timeout": want a duration such as "30s", got a list`},
		{"size", "[gateway]\nmax_body = true\n", `:2: key "gateway.max_body": want a size such as "64MiB" or a number of bytes, got a boolean`},
		{"role", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = [1]\n", `:4: key "nats.users.role": want a string, "admin" or "app", got a list`},
		{"role integer", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = 5\n", `:4: key "nats.users.role": want a string, "admin" or "app", got an integer`},
		{"role boolean", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = true\n", `:4: key "nats.users.role": want a string, "admin" or "app", got a boolean`},
		{"role float", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = 1.5\n", `:4: key "nats.users.role": want a string, "admin" or "app", got a float`},
		{"role date", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = 2024-01-01\n", `:4: key "nats.users.role": want a string, "admin" or "app", got a date or time`},
		{"role table", "[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = {}\n", `:4: key "nats.users.role": want a string, "admin" or "app", got a table`},
		{"log level", "log_level = 3\n", `:1: key "log_level": want a string, got an integer`},
		{"log format", "log_format = true\n", `:1: key "log_format": want a string, got a boolean`},
		{"route match", "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\nmatch = 1\n", `:4: key "gateway.routes.match": want a string, got an integer`},
		{"route methods", "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\nmethods = \"GET\"\n", `:4: key "gateway.routes.methods": want a list of strings, got a string`},
		{"route methods element", "[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\nmethods = [1]\n", `:4: key "gateway.routes.methods": want a list of strings, got a list holding an integer`},
		{"jetstream domain", "[nats.jetstream]\ndomain = 1\n", `:2: key "nats.jetstream.domain": want a string, got an integer`},
		{"leafnodes listen", "[nats.leafnodes]\nlisten = 7422\n", `:2: key "nats.leafnodes.listen": want a string, got an integer`},
		{"remote urls", "[[nats.leafnodes.remotes]]\nurls = \"nats-leaf://h:7422\"\n", `:2: key "nats.leafnodes.remotes.urls": want a list of strings, got a string`},
		{"max connections", "[gateway]\nmax_connections = \"many\"\n", `:2: key "gateway.max_connections": want a whole number, got a string`},
		{"max payload", "[nats]\nmax_payload = [1]\n", `:2: key "nats.max_payload": want a size such as "64MiB" or a number of bytes, got a list`},
		{"server name", "[nats]\nserver_name = false\n", `:2: key "nats.server_name": want a string, got a boolean`},
		{"cluster routes", "[nats.cluster]\nroutes = \"nats-route://h:6222\"\n", `:2: key "nats.cluster.routes": want a list of strings, got a string`},
		{"float for a string", "[runner]\nnode_id = 1.5\n", `:2: key "runner.node_id": want a string, got a float`},
	} {
		t.Run(tc.name, func(t *testing.T) { loadFailsWith(t, tc.body, tc.want) })
	}
}

// The integer 0 needs no unit and was a valid duration before durations
// had their own TOML decoding.
func TestZeroDurationNeedsNoUnit(t *testing.T) {
	cfg, err := config.Load(writeConfig(t, "[gateway]\ntimeout = 0\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.Timeout != 0 {
		t.Errorf("timeout = %v, want 0", cfg.Gateway.Timeout)
	}
}

// One load names every unknown key, each on its line, and an unknown
// table once rather than once per key inside it.
func TestStrictNamesEveryUnknownKey(t *testing.T) {
	p := writeConfig(t, "[gateway]\nlisne = \":1\"\n[runer]\nnode_id = \"x\"\nlabels = {}\n[ctl]\ntimout = \"1s\"\n")
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	want := []string{
		p + `:2: unknown key "gateway.lisne" (did you mean "gateway.listen"?)`,
		p + `:3: unknown key "runer" (did you mean "runner"?)`,
		p + `:7: unknown key "ctl.timout" (did you mean "ctl.timeout"?)`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// An unknown key that is one or two edits from a single key of its table
// is named with that key, and a top-level key written below a table
// header, which TOML reads as that table's, is named as the top-level
// key it is. A key near two, or near none, gets no guess.
func TestStrictSuggestsTheKeyMeant(t *testing.T) {
	p := writeConfig(t, "[gateway]\nadmin_listn = \":1\"\n[runner]\nheartbeat_intervl = \"5s\"\ndata_dir = \"/d\"\n"+
		"[runer.labels]\nx = \"y\"\n[ctl]\nnats_cred = \"f\"\nnats_ckey = \"f\"\nzz = 1\n")
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	want := []string{
		p + `:2: unknown key "gateway.admin_listn" (did you mean "gateway.admin_listen"?)`,
		p + `:4: unknown key "runner.heartbeat_intervl" (did you mean "runner.heartbeat_interval"?)`,
		p + `:5: unknown key "runner.data_dir" (did you mean the top-level "data_dir"? write it above the first table)`,
		p + `:6: unknown key "runer.labels" (did you mean "runner.labels"?)`,
		p + `:9: unknown key "ctl.nats_cred" (did you mean "ctl.nats_creds"?)`,
		p + `:10: unknown key "ctl.nats_ckey"`,
		p + `:11: unknown key "ctl.zz"`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// A table header or key written quoted, or with spaces around its dots,
// is placed on its line as a bare one is: TOML reads ["res"], [ res ] and
// res the same.
func TestStrictPlacesQuotedKeys(t *testing.T) {
	p := writeConfig(t, "[\"res\"]\nx = 1\n[ gateway ]\n\"lisne\" = \":1\"\n[runner]\n'nodeid' = \"x\"\n[ctl . \"x\"]\n")
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	want := []string{
		p + `:1: unknown key "res"`,
		p + `:4: unknown key "gateway.lisne" (did you mean "gateway.listen"?)`,
		p + `:6: unknown key "runner.nodeid" (did you mean "runner.node_id"?)`,
		p + `:7: unknown key "ctl.x"`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// Keys are case-sensitive: the decoder would set a field from a key that
// differs from its name only in case, so each such key is refused with the
// spelling it wants, once for a table and once for each key of it that is
// miscased itself. The keys of a table of values (labels) are free.
func TestStrictKeysAreCaseSensitive(t *testing.T) {
	p := writeConfig(t, "Ctl.timeout = \"1s\"\nCtl.nats_url = \"nats://h:1\"\n"+
		"[Gateway]\nlisten = \":1\"\nTimeout = \"1s\"\n"+
		"[runner]\nNode_ID = \"x\"\nNATS_URL = \"nats://h:1\"\n[runner.labels]\nZone = \"edge\"\n"+
		"[[gateway.routes]]\nPath = \"/a\"\nservice = \"a\"\n")
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a config with miscased keys")
	}
	want := []string{
		p + `:1: unknown key "Ctl.timeout" (did you mean "ctl.timeout"?)`,
		p + `:3: unknown key "Gateway" (did you mean "gateway"?)`,
		p + `:5: unknown key "Gateway.Timeout" (did you mean "gateway.timeout"?)`,
		p + `:7: unknown key "runner.Node_ID" (did you mean "runner.node_id"?)`,
		p + `:8: unknown key "runner.NATS_URL" (did you mean "runner.nats_url"?)`,
		p + `:12: unknown key "gateway.routes.Path" (did you mean "gateway.routes.path"?)`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}

	cfg, err := config.Load(writeConfig(t, "[runner.labels]\nZone = \"edge\"\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runner.Labels["Zone"] != "edge" {
		t.Errorf("labels = %v, want Zone = edge", cfg.Runner.Labels)
	}
}

// A file of a hundred unknown keys names the first ones and counts the
// rest.
func TestStrictCountsUnknownKeysPastTheFirst(t *testing.T) {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "k%d = 1\n", i)
	}
	p := writeConfig(t, b.String())
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 21 || lines[0] != p+`:1: unknown key "k0"` || lines[20] != p+": 80 more unknown keys" {
		t.Errorf("%d lines: first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
}

func TestMissingExplicitFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.toml"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("error = %v, want one naming the file", err)
	}
}

func TestNoFileMeansDefaults(t *testing.T) {
	t.Chdir(t.TempDir())
	saved := config.SearchPath
	config.SearchPath = []string{"narun.toml"}
	t.Cleanup(func() { config.SearchPath = saved })
	cfg, err := config.Load("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != "" || cfg.Gateway.Listen != ":8080" || cfg.NATS.Listen != "0.0.0.0:4222" || cfg.Runner.AdminListen != ":9101" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

// The content decoded is kept: the gateway compares the file with it, and
// an edit made while the process started must count as a change.
func TestLoadKeepsTheContentItDecoded(t *testing.T) {
	const loaded = "[gateway]\ntimeout = \"5s\"\n"
	p := writeConfig(t, loaded)
	cfg, err := config.Load(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("[gateway]\ntimeout = \"6s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if string(cfg.Content) != loaded {
		t.Errorf("content %q, want the one decoded, %q", cfg.Content, loaded)
	}
}

func TestEnvironment(t *testing.T) {
	p := writeConfig(t, "data_dir = \"/from/file\"\n[runner]\nnats_url = \"nats://file:4222\"\n")
	env := map[string]string{"NARUN_NATS_URL": "nats://env:4222", "NARUN_DATA_DIR": "/from/env"}
	cfg, err := config.Load(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/env" || cfg.Runner.NATSURL != "nats://env:4222" || cfg.Gateway.NATSURL != "nats://env:4222" {
		t.Fatalf("environment did not override the file: %+v", cfg)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]config.Size{"0": 0, "512": 512, "1KiB": 1024, "64MiB": 64 << 20, "1MB": 1000000, "2G": 2 << 30, "1TiB": 1 << 40, "2TB": 2e12, "1T": 1 << 40} {
		got, err := config.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "99999999999GiB"} {
		if _, err := config.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

// A duration or size written well but too large for narun to hold is
// named as too large, not as one written wrong.
func TestTooLargeSaysSo(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"duration", "[gateway]\ntimeout = \"10000000h\"\n", `:2: key "gateway.timeout": invalid duration "10000000h": more than the largest, 2562047h47m16.854775807s`},
		{"duration of several units", "[ctl]\ntimeout = \"2562047h48m\"\n", `:2: key "ctl.timeout": invalid duration "2562047h48m": more than the largest, 2562047h47m16.854775807s`},
		{"negative duration", "[ctl]\ntimeout = \"-10000000h\"\n", `:2: key "ctl.timeout": invalid duration "-10000000h": must not be negative`},
		{"duration of a dot", "[ctl]\ntimeout = \".s\"\n", `:2: key "ctl.timeout": invalid duration ".s": want e.g. "500ms", "30s", "5m"`},
		{"duration without a unit", "[ctl]\ntimeout = \"30\"\n", `:2: key "ctl.timeout": invalid duration "30": want e.g. "500ms", "30s", "5m"`},
		{"size", "[gateway]\nmax_body = \"99999999999TiB\"\n", `:2: key "gateway.max_body": invalid size "99999999999TiB": more than the largest, 4194304TiB`},
		{"size in bytes", "[gateway]\nmax_body = \"99999999999999999999\"\n", `:2: key "gateway.max_body": invalid size "99999999999999999999": more than the largest, 4194304TiB`},
		{"size not whole", "[gateway]\nmax_body = \"1.5GiB\"\n", `:2: key "gateway.max_body": invalid size "1.5GiB": want a whole number with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)`},
	} {
		t.Run(tc.name, func(t *testing.T) { loadFailsWith(t, tc.body, tc.want) })
	}
}

// tomlPaths lists every key path a struct type accepts, as "a.b.c".
func tomlPaths(t reflect.Type, prefix string) []string {
	var paths []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			paths = append(paths, tomlPaths(f.Type, prefix)...)
			continue
		}
		name := strings.Split(f.Tag.Get("toml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		paths = append(paths, path)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft.PkgPath() == reflect.TypeFor[config.File]().PkgPath() {
			paths = append(paths, tomlPaths(ft, path+".")...)
		}
	}
	return paths
}

// TestExampleConfigIsComplete keeps testdata/narun.toml a complete
// reference: every key narun accepts appears in it, as a default or as an
// example.
func TestExampleConfigIsComplete(t *testing.T) {
	var f config.File
	md, err := toml.DecodeFile(exampleWithExamples(t), &f)
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, k := range md.Keys() {
		shown[k.String()] = true
	}
	for _, path := range tomlPaths(reflect.TypeFor[config.File](), "") {
		if !shown[path] {
			t.Errorf("testdata/narun.toml does not show key %q", path)
		}
	}
}

// Routes travel through narun-routes as JSON, written by ctl and read by
// every gateway; a size must survive the trip in both spellings.
func TestRouteSizeJSON(t *testing.T) {
	cases := []struct {
		in      string
		want    config.Size
		wantErr bool
	}{
		{`{"path":"/","service":"s","max_body":1048576}`, 1 << 20, false},
		{`{"path":"/","service":"s","max_body":"2MiB"}`, 2 << 20, false},
		{`{"path":"/","service":"s"}`, 0, false},
		{`{"path":"/","service":"s","max_body":-1}`, 0, true},
		{`{"path":"/","service":"s","max_body":1.5}`, 0, true},
		{`{"path":"/","service":"s","max_body":true}`, 0, true},
		// Past 2^53 a float64 rounds, past int64 it converts differently
		// on amd64 and arm64: sizes are read exactly.
		{`{"path":"/","service":"s","max_body":9007199254740993}`, 9007199254740993, false},
		{`{"path":"/","service":"s","max_body":9223372036854775807}`, 9223372036854775807, false},
		{`{"path":"/","service":"s","max_body":9223372036854775808}`, 0, true},
		{`{"path":"/","service":"s","max_body":1e6}`, 1000000, false},
	}
	for _, c := range cases {
		var r config.Route
		err := json.Unmarshal([]byte(c.in), &r)
		if (err != nil) != c.wantErr || r.MaxBody != c.want {
			t.Errorf("%s: max_body %d, err %v; want %d, error %v", c.in, r.MaxBody, err, c.want, c.wantErr)
		}
	}
	b, err := json.Marshal(config.Route{Path: "/", Service: "s", MaxBody: 3 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var back config.Route
	if err := json.Unmarshal(b, &back); err != nil || back.MaxBody != 3<<20 {
		t.Errorf("round trip of %s: %d, %v", b, back.MaxBody, err)
	}
}

// Where places a key for an error about its value, which only a check after
// loading can refuse.
func TestWhere(t *testing.T) {
	p := writeConfig(t, "log_level = \"info\"\n\n[runner]\nnode_id = \"n\"\n# heartbeat_interval = \"1s\"\nheartbeat_interval = \"40s\"\n\n[nats.cluster]\npassword = \"p\"\n")
	cfg, err := config.Load(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"runner.heartbeat_interval": p + ":6",
		"log_level":                 p + ":1",
		"runner.labels":             p,
		// No [[nats.users]] entry: not the "password" of another table.
		"nats.users[0].password": p,
		"nats.cluster.password":  p + ":9",
	} {
		if got := cfg.Where(key); got != want {
			t.Errorf("Where(%q) = %q, want %q", key, got, want)
		}
	}
	// A value left to its default (a port taken) is not placed at the key
	// of the same name in another table.
	q := writeConfig(t, "[gateway]\nlisten = \":8080\"\n\n[nats]\nmax_payload = \"1MiB\"\n")
	if got := (config.File{Path: q}).Where("nats.listen"); got != q {
		t.Errorf("Where(nats.listen) = %q, want %q: the file has no such key", got, q)
	}
	if got := config.Defaults().Where("runner.heartbeat_interval"); got != "" {
		t.Errorf("Where without a file = %q, want \"\"", got)
	}
}

// Every value of the wrong type is named, in the order of the lines, as
// a spec's are.
func TestTypeErrorsAllInLineOrder(t *testing.T) {
	p := writeConfig(t, "[runner]\n"+
		"labels = \"edge\"\n"+ // 2
		"heartbeat_interval = 5\n"+ // 3
		"[gateway]\n"+
		"timeout = true\n"+ // 5
		"[[gateway.routes]]\npath = 1\n") // 7
	want := []string{
		p + `:2: key "runner.labels": want a table of strings, got a string`,
		p + `:3: key "runner.heartbeat_interval": want a duration such as "30s", got an integer`,
		p + `:5: key "gateway.timeout": want a duration such as "30s", got a boolean`,
		p + `:7: key "gateway.routes.path": want a string, got an integer`,
	}
	for range 5 { // the decoder meets keys in map order
		_, err := config.Load(p, noEnv)
		if err == nil {
			t.Fatal("loaded a file of wrong types")
		}
		if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
			t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
		}
	}
}

// Unknown keys and values of the wrong type come in one error, in the
// order of their lines: named a round at a time, a user who fixed the
// types met the typos only at the next try.
func TestUnknownKeysWithTypeErrors(t *testing.T) {
	p := writeConfig(t, "[runner]\n"+
		"heartbeat_interval = \"5s\"\n"+
		"heartbeat_intervl = \"5s\"\n"+ // 3
		"[gateway]\n"+
		"timeout = true\n"+ // 5
		"admin_listn = \":1\"\n") // 6
	want := []string{
		p + `:3: unknown key "runner.heartbeat_intervl" (did you mean "runner.heartbeat_interval"?)`,
		p + `:5: key "gateway.timeout": want a duration such as "30s", got a boolean`,
		p + `:6: unknown key "gateway.admin_listn" (did you mean "gateway.admin_listen"?)`,
	}
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a file of unknown keys and wrong types")
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// Past the first 20 in line order, each kind has its own count.
func TestUnknownKeysWithTypeErrorsCounted(t *testing.T) {
	var b strings.Builder
	b.WriteString("[gateway]\ntimeout = true\n")
	for i := range 25 {
		fmt.Fprintf(&b, "k%d = 1\n", i)
	}
	b.WriteString("[runner]\nheartbeat_interval = 5\n")
	p := writeConfig(t, b.String())
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		p + `:2: key "gateway.timeout": want a duration such as "30s", got a boolean`,
		p + `:3: unknown key "gateway.k0"`,
		p + `:21: unknown key "gateway.k18"`,
		p + ": 6 more unknown keys",
		p + ": 1 more values of the wrong type",
	}
	if len(lines) != 22 || !slices.Equal([]string{lines[0], lines[1], lines[19], lines[20], lines[21]}, want) {
		t.Errorf("error:\n%s\nwant 22 lines, among them:\n%s", err, strings.Join(want, "\n"))
	}
}

// A value of the wrong type stops the decoder, but not the checks after
// it: the file's other problems come in the same error, in line order,
// so that one run names them all.
func TestTypeErrorsWithLoadChecks(t *testing.T) {
	p := writeConfig(t, "log_format = 1\n"+
		"data_dir = \"\"\n"+ // 2
		"[gateway]\n"+
		"timeout = true\n") // 4
	want := []string{
		p + `:1: key "log_format": want a string, got an integer`,
		p + `:2: key "data_dir": want a directory, got "" (leave the key out for the default, ` + config.DefaultDataDir() + `)`,
		p + `:4: key "gateway.timeout": want a duration such as "30s", got a boolean`,
	}
	_, err := config.Load(p, noEnv)
	if err == nil {
		t.Fatal("loaded a bad config")
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// JoinByLine orders the problems errors.Join joined, at any depth, by
// their lines, and keeps an error that wraps several ("%w: %w") whole:
// split, the words around them would be lost.
func TestJoinByLine(t *testing.T) {
	line := func(n int) error { return fmt.Errorf("f.toml:%d: problem %d", n, n) }
	wrapped := fmt.Errorf("f.toml:2: %w: %w", fmt.Errorf("one"), fmt.Errorf("two"))
	err := config.JoinByLine("f.toml", errors.Join(line(5), errors.Join(line(3), nil, fmt.Errorf("no line"))), nil, wrapped, line(1))
	want := "f.toml:1: problem 1\nf.toml:2: one: two\nf.toml:3: problem 3\nf.toml:5: problem 5\nno line"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if err := config.JoinByLine("f.toml", nil, errors.Join(nil)); err != nil {
		t.Fatalf("got %v, want nil", err)
	}
}
