package train

import (
	"runtime"
	"testing"
)

// TestLowerPriorityOnlyThisThread: the training goroutine's thread gets the nice value;
// another thread keeps its own.
func TestLowerPriorityOnlyThisThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("thread priorities are set on Linux only")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := threadNice()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		nice int
		err  error
	}
	got := make(chan result, 1)
	go func() {
		release, err := lowerPriority(before + 5)
		defer release()
		if err != nil {
			got <- result{err: err}
			return
		}
		n, err := threadNice()
		got <- result{n, err}
	}()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.nice != before+5 {
		t.Errorf("training thread nice %d, want %d", r.nice, before+5)
	}
	if after, _ := threadNice(); after != before {
		t.Errorf("this thread's nice changed from %d to %d", before, after)
	}
}
