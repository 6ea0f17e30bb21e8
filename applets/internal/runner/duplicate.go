package runner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/state"
)

// duplicateMemory is how long a runner found writing this node's heartbeat
// stays listed in it after it was last found: twice the life of a
// heartbeat, so one that still runs is found again before it is dropped.
const duplicateMemory = time.Minute

// duplicates are the other runners found writing this node's heartbeat,
// by boot id.
type duplicates struct {
	mu     sync.Mutex
	byBoot map[string]state.Duplicate
}

// note records d; true if it was not listed yet.
func (ds *duplicates) note(d state.Duplicate) bool {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	ds.expire(d.Seen)
	if ds.byBoot == nil {
		ds.byBoot = map[string]state.Duplicate{}
	}
	_, listed := ds.byBoot[d.Boot]
	ds.byBoot[d.Boot] = d
	return !listed
}

// recent lists the runners found within duplicateMemory before now.
func (ds *duplicates) recent(now time.Time) []state.Duplicate {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	ds.expire(now)
	return slices.SortedFunc(maps.Values(ds.byBoot), func(a, b state.Duplicate) int { return strings.Compare(a.Boot, b.Boot) })
}

func (ds *duplicates) expire(now time.Time) {
	maps.DeleteFunc(ds.byBoot, func(_ string, d state.Duplicate) bool { return now.Sub(d.Seen) > duplicateMemory })
}

// checkDuplicate reads who wrote this node's heartbeat since this runner
// last did. Another boot is another runner with the same node id (this
// runner's earlier boots are gone: their data dir lock is held by this
// one), and the operator must hear of it: each hides the other. Both keep
// their apps running, as they would without the other. An expired or
// deleted heartbeat was written by no one.
func (r *Runner) checkDuplicate(ctx context.Context, res *resources) {
	e, err := res.nodes.Get(ctx, r.node)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
			r.log.Debug("read heartbeat", "err", err)
		}
		return
	}
	var other state.Node
	if err := json.Unmarshal(e.Value(), &other); err == nil && other.Boot == r.boot {
		return
	}
	if r.dups.note(state.Duplicate{Host: other.Host, Boot: other.Boot, Seen: time.Now()}) {
		r.log.Error(fmt.Sprintf("node id %s is also used by another runner (host %s, boot id %s): give each node its own node_id",
			r.node, cmp.Or(other.Host, "unknown"), cmp.Or(other.Boot, "unknown")), "boot", r.boot)
	}
}
