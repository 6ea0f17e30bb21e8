package gateway

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/testutil"
)

// TestFailuresLoggedAFewOfEachKind: a burst of failures of one route and
// status logs failBurst lines and then one with the count and the last
// request id; another route's failures are not held back by it.
func TestFailuresLoggedAFewOfEachKind(t *testing.T) {
	t.Parallel()
	var logs testutil.LogBuffer
	f := failLog{log: slog.New(slog.NewTextHandler(&logs, nil))}
	for i := range failBurst + 15 {
		f.record(slog.LevelWarn, 503, "no responders", "/a/", "a", fmt.Sprintf("rid-a-%d", i))
	}
	for i := range 3 {
		f.record(slog.LevelWarn, 504, "no reply within 30s", "/b/", "b", fmt.Sprintf("rid-b-%d", i))
	}
	f.flush()
	out := logs.String()
	if n := strings.Count(out, `msg="request failed"`+" status=503"); n != failBurst {
		t.Errorf("%d lines for /a/, want %d:\n%s", n, failBurst, out)
	}
	if n := strings.Count(out, `msg="request failed"`+" status=504"); n != 3 {
		t.Errorf("%d lines for /b/, want 3:\n%s", n, out)
	}
	want := fmt.Sprintf(`msg="requests failed like this one, not logged" count=15 within=10s status=503 reason="no responders" route=/a/ service=a request_id=rid-a-%d`, failBurst+14)
	if !strings.Contains(out, want) || strings.Count(out, "not logged") != 1 {
		t.Errorf("want one summary line %s in:\n%s", want, out)
	}
	// A new window logs again.
	f.record(slog.LevelWarn, 503, "no responders", "/a/", "a", "rid-next")
	if !strings.Contains(logs.String(), "request_id=rid-next") {
		t.Error("a failure in the next window was not logged")
	}
	f.flush()
}
