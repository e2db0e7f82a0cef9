//go:build !linux

package train

import "runtime"

// lowerPriority locks the calling goroutine to its OS thread; lowering a single thread's
// priority is implemented on Linux only.
func lowerPriority(int) (release func(), err error) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread, nil
}

func threadNice() (int, error) { return 0, nil }
