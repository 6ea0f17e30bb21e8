package sandbox

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the sandbox a library: the runner imports it,
// never the other way round.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/narun/narun/applets") {
			t.Errorf("sandbox depends on %s", pkg)
		}
	}
}
