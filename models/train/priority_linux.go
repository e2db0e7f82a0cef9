package train

import (
	"fmt"
	"runtime"
	"syscall"
)

// lowerPriority locks the calling goroutine to its OS thread and sets that thread's nice
// value. On Linux a nice value belongs to a thread (setpriority with PRIO_PROCESS and a
// thread id changes only that thread), so ingest on the other threads keeps its priority.
// The returned function unlocks the thread; it stays lowered, so it is not handed back to
// the Go scheduler's pool: LockOSThread without a matching unlock makes the runtime end
// the thread when the goroutine exits. Call release only from a goroutine that is about
// to exit.
func lowerPriority(nice int) (release func(), err error) {
	runtime.LockOSThread()
	if nice <= 0 {
		return runtime.UnlockOSThread, nil
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), nice); err != nil {
		return runtime.UnlockOSThread, fmt.Errorf("set nice %d on the training thread: %w", nice, err)
	}
	// Leave the goroutine locked: the thread dies with it instead of returning to the pool
	// with a lowered priority.
	return func() {}, nil
}

// threadNice returns the calling thread's nice value (for tests).
func threadNice() (int, error) {
	// The raw getpriority system call returns 20 - nice.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	if err != nil {
		return 0, err
	}
	return 20 - prio, nil
}
