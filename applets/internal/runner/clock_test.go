package runner

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// A device without a real-time clock boots at 1970, or at the time
// fake-hwclock saved, and NTP steps its clock by months once it answers,
// while the apps started before run on. A heartbeat after the step says
// how long they have run, on the clock as it reads then: a heartbeat's
// time less an instance's start had counted the step as uptime, and ctl's
// --wait an instance healthy for a second as healthy for months.
func TestHeartbeatAfterClockStep(t *testing.T) {
	c := newCluster(t, nil)
	var step atomic.Int64
	tr := startTunedRunner(t, c, nil, func(r *Runner) {
		r.wall = func(now time.Time) time.Time { return now.Add(time.Duration(step.Load())) }
	})
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	tr.wait(t, "hello", "1 healthy", allIn(1, state.Healthy))
	const year = 365 * 24 * time.Hour
	step.Store(int64(year))
	var n state.Node
	testutil.Eventually(t, 10*time.Second, "a heartbeat written after the step", func() bool {
		e, err := c.nodes.Get(context.Background(), node)
		return err == nil && json.Unmarshal(e.Value(), &n) == nil && n.Time.After(time.Now().Add(year/2))
	})
	if age := n.Time.Sub(n.Started); age > year/2 {
		t.Errorf("runner started %s before its heartbeat, counting the clock's step", age)
	}
	if len(n.Instances) != 1 {
		t.Fatalf("instances in the heartbeat: %+v", n.Instances)
	}
	in := n.Instances[0]
	if age := n.Time.Sub(in.Started); age > year/2 {
		t.Errorf("instance started %s before the heartbeat, counting the clock's step", age)
	}
	if age := n.Time.Sub(in.Since); age > year/2 || age < 0 {
		t.Errorf("instance %s for %s before the heartbeat, counting the clock's step", in.State, age)
	}
	// Prometheus takes time() less the start time for the uptime.
	rec := httptest.NewRecorder()
	tr.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var started float64
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(line, "narun_runner_start_time_seconds "); ok {
			started, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if at := time.Unix(int64(started), 0); at.Before(time.Now().Add(year / 2)) {
		t.Errorf("narun_runner_start_time_seconds %v (%s), before the clock's step\n%s", started, at, rec.Body.String())
	}
}
