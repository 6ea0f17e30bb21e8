package applets_test

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// TestFailedReloadSaysWhatTriggeredIt breaks the gateway's configuration
// file: the file watch and then a SIGHUP each fail to reload it, and must
// say so in one wording, with what triggered the reload and the same
// attributes (the error names the file and line).
func TestFailedReloadSaysWhatTriggeredIt(t *testing.T) {
	srv := natstest.Start(t)
	for _, tc := range []struct {
		applet string
		args   func(dir string) []string
	}{
		{"gw", func(dir string) []string {
			return []string{"--nats-url", srv.ClientURL(), "--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t)}
		}},
		{"up", func(dir string) []string {
			return []string{"--data-dir", dir, "--nats-listen", testutil.FreeAddr(t),
				"--listen", testutil.FreeAddr(t), "--admin-listen", testutil.FreeAddr(t), "--runner-admin-listen", ""}
		}},
	} {
		t.Run(tc.applet, func(t *testing.T) {
			dir := t.TempDir()
			path := gatewayConfig(t, dir)
			args := append([]string{tc.applet, "--config", path, "--log-format", "json"}, tc.args(dir)...)
			p := startNotified(t, dir, args...)
			expectNotice(t, p.notify, "READY=1", &p.out)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s output:\n%s", tc.applet, p.out.String())
				}
			})

			if err := os.WriteFile(path, []byte("[[gateway.routes]]\npath = \"/a/\"\nservice =\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			failed := func(trigger string) map[string]any {
				for l := range strings.Lines(p.out.String()) {
					var line map[string]any
					if json.Unmarshal([]byte(l), &line) == nil && line["level"] == "ERROR" && line["trigger"] == trigger {
						return line
					}
				}
				return nil
			}
			testutil.Eventually(t, 20*time.Second, "the file watch's failed reload", func() bool { return failed("file change") != nil })
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 20*time.Second, "the SIGHUP's failed reload", func() bool { return failed("SIGHUP") != nil })

			watched, hup := failed("file change"), failed("SIGHUP")
			for _, line := range []map[string]any{watched, hup} {
				delete(line, "time")
				delete(line, "trigger")
				if err, _ := line["err"].(string); !strings.Contains(err, path+":3") {
					t.Errorf("the error does not name %s:3: %v", path, line)
				}
			}
			a, _ := json.Marshal(watched)
			b, _ := json.Marshal(hup)
			if string(a) != string(b) {
				t.Errorf("the failed reloads differ beyond their trigger:\nfile change: %s\nSIGHUP:      %s", a, b)
			}
		})
	}
}
