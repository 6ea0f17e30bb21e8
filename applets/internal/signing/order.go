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
	// unsaved says the file's last write failed: it lacks what seen has
	// until Retry or a later change writes it.
	unsaved bool
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
	o := &Order{path: path, seen: map[string]accepted{}}
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
	held := o.seen[key]
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
	o.mu.Lock()
	defer o.mu.Unlock()
	held := o.seen[key]
	if seq < held.Sequence || seq == held.Sequence && (seq == 0 || held.SHA256 != "") {
		return nil
	}
	o.seen[key] = accepted{Sequence: seq, SHA256: digest(value)}
	return o.save(key)
}

func digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:])
}

// Delete records that key was deleted: its last value, stored again, is
// refused too.
func (o *Order) Delete(key string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	held, ok := o.seen[key]
	if !ok || held.Deleted {
		return nil
	}
	held.Deleted = true
	o.seen[key] = held
	return o.save(key)
}

// Retry writes the file if its last write failed (a full disk): what was
// accepted since would otherwise be missing from it until another change,
// and a restart would accept an earlier value stored again. It says
// whether it wrote.
func (o *Order) Retry() (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.unsaved {
		return false, nil
	}
	if err := o.write(); err != nil {
		return false, fmt.Errorf("keep the sequences accepted: %w", err)
	}
	return true, nil
}

// save writes the order to its file; o.mu is held.
func (o *Order) save(key string) error {
	if err := o.write(); err != nil {
		return fmt.Errorf("keep the sequence accepted for %q: %w", key, err)
	}
	return nil
}

// write writes the order to its file and notes whether that failed; o.mu
// is held.
func (o *Order) write() error {
	if o.path == "" {
		return nil
	}
	b, err := json.Marshal(o.seen)
	if err == nil {
		err = atomicfile.Write(o.path, b, 0o600)
	}
	o.unsaved = err != nil
	return err
}
