package ctl

import (
	"strings"
	"testing"
)

// A spec and a binary given the wrong way round are called swapped, not a
// spec too large or that is no TOML.
func TestDeploySpecAndBinarySwapped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	spec := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	script := h.file("run.sh", "#!/bin/sh\nexec hello\n")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"both", []string{"deploy", bin, "--binary", spec}, bin + " is an executable and --binary " + spec + " a spec: the two look swapped (narun ctl deploy " + spec + " --binary " + bin + ")"},
		{"binary as the spec", []string{"deploy", bin}, bin + " is an executable, not a spec (narun ctl deploy SPEC --binary " + bin + ")"},
		{"spec as the binary", []string{"deploy", script, "--binary", spec}, "--binary " + spec + " is a spec, and " + script + " is not: the two look swapped"},
	} {
		r := h.run("", append(c.args, "--dry-run")...)
		if r.code != 2 || !strings.Contains(r.err, c.want) {
			t.Errorf("%s: exit %d, %q; want exit 2, %q", c.name, r.code, r.err, c.want)
		}
	}
}
