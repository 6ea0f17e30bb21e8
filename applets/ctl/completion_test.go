package ctl

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// complete runs the bash completion script that ctl completion bash
// prints for the command line words, the last being the word completed,
// with narun standing for ctl, and returns what bash would offer.
func complete(t *testing.T, script string, words ...string) []string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	narun := filepath.Join(dir, "narun")
	// The test binary acts as ctl; it takes no --config here: none of
	// these words needs NATS.
	wrapper := "#!/bin/sh\nexec env " + asProcess + "=1 " + os.Args[0] + " \"$@\"\n"
	if err := os.WriteFile(narun, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	var quoted []string
	for _, w := range append([]string{narun}, words...) {
		quoted = append(quoted, "'"+w+"'")
	}
	prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" + strconv.Itoa(len(words)) +
		"\n_narun_ctl_complete\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bash: %v\n%s", err, stderr.String())
	}
	return strings.Fields(out.String())
}

// The completion script passed bash's current word to narun only as the
// prefix compgen filters on, never to narun itself: urfave/cli completes
// flags from a last word that starts with a dash, so `deploy --w<TAB>`
// offered nothing (before, "help h").
func TestCompletionOffersFlags(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	script := h.ok("", "completion", "bash").out
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"ctl", "deploy", "--w"}, "--wait"},
		{[]string{"ctl", "logs", "--"}, "--follow"},
		{[]string{"ctl", "--nats-c"}, "--nats-creds"},
		{[]string{"ctl", "ap"}, "app"},
		{[]string{"ctl", "app", "st"}, "status"},
	} {
		got := complete(t, script, c.words...)
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+c.want+" ") {
			t.Errorf("narun %s<TAB>: offers %q, want %s among them", strings.Join(c.words, " "), got, c.want)
		}
		for _, w := range got {
			if !strings.HasPrefix(w, c.words[len(c.words)-1]) {
				t.Errorf("narun %s<TAB>: offers %q, which does not extend the word", strings.Join(c.words, " "), w)
			}
		}
	}
}
