package embednats

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// The server logs every failed connection attempt, and some peers retry
// for as long as they run: a member with a wrong route password makes
// each of the others log about seven lines a second, a million a day, in
// which anything else is lost. Past repeatBurst lines of one shape (the
// message with its numbers blanked: addresses, ports, connection ids;
// and the protocol arguments a parse error quotes) within repeatWindow, lines are counted instead, and the count is logged
// with the last of them when the window ends.
const (
	repeatBurst  = 5
	repeatWindow = time.Minute
)

// logAdapter turns the server's printf-style log calls into slog records,
// and keeps the first fatal message so Start can report why it failed,
// and the first failed store write, after which nats-server writes
// nothing more to that stream until it restarts.
type logAdapter struct {
	log         *slog.Logger
	fatal       chan string
	writeFailed chan string
	// limitFromFullDisk says the running server's storage limit was set
	// from a disk with no room (launch).
	limitFromFullDisk atomic.Bool
	// logins are the user names the server knows (loginNames).
	logins map[string]bool

	mu     sync.Mutex
	shapes map[shapeKey]*shapeCount // of the current window; nil between windows
	timer  *time.Timer              // ends the current window
	closed bool                     // the server has shut down: no more windows
	// ownName holds, by host, the last route the server refused for
	// coming from a server of its own name (sameNameRefused).
	ownName map[string]refusedRoute
}

// refusedRoute is a route refused: where it came from, and when.
type refusedRoute struct {
	addr string
	at   time.Time
}

type shapeKey struct {
	level slog.Level
	shape string
}

type shapeCount struct {
	lines int
	last  string
}

func (l *logAdapter) emit(level slog.Level, format string, v ...any) {
	if l.log == nil || !l.log.Enabled(context.Background(), level) {
		return
	}
	msg := fmt.Sprintf(format, v...)
	// The start banner draws JetStream's name and frames its settings
	// with rules and blank lines, one record per line: nothing to read,
	// and it breaks up the records around it.
	if !strings.ContainsFunc(msg, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) {
		return
	}
	// Debug and trace lines are asked for, and read, one by one.
	if level >= slog.LevelInfo && !l.admit(level, msg) {
		return
	}
	l.log.Log(context.Background(), level, msg)
}

// admit counts msg in its shape and reports whether it is to be logged.
func (l *logAdapter) admit(level slog.Level, msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return true
	}
	if l.shapes == nil {
		l.shapes = map[shapeKey]*shapeCount{}
		l.timer = time.AfterFunc(repeatWindow, l.endWindow)
	}
	k := shapeKey{level, shapeOf(msg)}
	c := l.shapes[k]
	if c == nil {
		c = &shapeCount{}
		l.shapes[k] = c
	}
	c.lines++
	c.last = msg
	return c.lines <= repeatBurst
}

// endWindow logs, for each shape that had lines held back, how many and
// the last of them.
func (l *logAdapter) endWindow() {
	l.mu.Lock()
	shapes := l.shapes
	l.shapes, l.timer = nil, nil
	l.mu.Unlock()
	// In a stable order, most severe first.
	keys := slices.SortedFunc(maps.Keys(shapes), func(a, b shapeKey) int {
		return cmp.Or(cmp.Compare(b.level, a.level), strings.Compare(a.shape, b.shape))
	})
	for _, k := range keys {
		if c := shapes[k]; c.lines > repeatBurst {
			l.log.Log(context.Background(), k.level, "NATS server lines like this one not logged",
				"count", c.lines-repeatBurst, "within", repeatWindow.String(), "last", c.last)
		}
	}
}

// close ends the current window at once, so that what it held back is
// logged before the server's shutdown returns rather than after.
func (l *logAdapter) close() {
	l.mu.Lock()
	l.closed = true
	pending := l.timer != nil && l.timer.Stop()
	l.mu.Unlock()
	if pending {
		l.endWindow()
	}
}

// shapeOf is msg with what differs between lines of one kind blanked.
// Two members with one server_name refuse each other's routes, and each
// logs a parse error about once a second, each quoting another
// subscription's subject, for as long as they run: past the words
// "parse error", the rest is the arguments quoted.
func shapeOf(msg string) string {
	for _, words := range []string{"Parse Error: ", "parse error: "} {
		if i := strings.Index(msg, words); i >= 0 {
			msg = msg[:i+len(words)] + "…"
			break
		}
	}
	return blankNumbers(msg)
}

