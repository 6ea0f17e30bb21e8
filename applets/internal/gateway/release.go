package gateway

import (
	"sync/atomic"
	"time"

	"github.com/narun/narun/applets/internal/memfree"
)

// releaseDelay is how long the gateway must have held no body memory,
// after at least releaseMoved of bodies went through it, before it hands
// what they left behind back to the OS. Nothing else would for minutes: an
// idle process collects garbage only every two minutes, the body pools
// survive one collection in their victim caches, and Go keeps free pages
// up to the heap goal of the load's last collection. 64 uploads of 1 MiB
// and 32 slow ones left narun up at 63 MiB of RSS for two minutes and 43
// after five, 300 slow readers of large responses at 56 MiB for two
// minutes (idle: 26). Each release costs two collections of a small heap,
// and the next burst the page faults of its memory again; the delay keeps
// that to once per quiet spell.
const releaseDelay = 10 * time.Second

// releaseMoved is the least of bodies that makes a release worth its two
// collections: passing them on cost far more.
const releaseMoved = 4 << 20

// memRelease counts the body memory the gateway holds, request bodies'
// buffers and response frames not yet written to their client, and hands
// what bodies left behind back to the OS once it has held none for a
// while. A nil memRelease counts nothing.
type memRelease struct {
	held atomic.Int64
	// moved is what was held since the last release, in all.
	moved atomic.Int64
	// quiet releases once nothing has been held for releaseDelay.
	quiet *memfree.Debounce
}

func newMemRelease(after time.Duration) *memRelease {
	r := &memRelease{}
	r.quiet = memfree.NewDebounce(after, r.release)
	return r
}

func (r *memRelease) hold(n int64) {
	if r == nil || n == 0 {
		return
	}
	r.held.Add(n)
	r.moved.Add(n)
}

// drop gives back what hold counted; the last of it sets the timer anew.
func (r *memRelease) drop(n int64) {
	if r == nil || n == 0 {
		return
	}
	if r.held.Add(-n) != 0 || r.moved.Load() < releaseMoved {
		return
	}
	r.quiet.Trigger()
}

// release hands the memory back, unless a body is under way again: its
// end sets the timer anew.
func (r *memRelease) release() {
	if r.held.Load() != 0 {
		return
	}
	r.moved.Store(0)
	memfree.Release()
}
