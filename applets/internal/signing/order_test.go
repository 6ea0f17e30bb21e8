package signing

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// value is the value signed with seq in these tests.
func value(seq uint64) []byte { return []byte("value " + strconv.FormatUint(seq, 10)) }

func TestOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sequences.json")
	o, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 0, value(0)); err != nil {
		t.Errorf("an order that saw nothing refuses a value without a sequence: %v", err)
	}
	if err := o.Accept("web", 10, value(10)); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 10, value(10)); err != nil {
		t.Errorf("the same value read again: %v", err)
	}
	if err := o.Check("api", 1, value(1)); err != nil {
		t.Errorf("another key: %v", err)
	}
	// Lower ones do not lower what is held.
	if err := o.Accept("web", 3, value(3)); err != nil {
		t.Fatal(err)
	}
	// A restart reads back what was accepted.
	o, err = LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	err = o.Check("web", 9, value(9))
	if err == nil || !strings.Contains(err.Error(), "sequence 9, below 10 accepted before for \"web\"") {
		t.Errorf("a lower sequence after a restart: %v", err)
	}
	if err := o.Check("web", 0, value(0)); err == nil || !strings.Contains(err.Error(), "earlier release") {
		t.Errorf("no sequence once one was accepted: %v", err)
	}
	// A deleted key's last value is refused too, after a restart as well;
	// a later one brings the key back.
	if err := o.Delete("web"); err != nil {
		t.Fatal(err)
	}
	if o, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 10, value(10)); err == nil || !strings.Contains(err.Error(), "held when it was deleted") {
		t.Errorf("a deleted key's last value: %v", err)
	}
	if err := o.Delete("never"); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("never", 0, value(0)); err != nil {
		t.Errorf("a key deleted before any sequence was accepted: %v", err)
	}
	if err := o.Accept("web", 11, value(11)); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 11, value(11)); err != nil {
		t.Errorf("the value that brought a deleted key back, read again: %v", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp-*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	// One sequence is one value: another signed with it is refused, after
	// a restart too, and the value accepted still passes.
	if err := o.Check("web", 11, []byte("another")); err == nil || !strings.Contains(err.Error(), "sequence 11, that of another value accepted before for \"web\"") {
		t.Errorf("another value with the sequence accepted: %v", err)
	}
	if o, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 11, []byte("another")); err == nil {
		t.Error("after a restart, another value with the sequence accepted passes")
	}
	if err := o.Check("web", 11, value(11)); err != nil {
		t.Errorf("the value accepted, read again after a restart: %v", err)
	}
	// A file written before digests were kept takes the first value read
	// with its sequence.
	if err := os.WriteFile(path, []byte(`{"web":{"sequence":11}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 11, value(11)); err != nil {
		t.Errorf("a sequence held without its digest: %v", err)
	}
	if err := o.Accept("web", 11, value(11)); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 11, []byte("another")); err == nil {
		t.Error("another value with a sequence held without its digest, once one was accepted, passes")
	}
	// Values without a sequence (an earlier ctl's) are many: none is held.
	if err := o.Accept("old", 0, value(1)); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("old", 0, value(2)); err != nil {
		t.Errorf("another value without a sequence: %v", err)
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged, err := LoadOrder(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a damaged file: %v, want an error naming it", err)
	}
	if damaged == nil || damaged.Check("web", 1, value(1)) != nil {
		t.Error("a damaged file gives no order that accepts what is stored, as a new node's")
	}

	mem, err := LoadOrder("")
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.Accept("web", 5, value(5)); err != nil {
		t.Fatal(err)
	}
	if err := mem.Check("web", 4, value(4)); err == nil {
		t.Error("an order in memory only forgot what it accepted")
	}
}

// A sequence whose write failed (a full disk) is written by Retry, though
// no later one comes: a restart would otherwise accept an earlier value
// stored again.
func TestOrderRetry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sequences.json")
	o, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := o.Retry(); wrote || err != nil {
		t.Errorf("Retry with nothing unsaved = %v, %v; want nothing written", wrote, err)
	}
	if err := o.Accept("web", 5, []byte("v5")); err != nil {
		t.Fatal(err)
	}
	// A file where the directory should be fails every write in it.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Accept("web", 7, []byte("v7")); err == nil {
		t.Fatal("Accept wrote into a file")
	}
	if _, err := o.Retry(); err == nil {
		t.Error("Retry wrote into a file")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if wrote, err := o.Retry(); !wrote || err != nil {
		t.Fatalf("Retry once writable = %v, %v; want written", wrote, err)
	}
	o, err = LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Check("web", 6, []byte("v6")); err == nil {
		t.Error("after a restart, a sequence below the one accepted while the disk was full is accepted")
	}
	if wrote, err := o.Retry(); wrote || err != nil {
		t.Errorf("Retry after a load = %v, %v; want nothing written", wrote, err)
	}
}

// A value held refuses the values below it, but the file keeps the one
// before until it is accepted: a restart then accepts the copy the caller
// kept of that one.
func TestOrderHold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sequences.json")
	o, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Accept("web", 5, value(5)); err != nil {
		t.Fatal(err)
	}
	o.Hold("web", 9, value(9))
	if err := o.Check("web", 7, value(7)); err == nil || !strings.Contains(err.Error(), "below 9") {
		t.Errorf("a value below the one held: %v", err)
	}
	if err := o.Check("web", 9, []byte("another")); err == nil {
		t.Error("another value with the sequence held passes")
	}
	if err := o.Check("web", 9, value(9)); err != nil {
		t.Errorf("the value held, read again: %v", err)
	}
	// A lower one held lowers nothing.
	o.Hold("web", 6, value(6))
	if err := o.Check("web", 7, value(7)); err == nil {
		t.Error("a lower value held lowered what Check refuses")
	}
	restarted, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Check("web", 5, value(5)); err != nil {
		t.Errorf("after a restart, the value accepted before the one held: %v", err)
	}

	if err := o.Accept("web", 9, value(9)); err != nil {
		t.Fatal(err)
	}
	if restarted, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Check("web", 7, value(7)); err == nil {
		t.Error("after a restart, a value below the one held, then accepted, passes")
	}

	// A key deleted while a value is held is deleted at that value.
	o.Hold("web", 12, value(12))
	if err := o.Delete("web"); err != nil {
		t.Fatal(err)
	}
	if restarted, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Check("web", 12, value(12)); err == nil || !strings.Contains(err.Error(), "held when it was deleted") {
		t.Errorf("after a restart, the value held when the key was deleted: %v", err)
	}
}

// A gateway reading a bucket of many route entries at its start applied
// them one Accept each, and each wrote the whole file: O(n²) bytes and n
// fsyncs for n apps.
func TestOrderApplyWritesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sequences.json")
	o, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	var changes []Change
	for i := range 1000 {
		changes = append(changes, Change{Key: "app" + strconv.Itoa(i), Sequence: 5, Value: value(5)})
	}
	changes = append(changes, Change{Key: "app7", Deleted: true})
	if err := o.Apply(changes); err != nil {
		t.Fatal(err)
	}
	if o.writes != 1 {
		t.Errorf("Apply of %d changes wrote the file %d times; want once", len(changes), o.writes)
	}
	if err := o.Apply(changes); err != nil || o.writes != 1 {
		t.Errorf("Apply of changes already held = %v and %d writes; want nothing written", err, o.writes)
	}
	if o, err = LoadOrder(path); err != nil {
		t.Fatal(err)
	}
	if err := o.Check("app999", 4, value(4)); err == nil {
		t.Error("the last change of the batch was not written")
	}
	if err := o.Check("app7", 5, value(5)); err == nil {
		t.Error("a deletion after an accept in one batch was not written")
	}
}

// Runners parse their apps' specs concurrently; each Accept must still
// return only once the file holds what it accepted, whichever write put it
// there.
func TestOrderConcurrentAcceptsWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sequences.json")
	o, err := LoadOrder(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		go func() {
			key := "app" + strconv.Itoa(i)
			if err := o.Accept(key, 3, value(3)); err != nil {
				errs <- err
				return
			}
			back, err := LoadOrder(path)
			if err == nil {
				err = back.Check(key, 2, value(2))
			}
			if err == nil {
				err = fmt.Errorf("accept of %s returned before the file held it", key)
			} else if strings.Contains(err.Error(), "below 3") {
				err = nil
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if o.writes > n {
		t.Errorf("%d accepts wrote the file %d times", n, o.writes)
	}
}
