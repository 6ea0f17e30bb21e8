package cli

import (
	"bytes"
	"io"
	"log/slog"
	"strconv"
)

// newJSONHandler is slog's JSON handler writing through bidiEscaper.
func newJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	return slog.NewJSONHandler(bidiEscaper{w}, opts)
}

// bidiEscaper writes JSON log lines with the bidirectional embeddings,
// overrides and isolates (U+202A-U+202E, U+2066-U+2069) escaped as \uNNNN,
// which encoding/json leaves raw. Logs carry names and errors that others
// chose (an app's name, a heartbeat's node id, a request's path), and one
// of these shown by a terminal that lays out right-to-left text reverses
// the rest of the line; the text format quotes them already. A JSON reader
// decodes the escape to the same character: a shipper gets the exact value.
type bidiEscaper struct{ w io.Writer }

// slog's handlers write each record in one call, so that no character is
// split between two.
func (e bidiEscaper) Write(p []byte) (int, error) {
	// Every one of these characters is encoded E2 80 AA-AE or E2 81 A6-A9.
	if bytes.IndexByte(p, 0xe2) < 0 {
		return e.w.Write(p)
	}
	out := make([]byte, 0, len(p)+16)
	for i := 0; i < len(p); i++ {
		if p[i] == 0xe2 && i+2 < len(p) && (p[i+1] == 0x80 && p[i+2] >= 0xaa && p[i+2] <= 0xae || p[i+1] == 0x81 && p[i+2] >= 0xa6 && p[i+2] <= 0xa9) {
			r := 0x2000 | int64(p[i+1]&0x3f)<<6 | int64(p[i+2]&0x3f)
			out = strconv.AppendInt(append(out, `\u`...), r, 16)
			i += 2
			continue
		}
		out = append(out, p[i])
	}
	if _, err := e.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
