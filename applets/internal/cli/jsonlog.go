package cli

import (
	"bytes"
	"io"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// BidiControl reports whether r is an explicit bidirectional embedding,
// override or isolate (U+202A–U+202E, U+2066–U+2069), the characters
// Rust's text_direction_codepoint_in_literal lint flags. The marks
// (U+200E, U+200F, U+061C) are left: they only place neutral characters
// such as spaces.
func BidiControl(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}

// newJSONHandler is slog's JSON handler writing through bidiEscaper, with
// durations as text.
func newJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	o := slog.HandlerOptions{}
	if opts != nil {
		o = *opts
	}
	o.ReplaceAttr = durationText(o.ReplaceAttr)
	return slog.NewJSONHandler(bidiEscaper{w}, &o)
}

// durationText writes a time.Duration as the text handler does ("1.5s"):
// slog's JSON handler writes its nanoseconds as an integer, which a reader
// of the journal takes for a count of seconds or a bug.
func durationText(next func([]string, slog.Attr) slog.Attr) func([]string, slog.Attr) slog.Attr {
	return func(groups []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		if next != nil {
			return next(groups, a)
		}
		return a
	}
}

// bidiEscaper writes JSON log lines with the BidiControl characters
// escaped as \uNNNN, which encoding/json leaves raw. Logs carry names and
// errors that others chose (an app's name, a heartbeat's node id, a
// request's path), and one of these shown by a terminal that lays out
// right-to-left text reverses the rest of the line; the text format quotes
// them already. A JSON reader decodes the escape to the same character: a
// shipper gets the exact value.
type bidiEscaper struct{ w io.Writer }

// slog's handlers write each record in one call, so that no character is
// split between two.
func (e bidiEscaper) Write(p []byte) (int, error) {
	// Each of them is encoded in UTF-8 from the byte E2 on.
	if bytes.IndexByte(p, 0xe2) < 0 {
		return e.w.Write(p)
	}
	out := make([]byte, 0, len(p)+16)
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if BidiControl(r) {
			out = strconv.AppendInt(append(out, `\u`...), int64(r), 16)
		} else {
			out = append(out, p[i:i+n]...)
		}
		i += n
	}
	if _, err := e.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
