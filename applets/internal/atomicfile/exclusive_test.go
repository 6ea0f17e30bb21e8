package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Of several creators of one file, exactly one succeeds and its content is
// what the file holds; the others are told it exists.
func TestCreateHasOneWinner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	const creators = 8
	errs := make([]error, creators)
	var wg sync.WaitGroup
	for i := range creators {
		wg.Go(func() { errs[i] = Create(path, fmt.Appendf(nil, "creator %d\n", i), 0o600) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("creators %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Fatalf("creator %d: %v, want an error wrapping fs.ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no creator succeeded")
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != fmt.Sprintf("creator %d\n", winner) {
		t.Fatalf("file holds %q (%v), want creator %d's content", got, err, winner)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("directory holds %v, want only the file", entries)
	}
}

// Concurrent updates apply one after the other: every one is in the file.
func TestUpdatesDoNotUndoEachOther(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ring")
	if err := os.WriteFile(path, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const updaters = 16
	var wg sync.WaitGroup
	for i := range updaters {
		wg.Go(func() {
			err := Update(path, 0o600, func(old []byte) ([]byte, error) {
				return append(fmt.Appendf(nil, "line %d\n", i), old...), nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range updaters {
		if !strings.Contains(string(got), fmt.Sprintf("line %d\n", i)) {
			t.Errorf("update %d lost: file holds %q", i, got)
		}
	}
	if !strings.HasSuffix(string(got), "first\n") {
		t.Errorf("the original content lost: %q", got)
	}
}

// An update whose change fails leaves the file as it was.
func TestRefusedUpdateChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ring")
	if err := os.WriteFile(path, []byte("kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refusal := errors.New("refused")
	if err := Update(path, 0o600, func([]byte) ([]byte, error) { return nil, refusal }); !errors.Is(err, refusal) {
		t.Fatalf("Update returned %v, want the change's error", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "kept\n" {
		t.Fatalf("file holds %q after a refused update", got)
	}
}

// Until its link, what Create writes has no name in the directory: a
// crash in the middle of writing a key leaves no copy of it behind.
func TestCreateWritesUnnamedUntilTheLink(t *testing.T) {
	dir := t.TempDir()
	f, err := writeUnnamed(dir, []byte("secret\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if f == nil {
		t.Skipf("the file system of %s has no unnamed files (O_TMPFILE): Create writes a named temporary file there", dir)
	}
	defer f.Close()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("written but not linked, the directory holds %v", entries)
	}
	path := filepath.Join(dir, "key")
	if err := linkUnnamed(f, path); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "secret\n" {
		t.Fatalf("linked file holds %q (%v)", got, err)
	}
	if err := linkUnnamed(f, path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("linking over an existing file: %v, want an error wrapping fs.ErrExist", err)
	}
}

// An update keeps the owner of the file it replaces: root rewriting the
// key file of the user that runs narun must not take it from that user.
func TestUpdateKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user needs root")
	}
	path := filepath.Join(t.TempDir(), "ring")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 4321, 8765
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, 0o600, func(old []byte) ([]byte, error) { return append([]byte("new\n"), old...), nil }); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uid || st.Gid != gid {
		t.Errorf("after the update the file belongs to %d:%d, want %d:%d, its owner before", st.Uid, st.Gid, uid, gid)
	}
}
