package signing

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/narun/narun/applets/internal/atomicfile"
)

// Order remembers, per key, the highest sequence a node accepted, and
// whether the key was deleted since: a deleted app must not come back
// with a spec it had, its last one included. With a file, it lasts across
// restarts.
type Order struct {
	mu   sync.Mutex
	path string
	seen map[string]accepted
	// ahead holds, per key, a value held (Hold) above what seen, the
	// file's content, has for it: Check refuses what is below it, but a
	// restart forgets it.
	ahead map[string]accepted
	// changes counts the changes to seen, and saved the count the file
	// holds: saved < changes once a write failed (until Retry or a later
	// change writes it) or while a change waits for its write.
	changes, saved uint64
	// writing serialises the file's writes. A change waiting for it finds
	// its own change written by the write before when that one began after
	// it: runners parse their apps' specs concurrently, and a thousand apps
	// at a start cost a few writes, not a thousand of the whole file.
	writing sync.Mutex
	// writes counts the file's writes, for tests.
	writes int
}

// accepted is what Order holds of a key.
type accepted struct {
	Sequence uint64 `json:"sequence"`
	// SHA256 is the digest of the value accepted with Sequence: one
	// sequence is one value, or a ctl of an earlier release, which edits
	// a stored spec's restarted_at in place and keeps its sequence line,
	// signs two values that could be stored in turn, each passing as the
	// other read again. "" in a file written before it was kept.
	SHA256 string `json:"sha256,omitempty"`
	// Deleted says the key was deleted after Sequence was accepted: only
	// a later value brings it back.
	Deleted bool `json:"deleted,omitempty"`
}

// LoadOrder reads the order kept in path; "" keeps it in memory only, and
// a file that does not exist yet is an order that has seen nothing. A file
// that cannot be read (a damaged disk) gives that too, with the error for
// the caller to log: the node goes on as a new node would, accepting the
// values stored now, rather than stop its apps and routes for a file that
// only guards against replays. The next value accepted writes it anew.
func LoadOrder(path string) (*Order, error) {
	o := &Order{path: path, seen: map[string]accepted{}, ahead: map[string]accepted{}}
	if path == "" {
		return o, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &o.seen)
	}
	if err != nil {
		o.seen = map[string]accepted{}
		return o, fmt.Errorf("sequences accepted before, %s, not read: %w; this node accepts the signed values stored now, as a new node does", path, err)
	}
	if o.seen == nil {
		o.seen = map[string]accepted{}
	}
	return o, nil
}

// Check refuses value, signed with seq, for key when a higher sequence
// was accepted for key before, or the same one and the key was deleted
// since: the value is an earlier one stored again. The same one otherwise
// is the same value read again (a resync, a restart), and passes only if
// it is the same value.
func (o *Order) Check(key string, seq uint64, value []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	held, _ := o.current(key)
	what := fmt.Sprintf("sequence %d", seq)
	if seq == 0 {
		what = "no sequence (signed by a ctl of an earlier release)"
	}
	switch {
	case seq < held.Sequence:
		return fmt.Errorf("%s, below %d accepted before for %q: an earlier value stored again", what, held.Sequence, key)
	case seq == held.Sequence && held.Deleted:
		return fmt.Errorf("%s, that of the value %q held when it was deleted: an earlier value stored again", what, key)
	case seq > 0 && seq == held.Sequence && held.SHA256 != "" && held.SHA256 != digest(value):
		return fmt.Errorf("%s, that of another value accepted before for %q: one of two values signed with one sequence (by a ctl of an earlier release?) stored in turn; deploy or restart it with this release's ctl", what, key)
	}
	return nil
}

// Accept records value, signed with seq, as accepted for key, and writes
// the file when it is the highest yet: it is kept in memory even when
// that fails, and written by Retry.
func (o *Order) Accept(key string, seq uint64, value []byte) error {
	return o.Apply([]Change{{Key: key, Sequence: seq, Value: value}})
}

