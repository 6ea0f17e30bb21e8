// Package memfree hands back to the OS the memory a burst of work left
// behind, once the burst is over. Go alone keeps it for minutes: an idle
// process collects only every two minutes, what sits in a sync.Pool
// survives one collection in its victim cache, and free pages under the
// heap goal of the burst's last collection are not returned. On an edge
// device that is the burst's peak, held for nothing.
package memfree

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Release frees what is garbage and returns the free pages to the OS. The
// first collection only moves pooled objects to their victim caches: the
// second, FreeOSMemory's, frees them; FreeOSMemory's alone returned almost
// nothing.
func Release() {
	runtime.GC()
	debug.FreeOSMemory()
}

// Debounce runs f once d has passed since the last Trigger.
type Debounce struct {
	mu    sync.Mutex
	d     time.Duration
	f     func()
	timer *time.Timer
}

// NewDebounce makes a Debounce of f after d.
func NewDebounce(d time.Duration, f func()) *Debounce { return &Debounce{d: d, f: f} }

// Trigger runs f d from now, in place of a run it set before that has not
// come yet.
func (b *Debounce) Trigger() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer == nil {
		b.timer = time.AfterFunc(b.d, b.f)
		return
	}
	b.timer.Reset(b.d)
}
