package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/narun/narun"

// listDeps returns, for every package of the module, its transitive imports
// (with -deps) or its direct imports.
func listDeps(t *testing.T, transitive bool) map[string][]string {
	t.Helper()
	format := `{{.ImportPath}} {{join .Imports " "}}`
	if transitive {
		format = `{{.ImportPath}} {{join .Deps " "}}`
	}
	out, err := exec.Command("go", "list", "-f", format, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs[f[0]] = f[1:]
	}
	return pkgs
}

func isStd(pkg string) bool {
	first := strings.SplitN(pkg, "/", 2)[0]
	return !strings.Contains(first, ".")
}

func under(pkg, dir string) bool {
	p := module + "/" + dir
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// applet returns the applet a package belongs to, or "" for shared packages.
func applet(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, module+"/applets/")
	if !ok || strings.HasPrefix(rest, "internal") {
		return ""
	}
	return strings.SplitN(rest, "/", 2)[0]
}

func TestDependencyDirection(t *testing.T) {
	direct := listDeps(t, false)
	all := listDeps(t, true)
	for pkg, imports := range direct {
		if under(pkg, "consumer") {
			for _, imp := range imports {
				if !isStd(imp) && !strings.HasPrefix(imp, "github.com/nats-io/nats.go") && !under(imp, "consumer") {
					t.Errorf("%s imports %s: consumer may import only the standard library and nats.go", pkg, imp)
				}
			}
		}
	}
	for pkg, deps := range all {
		for _, dep := range deps {
			for _, lib := range []string{"consumer", "embednats", "sandbox"} {
				if under(pkg, lib) && under(dep, "applets") {
					t.Errorf("%s depends on %s: %s must not import applets", pkg, dep, lib)
				}
			}
			if a, b := applet(pkg), applet(dep); a != "" && b != "" && a != b {
				t.Errorf("applet %s depends on applet %s (%s -> %s): move the shared piece to applets/internal", a, b, pkg, dep)
			}
		}
	}
}