// Hold records value, signed with seq, as accepted for key in memory
// only: Check refuses what is below it from now on, while the file keeps
// what it had for key until Accept records value, or a later one. A
// caller that keeps its own copy of the value it runs holds it while that
// copy cannot be written: kept in the file, the sequence would be ahead
// of the copy, which a restart would then refuse.
func (o *Order) Hold(key string, seq uint64, value []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if held, _ := o.current(key); newer(seq, held) {
		o.ahead[key] = accepted{Sequence: seq, SHA256: digest(value)}
	}
}

// current is what Check holds for key, and whether it holds anything:
// the value held above the file's, else the file's; o.mu is held.
func (o *Order) current(key string) (accepted, bool) {
	if a, ok := o.ahead[key]; ok {
		return a, true
	}
	a, ok := o.seen[key]
	return a, ok
}

// newer says whether a value signed with seq replaces held: a higher
// sequence, or the same one where held has no digest yet.
func newer(seq uint64, held accepted) bool {
	return seq > held.Sequence || seq == held.Sequence && seq > 0 && held.SHA256 == ""
}

// Change is what Apply records of a key: Value accepted with Sequence, or
// the key deleted.
type Change struct {
	Key      string
	Sequence uint64
	Value    []byte
	Deleted  bool
}

// Apply records changes in turn, as Accept and Delete would, and writes
// the file once: a gateway applying a bucket of a thousand route entries
// at its start writes it once, not a thousand times.
func (o *Order) Apply(changes []Change) error {
	o.mu.Lock()
	var keys []string
	for _, c := range changes {
		if o.record(c) {
			keys = append(keys, c.Key)
		}
	}
	upTo := o.changes
	o.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	if err := o.save(upTo); err != nil {
		return fmt.Errorf("keep the sequences accepted for %q: %w", keys, err)
	}
	return nil
}

// record applies c to what is held and says whether it changed it; o.mu
// is held.
func (o *Order) record(c Change) bool {
	if c.Deleted {
		// The value held above the file's goes into it as deleted: the
		// copy the caller kept of it goes with the key.
		held, ok := o.current(c.Key)
		if !ok || held.Deleted {
			return false
		}
		delete(o.ahead, c.Key)
		held.Deleted = true
		o.seen[c.Key] = held
		o.changes++
		return true
	}
	if a, ok := o.ahead[c.Key]; ok && a.Sequence <= c.Sequence {
		delete(o.ahead, c.Key)
	}
	if !newer(c.Sequence, o.seen[c.Key]) {
		return false
	}
	o.seen[c.Key] = accepted{Sequence: c.Sequence, SHA256: digest(c.Value)}
	o.changes++
	return true
}

func digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:])
}

// Delete records that key was deleted: its last value, stored again, is
// refused too.
func (o *Order) Delete(key string) error {
	return o.Apply([]Change{{Key: key, Deleted: true}})
}

// Retry writes the file if its last write failed (a full disk): what was
// accepted since would otherwise be missing from it until another change,
// and a restart would accept an earlier value stored again. It says
// whether it wrote.
func (o *Order) Retry() (bool, error) {
	o.mu.Lock()
	upTo := o.changes
	o.mu.Unlock()
	wrote, err := o.saveUpTo(upTo)
	if err != nil {
		return false, fmt.Errorf("keep the sequences accepted: %w", err)
	}
	return wrote, nil
}

func (o *Order) save(upTo uint64) error {
	_, err := o.saveUpTo(upTo)
	return err
}

// saveUpTo writes the file unless a write since the change counted upTo
// has: it says whether it wrote.
func (o *Order) saveUpTo(upTo uint64) (bool, error) {
	o.writing.Lock()
	defer o.writing.Unlock()
	o.mu.Lock()
	if o.saved >= upTo || o.path == "" {
		o.mu.Unlock()
		return false, nil
	}
	b, err := json.Marshal(o.seen)
	held := o.changes
	o.mu.Unlock()
	if err != nil {
		return false, err
	}
	if err := atomicfile.Write(o.path, b, 0o600); err != nil {
		return false, err
	}
	o.mu.Lock()
	o.saved = held
	o.writes++
	o.mu.Unlock()
	return true, nil
}
