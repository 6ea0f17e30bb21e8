package supervisor

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// The kernel sends the parent-death signal when the *thread* that forked a
// child exits, not the process. Go may end an OS thread at any time (a locked
// goroutine returning takes its thread with it), so every child is forked
// from a thread locked by a goroutine that never returns: the signal then
// fires exactly when the runner process dies, even by SIGKILL. The threads
// form a pool that grows when starts overlap, so one start that hangs (a
// sandbox launcher stuck in its setup) never holds back the others.
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
	for r := range spawner.reqs {
		err := r.start()
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
