package runner

import (
	"os"
	"path/filepath"
	"testing"
)

// A runner that stops removes each instance's directory, and with the
// last of them the app's: nothing starts from it (an instance creates
// it again) and only an app delete removed it, so a node whose runner
// stops and starts again kept an empty directory for each app it ran.
func TestStopLeavesNoAppDirectory(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "")
	tr := ranUntilHealthy(t, c, "hello")
	if entries, err := os.ReadDir(filepath.Join(tr.dir, "instances")); err != nil || len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("instances/ after the stop holds %v (%v), want nothing", names, err)
	}
}
