package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeAndLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "routes.json")
	if err := os.WriteFile(path, []byte("old content, longer than the new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "new" {
		t.Fatalf("content %q (%v), want %q", got, err, "new")
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only routes.json", entries, err)
	}
}

// A write that cannot take place leaves what was there and no temporary
// file.
func TestFailedWriteLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("new"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(sub, []byte("new"), 0o600); err == nil {
		t.Fatal("replacing a directory succeeded")
	}
	if st, err := os.Stat(sub); err != nil || !st.IsDir() {
		t.Fatalf("directory replaced: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only sub", entries, err)
	}
}

// Leftovers finds the temporary files Write names for path, those of path
// alone: a file whose name extends path's (routes.json.sequences beside
// routes.json) has temporaries of its own, which its writer may be making.
func TestLeftoversOfPathOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "routes[1].json")
	tmp, err := writeTemp(path, []byte("cut short"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	others, err := writeTemp(path+".sequences", []byte("another's"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".routes[1].json.tmp-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	left, err := Leftovers(path)
	if err != nil || len(left) != 1 || left[0] != tmp {
		t.Errorf("leftovers of %s: %q (%v), want only %s", path, left, err, tmp)
	}
	if left, err := Leftovers(path + ".sequences"); err != nil || len(left) != 1 || left[0] != others {
		t.Errorf("leftovers of %s.sequences: %q (%v), want only %s", path, left, err, others)
	}
	if _, err := Leftovers(filepath.Join(dir, "missing", "f")); err == nil {
		t.Error("leftovers in a directory that does not exist: no error")
	}
}
