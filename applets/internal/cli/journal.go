package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// journalStream reports whether w is the stream systemd connected to the
// journal: JOURNAL_STREAM names its device and inode, and a child whose
// stderr was redirected elsewhere inherits the variable but not the stream.
func journalStream(w io.Writer) bool {
	f, ok := w.(*os.File)
	env := os.Getenv("JOURNAL_STREAM")
	if !ok || env == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journaled is the handler newHandler makes for w, behind a journalHandler
// when w is the journal's stream.
func journaled(w io.Writer, newHandler func(io.Writer) slog.Handler) slog.Handler {
	if !journalStream(w) {
		return newHandler(w)
	}
	out := &priorityWriter{w: w}
	return journalHandler{inner: newHandler(out), out: out}
}

// journalHandler starts each record with the sd-daemon priority of its
// level ("<4>" for WARN), which journald stores as the entry's PRIORITY and
// strips from the message (systemd's SyslogLevelPrefix=, on by default).
// Without it every line is stored at priority info, and journalctl -p
// warning, or an alert on the journal's PRIORITY, never sees narun's
// warnings and errors.
type journalHandler struct {
	inner slog.Handler
	out   *priorityWriter
}

// priorityWriter is what the handlers write to: the prefix of the record
// being written, then the record, in one write.
type priorityWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *priorityWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle holds the writer's lock for the whole record, so that the prefix
// set is the one of the record written.
func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prefix = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	return journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}

// priority is the syslog priority of a level, as sd-daemon(3) prefixes it.
func priority(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "<7>"
	case l < slog.LevelWarn:
		return "<6>"
	case l < slog.LevelError:
		return "<4>"
	}
	return "<3>"
}
