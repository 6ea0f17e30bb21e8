package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Under systemd with its output in the journal, every line starts with the
// sd-daemon priority of its level, which journald stores as the entry's
// PRIORITY and strips; on any other stderr, lines are as they were.
func TestJournalPriorityPrefix(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			journal := filepath.Join(t.TempDir(), "journal")
			f, err := os.Create(journal)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
			log, err := NewLogger(f, format, "debug")
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("d")
			log.With("part", "nats").Info("i")
			log.WithGroup("g").Warn("w", "k", 1)
			log.Error("e")
			want := []string{"<7>", "<6>", "<4>", "<3>"}
			// The error an applet stops with, written before or without its
			// logger: in text, the dispatcher's line unless logFatal wrote it.
			if err := logFatal(IO{Stderr: f}, "narun gw", format, errors.New("listen: address in use")); !IsLogged(err) {
				t.Errorf("logFatal left the error to the dispatcher, which writes no priority")
			}
			want = append(want, "<3>")

			other, err := os.Create(filepath.Join(t.TempDir(), "other"))
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			plain, err := NewLogger(other, format, "info")
			if err != nil {
				t.Fatal(err)
			}
			plain.Warn("w")

			lines := readLines(t, journal)
			if len(lines) != len(want) {
				t.Fatalf("journal has %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
			}
			for i, l := range lines {
				rest, ok := strings.CutPrefix(l, want[i])
				if !ok || strings.HasPrefix(rest, "<") {
					t.Errorf("journal line %d = %q, want the one prefix %s", i, l, want[i])
				}
			}
			if l := readLines(t, other.Name()); len(l) != 1 || strings.HasPrefix(l[0], "<") {
				t.Errorf("stderr not the journal got %q, want one line without a priority", l)
			}
		})
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}
