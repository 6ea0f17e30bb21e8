package supervisor

import (
	"errors"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The kernel sends the parent-death signal when the *thread* that forked a
// child exits, not the process. Go may end an OS thread at any time (a locked
// goroutine returning takes its thread with it), so every child is forked
// from a thread locked by a goroutine that never returns: the signal then
// fires exactly when the runner process dies, even by SIGKILL. The threads
// form a pool that grows when starts overlap, so one start that hangs (a
// sandbox launcher stuck in its setup) never holds back the others. Only a
// thread whose start failed with ErrThreadTainted leaves the pool, and ends.
var spawner struct {
	mu   sync.Mutex
	idle int
	reqs chan spawnReq
}

type spawnReq struct {
	start func() error
	done  chan error
}

func spawnWorker() {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// Go never ends the main thread, not even for a goroutine that
		// returns locked to it, and a worker's thread must end when it is
		// tainted: this goroutine keeps the main thread out of the pool,
		// and another takes its place.
		go spawnWorker()
		select {}
	}
	for r := range spawner.reqs {
		err := r.start()
		if errors.Is(err, ErrThreadTainted) {
			// Returning still locked makes Go end the thread; what it
			// forked gets its parent-death signal, as the start failed.
			r.done <- err
			return
		}
		spawner.mu.Lock()
		spawner.idle++
		spawner.mu.Unlock()
		r.done <- err
	}
}

// spawn runs start, which forks cmd, on a spawner thread, after putting cmd
// in a process group of its own with SIGKILL as its parent-death signal.
func spawn(cmd *exec.Cmd, start func() error) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A group of its own lets a stop reach every process the app forked.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	spawner.mu.Lock()
	if spawner.reqs == nil {
		spawner.reqs = make(chan spawnReq)
	}
	if spawner.idle == 0 {
		spawner.idle++
		go spawnWorker()
	}
	// Reserve a worker; it becomes idle again once this start returns.
	spawner.idle--
	spawner.mu.Unlock()
	r := spawnReq{start: start, done: make(chan error, 1)}
	spawner.reqs <- r
	return <-r.done
}
