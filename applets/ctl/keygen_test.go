package ctl

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

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
