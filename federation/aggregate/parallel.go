package aggregate

import (
	"runtime"
	"sync"
)

// minWork is the least work, in coordinates visited, worth a goroutine of its own: below
// it, starting and waiting for one costs more than it saves.
const minWork = 1 << 15

// forChunks calls fn on consecutive ranges [lo, hi) that cover [0, n), concurrently on up to
// GOMAXPROCS goroutines, each range costing at least minWork when one index costs work
// coordinates; it returns when every call has. Every rule here is computed coordinate by
// coordinate (or update by update) in the same order whatever the split, so the result
// does not depend on GOMAXPROCS.
func forChunks(n, work int, fn func(lo, hi int)) {
	k := min(runtime.GOMAXPROCS(0), n*max(work, 1)/minWork, n)
	if k <= 1 {
		fn(0, n)
		return
	}
	size := (n + k - 1) / k
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += size {
		wg.Go(func() { fn(lo, min(lo+size, n)) })
	}
	wg.Wait()
}
