package runner

import (
	"slices"
	"strings"
	"testing"
)

// An app that runs a helper by name (exec.Command("sh"), a script's
// commands) finds it as under systemd, which gives every service a PATH;
// one the spec sets is the app's alone.
func TestAppGetsDefaultPATH(t *testing.T) {
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	for app, tc := range map[string]struct{ extra, want string }{
		"default": {`args = ["env"]`, "env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"own":     {"args = [\"env\"]\nenv = { PATH = \"/opt/app/bin\" }", "env PATH=/opt/app/bin"},
	} {
		c.deploy(t, app, "1.0.0", probeBin, tc.extra)
		tr.waitLine(t, app, "probe: ready")
		var paths []string
		for _, l := range tr.lines(app) {
			if strings.HasPrefix(l, "env PATH=") {
				paths = append(paths, l)
			}
		}
		if !slices.Equal(paths, []string{tc.want}) {
			t.Errorf("%s: PATH lines %q, want %q", app, paths, tc.want)
		}
	}
}