// blankNumbers replaces each run of digits in s with one '#'.
func blankNumbers(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			if len(b) == 0 || b[len(b)-1] != '#' {
				b = append(b, '#')
			}
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func (l *logAdapter) Noticef(format string, v ...any) { l.emit(slog.LevelInfo, format, v...) }
func (l *logAdapter) Warnf(format string, v ...any)   { l.emit(slog.LevelWarn, format, v...) }
func (l *logAdapter) Errorf(format string, v ...any) {
	msg := l.hideUnknownUser(fmt.Sprintf(format, v...))
	level := slog.LevelError
	if aboutRemoteClient(msg) {
		level = slog.LevelWarn
	}
	l.emit(level, "%s", msg)
	l.noteOwnName(msg, time.Now())
	// The filestore's and raft's words for a write error they keep
	// (fileStore.setWriteErr, raft.setWriteErrLocked).
	if strings.Contains(msg, "Critical write error") ||
		l.limitFromFullDisk.Load() && strings.Contains(msg, "resource limits exceeded") {
		select {
		case l.writeFailed <- msg:
		default:
		}
	}
}

// ownNameRefused is how nats-server says that a route it accepted came
// from a server of its own name (processRouteInfo), after the
// connection's "ADDR - rid:N - "; it closes the route at once.
const ownNameRefused = "Remote server has a duplicate name: "

// noteOwnName keeps where a route refused in msg, a line of the server's
// log, came from.
func (l *logAdapter) noteOwnName(msg string, at time.Time) {
	if !strings.Contains(msg, ownNameRefused) {
		return
	}
	addr, _, ok := strings.Cut(msg, " - rid:")
	if !ok {
		return
	}
	// A member dials each route from a port of its own: one host's
	// routes are one server's.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ownName == nil {
		l.ownName = map[string]refusedRoute{}
	}
	l.ownName[host] = refusedRoute{addr: addr, at: at}
}

// sameNameRefused gives the addresses of the routes the server refused
// within RouteStaleAfter before now for coming from a server of its own
// name. Such a route is closed as soon as its INFO arrives, so a look at
// the routes connected seldom finds it, while its server goes on dialling
// again about once a second.
func (l *logAdapter) sameNameRefused(now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var addrs []string
	for host, r := range l.ownName {
		if now.Sub(r.at) > RouteStaleAfter {
			delete(l.ownName, host)
			continue
		}
		addrs = append(addrs, r.addr)
	}
	return addrs
}

// refusedUser is how nats-server names the user of a login it refused
// (client.authViolation), quoted with %q to the end of the line.
const refusedUser = "authentication error - User "

// hideUnknownUser hides the user name of a refused login in msg unless
// the server knows it: a leaf remote's or route's URL with a user and no
// password ("nats-leaf://TOKEN@hub") presents its token as that name. A
// name the server knows stays, to say whose password was wrong.
func (l *logAdapter) hideUnknownUser(msg string) string {
	i := strings.Index(msg, refusedUser)
	if i < 0 {
		return msg
	}
	if name, err := strconv.Unquote(msg[i+len(refusedUser):]); err == nil && l.logins[name] {
		return msg
	}
	return msg[:i+len(refusedUser)] + `"xxxxx"`
}

// loginNames are the user names a server of cfg knows: the operator's,
// the routes' and the in-process one.
func loginNames(cfg Config) map[string]bool {
	names := map[string]bool{internalUser: true}
	for _, u := range cfg.Users {
		names[u.User] = true
	}
	if cfg.Cluster.User != "" {
		names[cfg.Cluster.User] = true
	}
	return names
}

// aboutRemoteClient says msg is the server's about one client connection
// from the network, whose prefix is its address and its client id
// ("127.0.0.1:51554 - cid:36 - ", wid: for WebSocket, mid: for MQTT): a
// port scan or a client speaking another protocol is that client's
// fault, routine on a port open to the network, and its refused logins
// are still seen at WARN. Routes, gateways and leaf nodes (rid:, gid:,
// lid:) are the cluster's own links, and narun's in-process connections
// ("pipe - cid:") its own parts: their errors stay errors.
func aboutRemoteClient(msg string) bool {
	conn, rest, ok := strings.Cut(msg, " - ")
	if !ok || conn == "pipe" || strings.Contains(conn, " ") {
		return false
	}
	id, _, _ := strings.Cut(rest, " ")
	kind, n, ok := strings.Cut(id, ":")
	if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
		return false
	}
	switch kind {
	case "cid", "wid", "mid", "mid_ws":
		return true
	}
	return false
}

func (l *logAdapter) Debugf(format string, v ...any) { l.emit(slog.LevelDebug, format, v...) }
func (l *logAdapter) Tracef(format string, v ...any) { l.emit(slog.LevelDebug-4, format, v...) }

func (l *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.log != nil {
		l.log.Log(context.Background(), slog.LevelError, msg)
	}
	select {
	case l.fatal <- msg:
	default:
	}
}
