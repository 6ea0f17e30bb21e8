package gateway

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Each request the gateway fails is logged with its request id, so that
// the id a user quotes leads to the cause. While a service or NATS is down
// that is a line per request, thousands a second, which push everything
// else out of the journal (journald drops a unit's lines past 10000 in
// 30 s, the runner's among them). Past failBurst lines of one route and
// status within failWindow, lines are counted instead, and the count is
// logged with the last of them when the window ends.
const (
	failBurst  = 10
	failWindow = 10 * time.Second
)

type failKey struct {
	route  string
	status int
}

type failCount struct {
	lines                 int
	level                 slog.Level
	service, reason, last string // of the last line: its request id in last
}

type failLog struct {
	log *slog.Logger

	mu     sync.Mutex
	counts map[failKey]*failCount // of the current window; nil between windows
	timer  *time.Timer            // ends the current window
}

func (f *failLog) record(level slog.Level, status int, reason, route, service, rid string) {
	if !f.admit(level, status, reason, route, service, rid) {
		return
	}
	f.log.LogAttrs(context.Background(), level, "request failed",
		slog.Int("status", status),
		slog.String("reason", reason),
		slog.String("route", route),
		slog.String("service", service),
		slog.String("request_id", rid),
	)
}

// admit counts a failure and reports whether it is to be logged.
func (f *failLog) admit(level slog.Level, status int, reason, route, service, rid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counts == nil {
		f.counts = map[failKey]*failCount{}
		f.timer = time.AfterFunc(failWindow, f.endWindow)
	}
	k := failKey{route, status}
	c := f.counts[k]
	if c == nil {
		c = &failCount{}
		f.counts[k] = c
	}
	c.lines++
	c.level, c.service, c.reason, c.last = level, service, reason, rid
	return c.lines <= failBurst
}

// endWindow logs, for each route and status that had lines held back, how
// many and the last of them.
func (f *failLog) endWindow() {
	f.mu.Lock()
	counts := f.counts
	f.counts, f.timer = nil, nil
	f.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b failKey) int {
		return cmp.Or(strings.Compare(a.route, b.route), cmp.Compare(a.status, b.status))
	})
	for _, k := range keys {
		if c := counts[k]; c.lines > failBurst {
			f.log.LogAttrs(context.Background(), c.level, "requests failed like this one, not logged",
				slog.Int("count", c.lines-failBurst),
				slog.String("within", failWindow.String()),
				slog.Int("status", k.status),
				slog.String("reason", c.reason),
				slog.String("route", k.route),
				slog.String("service", c.service),
				slog.String("request_id", c.last),
			)
		}
	}
}

// flush ends the current window at once, so that what it held back is
// logged before the gateway stops.
func (f *failLog) flush() {
	f.mu.Lock()
	pending := f.timer != nil && f.timer.Stop()
	f.mu.Unlock()
	if pending {
		f.endWindow()
	}
}
