// Package cli holds what every applet shares: the applet signature, exit
// codes, the process logger and the NATS client flags.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// IO is the standard streams and environment an applet runs with; tests
// give each run its own.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// Env returns the value of an environment variable.
func (s IO) Env(key string) string {
	if s.Getenv == nil {
		return os.Getenv(key)
	}
	return s.Getenv(key)
}

// ExitError carries an exit code other than 1 up to the dispatcher.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Usage marks err as a usage error: exit code 2.
func Usage(err error) error { return &ExitError{Code: 2, Err: err} }

// Logged marks err as already logged by the applet (as a JSON log line):
// the dispatcher turns it into the exit code and prints nothing.
func Logged(err error) error { return &loggedError{err} }

// IsLogged reports whether err was marked by Logged.
func IsLogged(err error) bool {
	var l *loggedError
	return errors.As(err, &l)
}

type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// ExitCode maps an applet's error to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// NewLogger builds the process logger: text for terminals, or JSON when
// format is "json". level is debug, info, warn or error.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	if err := checkFormat(format); err != nil {
		return nil, fmt.Errorf("log format: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	newHandler := func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
	if strings.EqualFold(format, "json") {
		newHandler = func(w io.Writer) slog.Handler { return newJSONHandler(w, opts) }
	}
	return slog.New(journaled(w, newHandler)), nil
}

// parseLevel reads a log level; "" is info.
func parseLevel(level string) (slog.Level, error) {
	var lvl slog.Level
	if level == "" {
		return slog.LevelInfo, nil
	}
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", level)
	}
	return lvl, nil
}

// checkFormat accepts a log format; "" is text.
func checkFormat(format string) error {
	switch strings.ToLower(format) {
	case "", "text", "json":
		return nil
	}
	return fmt.Errorf("want text or json, got %q", format)
}

// Func is the signature of every applet. args[0] is the name the applet was
// invoked as; ctx is cancelled on SIGINT or SIGTERM. An applet returns nil
// when it stopped because ctx was cancelled.
type Func func(ctx context.Context, stdio IO, args []string) error
