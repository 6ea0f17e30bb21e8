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

// A --node or --instance that matches none of an app's kept lines (a typo)
// is told from an app that printed nothing there: a warning names those
// that have lines. With -f the command still waits for the lines.
func TestLogsUnmatchedNodeOrInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	publish := func(node, inst, line string) {
		t.Helper()
		b, _ := json.Marshal(state.LogLine{Time: time.Now(), App: "web", Node: node, Instance: inst, Stream: "stdout", Line: line})
		if _, err := h.js.Publish(ctx, names.LogSubject("web", node, inst), b); err != nil {
			t.Fatal(err)
		}
	}
	publish("vm", "web-0", "one")
	publish("vm2", "web-1", "two")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"logs", "web", "--node", "nope"}, `warning: no kept line of web is from node "nope" (nodes with lines: "vm", "vm2")`},
		{[]string{"logs", "web", "--instance", "nope"}, `warning: no kept line of web is from instance "nope" (instances with lines: "web-0", "web-1")`},
		{[]string{"logs", "web", "--node", "vm", "--instance", "web-1"}, `warning: no kept line of web is from instance "web-1" on node "vm" (instances with lines there: "web-0")`},
	} {
		r := h.ok("", c.args...)
		if r.out != "" || !strings.Contains(r.err, c.want) {
			t.Errorf("ctl %q: stdout %q, stderr %q, want %q", c.args, r.out, r.err, c.want)
		}
	}
	// Lines that exist but --tail 0 left out are no typo.
	if r := h.ok("", "logs", "web", "--node", "vm", "--tail", "0"); r.err != "" {
		t.Errorf("logs --tail 0 of a node with lines: %q", r.err)
	}

	f := h.follow(h.url, "logs", "-f", "web", "--node", "vm3")
	testutil.Eventually(t, 10*time.Second, "logs -f warning", func() bool { return strings.Contains(f.errs.String(), `no kept line of web is from node "vm3"`) })
	publish("vm3", "web-2", "three")
	testutil.Eventually(t, 10*time.Second, "logs -f printing the new node's line", func() bool { return strings.Contains(f.out.String(), " three\n") })
	f.stop(t)
}
