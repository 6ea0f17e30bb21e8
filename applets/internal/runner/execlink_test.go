package runner

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExecLinks(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	l := &execLinks{dir: filepath.Join(data, "exec")}
	bin := func(digest string) string { return filepath.Join(data, "binaries", digest) }
	one := strings.Repeat("a", 64)
	// Another build whose first 12 hex digits are one's.
	twin := strings.Repeat("a", 12) + strings.Repeat("b", 52)
	other := strings.Repeat("c", 64)

	p1, err := l.link("web", one, bin(one))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(l.dir, "web", one[:12], "web"); p1 != want {
		t.Errorf("link at %s, want %s", p1, want)
	}
	if again, err := l.link("web", one, bin(one)); err != nil || again != p1 {
		t.Errorf("second link: %s, %v; want %s again", again, err, p1)
	}
	p2, err := l.link("web", twin, bin(twin))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(l.dir, "web", twin, "web"); p2 != want {
		t.Errorf("twin's link at %s, want %s", p2, want)
	}
	for p, want := range map[string]string{p1: bin(one), p2: bin(twin)} {
		if got, err := os.Readlink(p); err != nil || got != want {
			t.Errorf("%s -> %s (%v), want %s", p, got, err, want)
		}
	}
	if _, err := l.link("api", other, bin(other)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"../web", one}, {"web", "../../etc/passwd"}, {"web", strings.Repeat("a", 63) + "/"}, {".", one}} {
		if p, err := l.link(bad[0], bad[1], bin(one)); err == nil {
			t.Errorf("link(%q, %q) made %s", bad[0], bad[1], p)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(l.dir, "*", "*", ".tmp-*")); len(left) > 0 {
		t.Errorf("temporary links left: %v", left)
	}

	if err := l.prune("web", func() []string { return []string{twin} }); err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(filepath.Join(l.dir, "web", "*", "web")); !slices.Equal(got, []string{p2}) {
		t.Errorf("after prune: %v, want only %s", got, p2)
	}
	if err := l.prune("web", func() []string { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(l.dir, "web")); !os.IsNotExist(err) {
		t.Errorf("app directory left when no build is kept: %v", err)
	}

	if _, err := l.link("web", one, bin(one)); err != nil {
		t.Fatal(err)
	}
	if err := l.removeExcept(func(app string) bool { return app == "web" }); err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(filepath.Join(l.dir, "*")); !slices.Equal(got, []string{filepath.Join(l.dir, "web")}) {
		t.Errorf("after removeExcept: %v, want only web", got)
	}
}
