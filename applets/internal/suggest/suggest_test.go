package suggest

import "testing"

func TestNearest(t *testing.T) {
	for _, c := range []struct {
		name  string
		among []string
		want  string
	}{
		{"replica", []string{"replicas", "nodes"}, "replicas"},
		{"vn", []string{"vm"}, "vm"},
		{"ab", []string{"xy"}, ""},          // every letter changed
		{"web", []string{"wab", "wob"}, ""}, // two as close: no guess
		{"helth", []string{"health", "healthy"}, "health"},
		{"mode", []string{"modeeee"}, ""}, // three apart in length alone
		{"x", nil, ""},
	} {
		if got := Nearest(c.name, c.among); got != c.want {
			t.Errorf("Nearest(%q, %q) = %q, want %q", c.name, c.among, got, c.want)
		}
	}
}
