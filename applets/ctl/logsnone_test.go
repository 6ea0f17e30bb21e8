package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
)

// logs of a deployed app that has printed nothing says so on stderr, with
// the filters that selected none, as journalctl says "-- No entries --":
// silence looked like a wrong name or a broken pipe. stdout stays empty
// for scripts, and --json (read by scripts) and --tail 0 (which asks for
// no kept line) say nothing. -f says it once, before it waits.
func TestLogsSaysWhenNoLineIsKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	h.ok("", "deploy", h.file("quiet.toml", strings.Replace(helloSpec, `name = "hello"`, `name = "quiet"`, 1)), "--binary", elfBinary(t))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"logs", "quiet"}, "no kept log lines of quiet\n"},
		{[]string{"logs", "quiet", "--tail", "5"}, "no kept log lines of quiet\n"},
		{[]string{"logs", "quiet", "--since", "10m"}, "no kept log lines of quiet newer than 10m0s\n"},
		{[]string{"logs", "quiet", "--node", "vm", "--instance", "quiet-0", "--since", "1h"}, `no kept log lines of quiet from node "vm" from instance "quiet-0" newer than 1h0m0s` + "\n"},
		{[]string{"logs", "quiet", "--tail", "0"}, ""},
		{[]string{"logs", "quiet", "--json"}, ""},
	} {
		if r := h.ok("", c.args...); r.out != "" || r.err != c.want {
			t.Errorf("ctl %q: stdout %q, stderr %q; want none, and %q", c.args, r.out, r.err, c.want)
		}
	}

	followQuiet(t, h, h.follow(h.url, "logs", "-f", "quiet"))
}

// followQuiet checks that f, a logs -f of the app quiet, says once that it
// has no kept line and waits, then prints the first line that comes.
func followQuiet(t *testing.T, h *harness, f *following) {
	t.Helper()
	const waiting = "no kept log lines of quiet; waiting for new ones\n"
	testutil.Eventually(t, 20*time.Second, "logs -f saying it has no line", func() bool { return f.errs.String() == waiting })
	b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "quiet", Node: "vm", Instance: "quiet-0", Stream: state.Stdout, Line: "first"})
	if _, err := h.js.Publish(context.Background(), names.LogSubject("quiet", "vm", "quiet-0"), b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "logs -f printing the first line", func() bool { return strings.Contains(f.out.String(), " first\n") })
	f.stop(t)
	if f.errs.String() != waiting {
		t.Errorf("logs -f stderr: %q, want %q once", f.errs.String(), waiting)
	}
}
