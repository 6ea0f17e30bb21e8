package cli

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// JSON log lines carry the bidirectional controls escaped, and decode to
// the exact values; other characters, those sharing their first byte
// included, stay as they are.
func TestJSONLogsEscapeBidiControls(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"app":  "evil\u202egnp.exe",
		"node": "\u2066isolated\u2069 \u202a\u202b\u202c\u202d",
		"path": "/caf\u00e9/\u2713/\u2028/\u2067",
	}
	log.Info("deployed", "app", values["app"], "node", values["node"], "path", values["path"])
	line := buf.String()
	for _, r := range []rune{0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2069} {
		if strings.ContainsRune(line, r) {
			t.Errorf("line holds U+%04X raw: %s", r, line)
		}
	}
	for _, want := range []string{`evil\u202egnp.exe`, `\u2066isolated\u2069 \u202a\u202b\u202c\u202d`, "/caf\u00e9/\u2713/"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %s: %s", want, line)
		}
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("line is not JSON: %v: %s", err, line)
	}
	for k, want := range values {
		if got[k] != want {
			t.Errorf("%s decodes to %q, want %q", k, got[k], want)
		}
	}
}

// A duration in a JSON log line reads as the text format writes it, not
// as slog's integer of nanoseconds, which no reader of a journal parses.
func TestJSONLogsWriteDurationsAsText(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("stopped", "waited", 1500*time.Millisecond, slog.Group("app", "stop_timeout", time.Minute))
	var got struct {
		Waited string
		App    struct {
			StopTimeout string `json:"stop_timeout"`
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("line is not JSON with text durations: %v: %s", err, buf.String())
	}
	if got.Waited != "1.5s" || got.App.StopTimeout != "1m0s" {
		t.Errorf("durations %q and %q, want \"1.5s\" and \"1m0s\": %s", got.Waited, got.App.StopTimeout, buf.String())
	}
}
