package embednats

import (
	"context"
	"fmt"
	"log/slog"
)

// logAdapter turns the server's printf-style log calls into slog records,
// and keeps the first fatal message so Start can report why it failed.
type logAdapter struct {
	log   *slog.Logger
	fatal chan string
}

func (l *logAdapter) emit(level slog.Level, format string, v ...any) {
	if l.log == nil || !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (l *logAdapter) Noticef(format string, v ...any) { l.emit(slog.LevelInfo, format, v...) }
func (l *logAdapter) Warnf(format string, v ...any)   { l.emit(slog.LevelWarn, format, v...) }
func (l *logAdapter) Errorf(format string, v ...any)  { l.emit(slog.LevelError, format, v...) }
func (l *logAdapter) Debugf(format string, v ...any)  { l.emit(slog.LevelDebug, format, v...) }
func (l *logAdapter) Tracef(format string, v ...any)  { l.emit(slog.LevelDebug-4, format, v...) }

func (l *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.emit(slog.LevelError, "%s", msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
