package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// heartbeatOf reads the heartbeat of node and its revision.
func heartbeatOf(t *testing.T, c *cluster) (state.Node, uint64) {
	t.Helper()
	e, err := c.nodes.Get(context.Background(), node)
	if err != nil {
		return state.Node{}, 0
	}
	var n state.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return n, e.Revision()
}

// waitHeartbeats waits until n more heartbeats of node were written.
func waitHeartbeats(t *testing.T, c *cluster, n uint64) {
	t.Helper()
	_, from := heartbeatOf(t, c)
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d more heartbeats", n), func() bool {
		_, rev := heartbeatOf(t, c)
		return rev >= from+n
	})
}

// Two runners with the same node id hide each other's heartbeat: each logs
// the clash once, names the other in its heartbeat, and keeps its apps.
func TestDuplicateNodeID(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	a := startRunner(t, c, nil)
	before := a.wait(t, "hello", "healthy", allIn(1, state.Healthy))[0]
	const clash = "node id n1 is also used by another runner"
	// A runner's own heartbeats, the first one included, are no clash.
	waitHeartbeats(t, c, 5)
	if strings.Contains(a.logs.String(), clash) {
		t.Fatalf("a runner alone reported a clash:\n%s", a.logs)
	}

	b := startRunner(t, c, nil)
	b.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	for _, p := range [][2]*testRunner{{a, b}, {b, a}} {
		tr, other := p[0], p[1]
		want := fmt.Sprintf("%s (host %s, boot id %s): give each node its own node_id", clash, other.host, other.boot)
		testutil.Eventually(t, 10*time.Second, "the clash in the log of boot "+tr.boot, func() bool {
			return strings.Contains(tr.logs.String(), want)
		})
	}
	testutil.Eventually(t, 10*time.Second, "the heartbeat to name the other runner", func() bool {
		n, _ := heartbeatOf(t, c)
		other := map[string]string{a.boot: b.boot, b.boot: a.boot}[n.Boot]
		return other != "" && slices.ContainsFunc(n.Duplicates, func(d state.Duplicate) bool { return d.Boot == other })
	})
	page := httptest.NewRecorder()
	a.AdminHandler().ServeHTTP(page, httptest.NewRequest("GET", "/", nil))
	if !strings.Contains(page.Body.String(), clash) {
		t.Errorf("admin page does not show the clash:\n%s", page.Body)
	}
	// Found again at every heartbeat, reported once.
	waitHeartbeats(t, c, 10)
	for _, tr := range []*testRunner{a, b} {
		if n := strings.Count(tr.logs.String(), clash); n != 1 {
			t.Errorf("boot %s reported the clash %d times", tr.boot, n)
		}
	}
	if after := a.of("hello"); len(after) != 1 || after[0].ID != before.ID || after[0].PID != before.PID || after[0].State != state.Healthy {
		t.Errorf("instance changed by the clash: %+v -> %+v", before, after)
	}
}
