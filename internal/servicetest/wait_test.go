package servicetest

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	var calls atomic.Int32
	WaitFor(t, 10*time.Second, "the third call", func() bool { return calls.Add(1) == 3 })
	if got := calls.Load(); got != 3 {
		t.Errorf("cond called %d times, want 3 (until it held)", got)
	}
}
