package runner

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/testutil"
)

// A runner stopped while NATS is unreachable logs no warning about the
// buckets it was still opening: the stop cancelled that, nothing failed,
// and a warning at every stop of a node without NATS is noise in the
// operator's alerting.
func TestStopWhileOfflineWarnsNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	offline, err := nats.Connect("nats://"+testutil.FreeAddr(t), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(offline.Close)
	r := startRunner(t, c, func(o *Options) { o.Conn = offline })
	r.stop()
	for line := range strings.Lines(r.logs.String()) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "context canceled") {
			t.Errorf("stop logged a warning: %s", line)
		}
	}
}
