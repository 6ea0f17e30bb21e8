package ctl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// app events --json printed a runner's event as the runner sent it, whose
// empty fields are left out: a pending instance's line had no pid, reason
// or started, a running one's had them, and a script reading .pid had to
// tell a missing key from 0, which every other --json spares it.
func TestAppEventsJSONGivesEveryKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	f := h.follow(h.url, "app", "events", "web", "--json")
	testutil.Eventually(t, 20*time.Second, "app events waiting", func() bool { return strings.Contains(f.errs.String(), "waiting for its events") })
	b, err := json.Marshal(state.Event{Instance: state.Instance{App: "web", Node: "vm", ID: "web-0", State: state.Pending}, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.js.Conn().Publish(names.EventSubject("web", "vm"), b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the event printed", func() bool { return strings.HasSuffix(f.out.String(), "\n") })
	f.stop(t)
	items := lines(t, f.out.String())
	for _, k := range []string{"app", "node", "id", "slot", "state", "pid", "restarts", "reason", "version", "fingerprint", "exit_code", "started", "healthy", "landlock_abi", "since", "time"} {
		if _, ok := items[0][k]; !ok {
			t.Errorf("event has no key %q: %s", k, f.out.String())
		}
	}
}
