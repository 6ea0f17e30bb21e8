package runner

import (
	"context"
	"sync"
)

// keyLocks is a mutex per key. A key's mutex goes with its last user: a
// node keeps running new builds and apps for months, and the mutex of
// every key it ever saw would stay otherwise.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

// keyLock is the mutex of one key, with how many hold it or wait for it.
// It is a channel, not a sync.Mutex, so that a wait can end with its
// context: a fetch waiting for another of the same digest must not outlast
// its instance's stop by the other's download.
type keyLock struct {
	held chan struct{}
	n    int
}

// lock locks key and returns its unlock.
func (k *keyLocks) lock(key string) func() {
	unlock, _ := k.lockCtx(context.Background(), key)
	return unlock
}

// lockCtx locks key and returns its unlock, or ctx's error if ctx ends
// first.
func (k *keyLocks) lockCtx(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{held: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.n++
	k.mu.Unlock()
	select {
	case l.held <- struct{}{}:
		return func() {
			<-l.held
			k.leave(key, l)
		}, nil
	case <-ctx.Done():
		k.leave(key, l)
		return nil, ctx.Err()
	}
}

// leave counts out one user of key's lock l, and forgets l with the last.
func (k *keyLocks) leave(key string, l *keyLock) {
	k.mu.Lock()
	if l.n--; l.n == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}
