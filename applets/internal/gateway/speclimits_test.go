package gateway

import (
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A route value that an app spec refuses is refused in narun.toml too,
// with the file, the field's line and the field named, and a narun-routes
// entry that holds it loses its app's routes only; the limit itself is
// accepted by all three.
func TestRouteValuesRefusedAsSpecsRefuseThem(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Start(t))
	var logs testutil.LogBuffer
	e := newEnvLogged(t, gwConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	e.gw.setAppEntry("kept", []byte(`[{"path":"/kept/"}]`))
	long := strings.Repeat("s", 255)
	tests := []struct {
		name string
		// over and limit set the field in TOML, overJSON and limitJSON
		// in a narun-routes entry.
		over, overJSON   string
		limit, limitJSON string
		// want follows the route's origin in the error.
		want string
	}{
		{
			name: "timeout",
			over: `timeout = "1h0m1s"`, overJSON: `"timeout":"1h0m1s"`,
			limit: `timeout = "1h"`, limitJSON: `"timeout":"1h"`,
			want: "timeout 1h0m1s: more than the maximum 1h0m0s",
		},
		{
			name: "max_body",
			over: `max_body = 1099511627777`, overJSON: `"max_body":1099511627777`,
			limit: `max_body = "1TiB"`, limitJSON: `"max_body":"1TiB"`,
			want: "max_body 1099511627777: more than the maximum 1099511627776 (1TiB)",
		},
		{
			name: "service length",
			over: `service = "` + long + `s"`, overJSON: `"service":"` + long + `s"`,
			limit: `service = "` + long + `"`, limitJSON: `"service":"` + long + `"`,
			want: "service of 256 characters: more than the maximum 255",
		},
		{
			name: "service NUL",
			over: `service = "a\u0000b"`, overJSON: `"service":"a\u0000b"`,
			limit: `service = "a.b"`, limitJSON: `"service":"a.b"`,
			want: `service "a\x00b": want a literal NATS subject (no spaces, NUL, '*', '>' or empty token)`,
		},
		{
			name: "service of the server's API",
			over: `service = "$JS.API.STREAM.DELETE.KV_narun-apps"`, overJSON: `"service":"$JS.API.STREAM.DELETE.KV_narun-apps"`,
			limit: `service = "JS.API"`, limitJSON: `"service":"JS.API"`,
			want: `service "$JS.API.STREAM.DELETE.KV_narun-apps": the $, _NARUN. and _INBOX. subjects are NATS's and narun's own, not a service's`,
		},
		{
			name: "service of replies",
			over: `service = "_INBOX.x"`, overJSON: `"service":"_INBOX.x"`,
			limit: `service = "INBOX.x"`, limitJSON: `"service":"INBOX.x"`,
			want: `service "_INBOX.x": the $, _NARUN. and _INBOX. subjects are NATS's and narun's own, not a service's`,
		},
		{
			name: "host NUL",
			over: `host = "a\u0000.example"`, overJSON: `"host":"a\u0000.example"`,
			limit: `host = "a.example"`, limitJSON: `"host":"a.example"`,
			want: `host "a\x00.example": a control character is in no request's host`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const specBase = "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n[[routes]]\npath = \"/a\"\n"
			if _, err := spec.Parse("app.toml", []byte(specBase+tc.over+"\n")); err == nil {
				t.Fatalf("spec: %s accepted; this test is of values specs refuse", tc.over)
			}
			if _, err := spec.Parse("app.toml", []byte(specBase+tc.limit+"\n")); err != nil {
				t.Fatalf("spec: %s refused: %v", tc.limit, err)
			}

			file := filepath.Join(t.TempDir(), "narun.toml")
			const fileBase = "[[gateway.routes]]\npath = \"/ok\"\nservice = \"ok\"\n\n[[gateway.routes]]\npath = \"/a\"\n"
			for _, value := range []string{tc.over, tc.limit} {
				route := value + "\n"
				if !strings.HasPrefix(value, "service") {
					route += "service = \"a\"\n"
				}
				err := startWithFile(t, nc, file, fileBase+route)
				// The line of the key at fault, not of the route's header.
				want := file + `:7: route #2 (path "/a"): ` + tc.want
				switch {
				case value == tc.over && (err == nil || err.Error() != want):
					t.Errorf("narun.toml with %s: %v, want %s", value, err, want)
				case value == tc.limit && err != nil:
					t.Errorf("narun.toml with %s: %v", value, err)
				}
			}

			before := len(logs.String())
			e.gw.setAppEntry("a", []byte(`[{"path":"/a/",`+tc.overJSON+`}]`))
			if r, _, _ := e.gw.table.Load().match("a.example", "/a/", "GET"); r != nil {
				t.Errorf("narun-routes entry with %s: route %s served", tc.overJSON, r.pattern())
			}
			if r, _, _ := e.gw.table.Load().match("a.example", "/kept/", "GET"); r == nil {
				t.Errorf("narun-routes entry with %s: the other app's route is gone", tc.overJSON)
			}
			if got := logs.String()[before:]; !strings.Contains(got, `msg="ignoring routes of app" app=a`) || !strings.Contains(got, strings.Trim(strconv.Quote(tc.want), `"`)) {
				t.Errorf("narun-routes entry with %s: the log does not say why it is ignored:\n%s", tc.overJSON, got)
			}
			e.gw.setAppEntry("a", []byte(`[{"path":"/a/",`+tc.limitJSON+`}]`))
			if r, _, _ := e.gw.table.Load().match("a.example", "/a/", "GET"); r == nil {
				t.Errorf("narun-routes entry with %s: not served", tc.limitJSON)
			}
			e.gw.setAppEntry("a", nil)
		})
	}
}

// The [gateway] timeout and max_body are the values of every route that
// sets none, so they are bound as a route's own are: else a typo there
// (an extra zero) gave every such route, and every deployed app's, what
// no route may have. The error names the file, line and key.
func TestGatewayDefaultsBoundAsRoutes(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Start(t))
	tests := []struct {
		key, over, limit, want string
	}{
		{"timeout", `"1h0m1s"`, `"1h"`, "timeout 1h0m1s: more than the maximum 1h0m0s, a route's"},
		{"max_body", `1099511627777`, `"1TiB"`, "max_body 1099511627777: more than the maximum 1099511627776 (1TiB), a route's"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "narun.toml")
			for _, value := range []string{tc.over, tc.limit} {
				err := startWithFile(t, nc, file, "[gateway]\n"+tc.key+" = "+value+"\n\n[[gateway.routes]]\npath = \"/a\"\nservice = \"a\"\n")
				want := file + `:2: key "gateway.` + tc.key + `": ` + tc.want
				switch {
				case value == tc.over && (err == nil || err.Error() != want):
					t.Errorf("%s = %s: %v, want %s", tc.key, value, err, want)
				case value == tc.limit && err != nil:
					t.Errorf("%s = %s: %v", tc.key, value, err)
				}
			}
		})
	}
}

// startWithFile writes content to file and makes a gateway of it, as a
// start reads it, and returns what New said.
func startWithFile(t *testing.T, nc *nats.Conn, file, content string) error {
	t.Helper()
	writeFile(t, file, content)
	f, _, err := readConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{Config: f.Gateway, Conn: nc, ConfigPath: file, ConfigContent: loaded(t, file)})
	if err == nil {
		g.mux.close()
	}
	return err
}
