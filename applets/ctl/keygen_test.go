package ctl

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/secrets"
)

// Key generation run twice at once, by two operators or a script in
// parallel (separate processes), never loses a key: a key lost after secrets were sealed with
// it makes them unreadable for good.
func TestConcurrentKeygenLosesNoKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const runs = 6

	fresh := filepath.Join(h.dir, "fresh.key")
	results := make([]result, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() { results[i] = h.runProcess("--key-file", fresh, "secret", "keygen") })
	}
	wg.Wait()
	var written []string
	for _, r := range results {
		if r.code == 0 {
			written = append(written, writtenID(t, r.out))
		} else if !strings.Contains(r.err, "exists; pass --add") {
			t.Errorf("keygen refused with %q, want the file named as existing", r.err)
		}
	}
	ring, err := secrets.LoadRing(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(written, ring.IDs()) {
		t.Fatalf("keygens said they wrote %v; the file holds %v", written, ring.IDs())
	}

	for i := range runs {
		wg.Go(func() { results[i] = h.runProcess("--key-file", fresh, "secret", "keygen", "--add") })
	}
	wg.Wait()
	for _, r := range results {
		if r.code != 0 {
			t.Fatalf("keygen --add: exit %d: %s", r.code, r.err)
		}
		written = append(written, writtenID(t, r.out))
	}
	if ring, err = secrets.LoadRing(fresh); err != nil {
		t.Fatal(err)
	}
	have := ring.IDs()
	slices.Sort(have)
	slices.Sort(written)
	if !slices.Equal(written, have) {
		t.Errorf("keygens said they wrote %v; the file holds %v", written, have)
	}
}

// writtenID is the key id keygen's output says it wrote.
func writtenID(t *testing.T, out string) string {
	t.Helper()
	var id string
	if _, err := fmt.Sscanf(out, "key %s written", &id); err != nil {
		t.Fatalf("keygen printed %q", out)
	}
	return id
}

// keygen --add over a key file that is a symbolic link (to a key file kept
// elsewhere, or shared by a config management tool) adds the key to the
// file the link names, as an editor or install(1) would, and leaves the
// link a link: a regular file in its place would hold the new key while
// every other reader of the target kept opening secrets with the old ring.
func TestKeygenAddWritesThroughSymlink(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	keys := filepath.Join(h.dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(keys, "master.key")
	link := filepath.Join(h.dir, "current.key")
	if err := os.Symlink(filepath.Join("keys", "master.key"), link); err != nil {
		t.Fatal(err)
	}
	// A link made before the key: keygen creates the file it leads to.
	h.ok("", "--key-file", link, "secret", "keygen")
	before, err := secrets.LoadRing(target)
	if err != nil {
		t.Fatal(err)
	}

	added := writtenID(t, h.ok("", "--key-file", link, "secret", "keygen", "--add").out)

	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("key file %s is no longer a symbolic link: %v, %v", link, st.Mode(), err)
	}
	ring, err := secrets.LoadRing(target)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]string{added}, before.IDs()...); !slices.Equal(ring.IDs(), want) {
		t.Errorf("target %s holds keys %v, want %v", target, ring.IDs(), want)
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	// The new key file is written beside the target, and no temporary
	// file is left beside the link or the target.
	for _, dir := range []string{h.dir, keys} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("temporary file %s left in %s", e.Name(), dir)
			}
		}
	}
}

// keygen --add rewrites a key file: one that is not a regular file (a
// FIFO, which its read would wait on for a writer, a device) is refused,
// naming what it is, and left as it is.
func TestKeygenAddRefusesNonRegularFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	fifo := filepath.Join(h.dir, "fifo.key")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.fails(1, "", "--key-file", fifo, "secret", "keygen", "--add")
	if !strings.Contains(r.err, fifo) || !strings.Contains(r.err, "not a regular file") {
		t.Errorf("keygen --add of a FIFO: %q, want it named as not a regular file", r.err)
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v, %v", st.Mode(), err)
	}
}

// A key file that is not there yet names the command that makes one, as
// the error of no key file named at all does.
func TestMissingKeyFileNamesKeygen(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := filepath.Join(h.dir, "missing.key")
	for _, args := range [][]string{
		{"secret", "set", "db"},
		{"secret", "rotate"},
	} {
		r := h.fails(1, "value\n", append([]string{"--key-file", key}, args...)...)
		if !strings.Contains(r.err, key) || !strings.Contains(r.err, "narun ctl secret keygen --key-file "+key) {
			t.Errorf("ctl %v with a key file that does not exist: %q; want it named, with the keygen that makes it", args, r.err)
		}
	}
}
