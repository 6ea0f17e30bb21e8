package embednats

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The name of the cluster member on a store is written whole, replacing
// the former one, and no write, failed or not, leaves a file beside it: a
// leftover would stay in the store dir for good.
func TestRememberServerName(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"a-rather-long-member-name", "b"} {
		if err := rememberServerName(dir, name); err != nil {
			t.Fatalf("remember %q: %v", name, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, serverNameFile)); err != nil || string(got) != name+"\n" {
			t.Fatalf("after remembering %q the file holds %q (%v)", name, got, err)
		}
		if got := storeServerName(dir); got != name {
			t.Fatalf("storeServerName = %q, want %q", got, name)
		}
		assertOnly(t, dir, serverNameFile)
	}

	// A name that cannot be put in place (a directory is in the way).
	blocked := t.TempDir()
	if err := os.Mkdir(filepath.Join(blocked, serverNameFile), 0o700); err != nil {
		t.Fatal(err)
	}
	err := rememberServerName(blocked, "c")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(blocked, serverNameFile)) {
		t.Fatalf("remember over a directory: %v, want an error naming the file", err)
	}
	assertOnly(t, blocked, serverNameFile)
}

func assertOnly(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != name {
		t.Fatalf("%s holds %q, want only %s", dir, names, name)
	}
}
