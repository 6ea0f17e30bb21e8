package runner

import (
	"os"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/secrets"
)

// A key file that others can read after the ring was loaded is refused at
// the next load, as a fresh load refuses it, not at the next runner
// restart: chmod leaves inode, size and mtime as they were.
func TestKeyFileRefusedOnceReadableByOthers(t *testing.T) {
	t.Parallel()
	key, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k := keyFile{path: writeKeyFile(t, []byte(key+"\n"))}
	if _, err := k.load(); err != nil {
		t.Fatalf("load the 0600 key file: %v", err)
	}
	if err := os.Chmod(k.path, 0o644); err != nil {
		t.Fatal(err)
	}
	ring, err := k.load()
	if want := "has mode 0644: allow only its owner (chmod 600)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("load after chmod 644: ring %v, err %v; want refused with %q", ring, err, want)
	}
	if err := os.Chmod(k.path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := k.load(); err != nil {
		t.Fatalf("load after chmod 600 again: %v", err)
	}
}
