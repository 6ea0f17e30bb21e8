package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/narun/narun/applets/internal/state"
)

// NARUN_LOGS is one stream for every app: without a bound per instance, an
// app that prints in a tight loop fills its 256 MiB within seconds and the
// stream drops the history of every other app to make room. As journald
// does per unit, each instance may publish logBurst lines and logBytes bytes
// per logWindow; beyond that its lines are dropped until the window ends,
// with a line that says so. The admin page keeps its last lines regardless.
// The bytes are those published, JSON and all: a line of control characters
// takes six times its length there (\u0001), and counted as printed it
// could fill the stream six times faster than the bound says.
const (
	logWindow = 30 * time.Second
	logBurst  = 10000
	logBytes  = 4 << 20
)

// logLimit applies the bound to one instance's output lines.
type logLimit struct {
	// publish sends a line, encoded as b (encodeLog).
	publish func(l state.LogLine, b []byte)
	// after calls f once d has passed, as time.AfterFunc does.
	after func(d time.Duration, f func())
	log   *slog.Logger

	mu      sync.Mutex
	start   time.Time
	lines   int
	bytes   int
	dropped int
	// droppedTotal counts the lines ever dropped, for /metrics.
	droppedTotal int
	// last is the last line dropped, whose instance the count is told of
	// once the window ends.
	last state.LogLine
}

func newLogLimit(publish func(l state.LogLine, b []byte), after func(d time.Duration, f func()), log *slog.Logger) *logLimit {
	return &logLimit{publish: publish, after: after, log: log}
}

// afterFunc is time.AfterFunc without the timer, which no caller stops.
func afterFunc(d time.Duration, f func()) { time.AfterFunc(d, f) }

// line publishes l unless the instance is over its bound. It holds the lock
// while publishing, which never blocks, so that a notice and the lines
// around it keep their order.
func (ll *logLimit) line(l state.LogLine) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if l.Time.Sub(ll.start) >= logWindow {
		ll.tellDropped(l.Time)
		ll.start, ll.lines, ll.bytes = l.Time, 0, 0
	}
	var b []byte
	if ll.lines < logBurst {
		b = encodeLog(l)
	}
	if b == nil || ll.bytes+len(b) > logBytes {
		if ll.dropped == 0 {
			until := ll.start.Add(logWindow)
			ll.log.Warn("instance output over its bound: lines dropped from NARUN_LOGS", "instance", l.Instance, "until", until.Format(time.RFC3339))
			ll.notice(l, fmt.Sprintf("narun: more than %d lines or %d MiB in %s: dropping this instance's output until %s", logBurst, logBytes>>20, logWindow, until.UTC().Format(time.RFC3339)))
			// The count is told when the window ends, not only with the
			// next line: an app that falls silent after its flood (one
			// that crashed, its last words dropped) would never have it.
			ll.after(time.Until(until), func() {
				ll.mu.Lock()
				defer ll.mu.Unlock()
				if ll.start.Add(logWindow).Equal(until) {
					ll.tellDropped(until)
				}
			})
		}
		ll.dropped++
		ll.droppedTotal++
		ll.last = l
		return
	}
	ll.lines++
	ll.bytes += len(b)
	ll.publish(l, b)
}

// linesDropped is how many lines of the instance were ever dropped.
func (ll *logLimit) linesDropped() int {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return ll.droppedTotal
}

// tellDropped publishes, at t, how many lines were dropped since the last
// time it did, if any; ll.mu must be held.
func (ll *logLimit) tellDropped(t time.Time) {
	if ll.dropped == 0 {
		return
	}
	l := ll.last
	l.Time = t
	ll.notice(l, fmt.Sprintf("narun: %d lines of this instance were dropped: more than %d lines or %d MiB in %s", ll.dropped, logBurst, logBytes>>20, logWindow))
	ll.dropped = 0
}

// notice publishes the runner's own line about l's instance.
func (ll *logLimit) notice(l state.LogLine, text string) {
	l.Stream, l.Line, l.Partial = state.Narun, text, false
	if b := encodeLog(l); b != nil {
		ll.publish(l, b)
	}
}

// encodeLog is l as published: JSON, but that <, > and & stay as they are,
// where json.Marshal would store each in six bytes (\u003c), those of Go's
// "<nil>" among them. nil when l cannot be encoded.
func encodeLog(l state.LogLine) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(l); err != nil {
		return nil
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
