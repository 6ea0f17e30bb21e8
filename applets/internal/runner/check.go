package runner

import (
	"fmt"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/store"
)

// CheckConfig refuses a [runner] table whose node would keep dropping out
// of narun-nodes: the bucket forgets a heartbeat store.NodeTTL after it was
// written, whatever the interval, and a node without one looks gone to
// node list, app status and deploy. Half the TTL leaves room for one
// heartbeat lost on the way.
func CheckConfig(cfg config.File) error {
	if limit := store.NodeTTL / 2; cfg.Runner.HeartbeatInterval.D() > limit {
		where := ""
		if w := cfg.Where("runner.heartbeat_interval"); w != "" {
			where = w + ": "
		}
		return fmt.Errorf("%skey %q: want at most %s, got %s: narun-nodes forgets a heartbeat %s after it was written, and the node would look gone between two",
			where, "runner.heartbeat_interval", limit, cfg.Runner.HeartbeatInterval.D(), store.NodeTTL)
	}
	return nil
}
