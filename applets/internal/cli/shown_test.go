package cli

import (
	"testing"
	"unicode/utf8"
)

// FuzzShown makes arbitrary text from NATS (event reasons, log lines)
// safe for a terminal: no control character, bidirectional override or
// isolate (which reverse the rest of a table row on terminals that lay
// out right-to-left text) or invalid UTF-8 is left, and text that has
// none is left as it is.
func FuzzShown(f *testing.F) {
	for _, s := range []string{"healthy", "crashed (exit 1)\x1b[2J", "\xff\xfe", "tab\tok", "\u009b31m", "é\x7f", "exe.\u202egnp", "a\u2066b\u2069c", "\u202a\u202b\u202c\u202d\u2067\u2068"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Shown(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Shown(%q) = %q, not UTF-8", s, got)
		}
		acts := func(r rune) bool {
			return r != '\t' && (r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0) || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
		}
		clean := true
		for _, r := range got {
			if acts(r) {
				t.Fatalf("Shown(%q) = %q keeps %U", s, got, r)
			}
		}
		for _, r := range s {
			clean = clean && r != utf8.RuneError && !acts(r)
		}
		if clean && got != s {
			t.Fatalf("Shown(%q) = %q, changed text with nothing to escape", s, got)
		}
	})
}
