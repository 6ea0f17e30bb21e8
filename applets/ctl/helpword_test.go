package ctl

import (
	"strings"
	"testing"
)

// "help" and "h" are valid app, file and image names. urfave/cli gave
// every command a help subcommand, so `app delete help` showed the help
// and exited 0 with the app still deployed, and completion offered
// "help h" where a file name (deploy APP.toml) was wanted.
func TestHelpWordIsAnArgument(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, args := range [][]string{
		{"app", "status", "help"},
		{"app", "delete", "h"},
		{"app", "history", "help"},
		{"logs", "h"},
		{"files", "delete", "help"},
		{"image", "delete", "h"},
	} {
		r := h.run("", args...)
		if r.code != ExitNotFound || strings.Contains(r.out, "USAGE:") {
			t.Errorf("ctl %s: exit %d, want %d (not found)\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, ExitNotFound, r.out, r.err)
		}
	}
	for _, args := range [][]string{
		{"deploy"}, {"app", "status"}, {"files", "put"}, {"logs"},
	} {
		r := h.ok("", append(args, "--generate-bash-completion")...)
		if strings.Contains(r.out, "help") {
			t.Errorf("completion of ctl %s offers %q, want nothing (file names)", strings.Join(args, " "), r.out)
		}
	}
	// Groups keep their help command.
	if r := h.ok("", "app", "help", "status"); !strings.Contains(r.out, "app status") {
		t.Errorf("ctl app help status: %q", r.out)
	}
}
