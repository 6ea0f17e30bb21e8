package ctl

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// warnf tells the operator of something that did not stop the command.
func (e *env) warnf(format string, args ...any) {
	e.notice(slog.LevelWarn, "warning: ", format, args...)
}

// infof tells the operator how the command goes: retries, which key signs.
func (e *env) infof(format string, args ...any) {
	e.notice(slog.LevelInfo, "", format, args...)
}

// notice writes a line for the operator on stderr: plain text for a
// terminal, a log record under JSON logs, so that a script reading ctl's
// stderr as JSON lines can read every line of it. It is the command's
// answer, not a log, so the log level does not hide it: a device's
// narun.toml, which ctl reads too, may quiet the service's journal with
// log_level = "error", and must not silence a deploy's warnings.
func (e *env) notice(level slog.Level, prefix, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if e.jsonLogs() {
		_ = e.log.Handler().Handle(context.Background(), slog.NewRecord(time.Now(), level, msg, 0))
		return
	}
	fmt.Fprintln(e.stdio.Stderr, prefix+msg)
}

func (e *env) jsonLogs() bool { return strings.EqualFold(e.cfg.LogFormat, "json") }
