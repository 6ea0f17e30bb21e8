package runner

import "sync"

// keyLocks is a mutex per key. A key's mutex goes with its last user: a
// node keeps running new builds and apps for months, and the mutex of
// every key it ever saw would stay otherwise.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

// keyLock is the mutex of one key, with how many hold it or wait for it.
type keyLock struct {
	mu sync.Mutex
	n  int
}

// lock locks key and returns its unlock.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.n++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.n--; l.n == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
