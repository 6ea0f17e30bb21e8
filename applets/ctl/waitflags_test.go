package ctl

import (
	"strings"
	"testing"
)

// A flag that the rest of the command line makes meaningless is a usage
// error naming both flags: taken silently, --wait on a dry run or
// --timeout without --wait lets an operator believe ctl waited. Nothing is
// written: the revision stays.
func TestWaitFlagsWithoutEffectAreRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	h.ok("", "deploy", h.file("hello2.toml", strings.Replace(helloSpec, `"1.0.0"`, `"1.0.1"`, 1)), "--binary", elfBinary(t))
	bin := elfBinary(t)
	before := len(h.historyOf("hello"))
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"deploy", p, "--binary", bin, "--dry-run", "--wait"}, []string{"--dry-run", "--wait"}},
		{[]string{"deploy", p, "--binary", bin, "--dry-run", "-w", "--timeout", "5s"}, []string{"--dry-run", "--wait", "--timeout"}},
		{[]string{"deploy", p, "--binary", bin, "--dry-run", "--timeout", "5s"}, []string{"--dry-run", "--timeout"}},
		{[]string{"deploy", p, "--binary", bin, "--timeout", "5s"}, []string{"--timeout", "--wait"}},
		{[]string{"app", "restart", "hello", "--timeout", "5s"}, []string{"--timeout", "--wait"}},
		{[]string{"app", "restart", "hello", "--wait=false", "--timeout", "5s"}, []string{"--timeout", "--wait"}},
		{[]string{"app", "rollback", "hello", "--timeout", "5s"}, []string{"--timeout", "--wait"}},
	} {
		r := h.run("", c.args...)
		if r.code != 2 {
			t.Errorf("ctl %q: exit %d, want 2\nstdout: %s\nstderr: %s", c.args, r.code, r.out, r.err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.err, w) {
				t.Errorf("ctl %q: stderr %q does not name %s", c.args, r.err, w)
			}
		}
	}
	if after := len(h.historyOf("hello")); after != before {
		t.Errorf("%d revisions of hello after the refused commands, want %d", after, before)
	}
	// The global --timeout, before the command, bounds each NATS
	// operation and needs no --wait.
	h.ok("", "--timeout", "5s", "deploy", p, "--binary", bin, "--dry-run")
	h.ok("", "--timeout", "5s", "app", "restart", "hello")
	// Checked before ctl connects, as other flag errors are.
	h.url = "nats://127.0.0.1:1"
	h.fails(2, "", "app", "restart", "hello", "--timeout", "5s")
	h.fails(2, "", "deploy", p, "--binary", bin, "--dry-run", "--wait")
}
