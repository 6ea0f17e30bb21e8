package ctl

import (
	"path/filepath"
	"strings"
	"testing"
)

// A signing key named but missing (a copy not made yet, a path mistyped on
// the operator's laptop) was "signing key: open FILE: no such file or
// directory": neither the setting that named it nor what to put there.
func TestMissingSigningKeyNamesTheSettingAndTheWayOut(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	missing := filepath.Join(h.dir, "signing.key")
	r := h.fails(1, "", "--signing-key", missing, "signing", "public")
	want := "--signing-key: signing key: open " + missing + ": no such file or directory (copy the node key, <data_dir>/signing.key of narun up, there, readable by this user only, or name a key the nodes trust)"
	if !strings.Contains(r.err, want) {
		t.Errorf("ctl with a missing signing key: %q, want %q", r.err, want)
	}
}
