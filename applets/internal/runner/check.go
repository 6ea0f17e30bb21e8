package runner

import (
	"fmt"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/store"
)

// CheckConfig refuses a [runner] table whose node would keep dropping out
// of narun-nodes: the bucket forgets a heartbeat store.NodeTTL after it was
// written, whatever the interval, and a node without one looks gone to
// node list, app status and deploy. Half the TTL leaves room for one
// heartbeat lost on the way.
//
// It also refuses a malformed trusted key, as the file's other bad values
// are refused, with the file and line, before the runner connects.
func CheckConfig(cfg config.File) error {
	where := func(key string) string {
		if w := cfg.Where(key); w != "" {
			return w + ": "
		}
		return ""
	}
	if limit := store.NodeTTL / 2; cfg.Runner.HeartbeatInterval.D() > limit {
		return fmt.Errorf("%skey %q: want at most %s, got %s: narun-nodes forgets a heartbeat %s after it was written, and the node would look gone between two",
			where("runner.heartbeat_interval"), "runner.heartbeat_interval", limit, cfg.Runner.HeartbeatInterval.D(), store.NodeTTL)
	}
	for i, pub := range cfg.Runner.TrustedKeys {
		if err := signing.CheckPublic(pub); err != nil {
			return fmt.Errorf("%skey %q: %w", where("runner.trusted_keys"), fmt.Sprintf("runner.trusted_keys[%d]", i), err)
		}
	}
	return nil
}
