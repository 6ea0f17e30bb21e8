package cli

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Shown escapes, as \xNN, the bytes of a text from NATS (an app's output
// line, a heartbeat, an event) that a terminal would act on instead of
// showing: control characters but tab (a carriage return that overwrites
// the time and instance before a line, escape sequences that rewrite the
// screen, set the window title or the clipboard), C1 controls and bytes
// that are not UTF-8. Apps write those texts, not the operator who reads
// them, and with mode = "sandbox" an app is not trusted; journalctl hides
// such lines for the same reason. It also escapes, as \uNNNN, the
// bidirectional overrides and isolates: on a terminal that lays out
// right-to-left text (VTE, Konsole), one shows the rest of its line
// reversed, the other cells of a table row included, as Trojan Source
// does in code. A --json output keeps them exact.
func Shown(s string) string {
	var b strings.Builder
	done := 0 // s[:done] is in b, once the first byte was escaped
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1 || r != '\t' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0):
			b.WriteString(s[done:i])
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "\\x%02x", c)
			}
			done = i + n
		case BidiControl(r):
			b.WriteString(s[done:i])
			fmt.Fprintf(&b, "\\u%04x", r)
			done = i + n
		}
		i += n
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}
