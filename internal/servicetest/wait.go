package servicetest

import (
	"testing"
	"time"
)

// WaitFor polls cond every few milliseconds until it holds, and fails t when it still does
// not hold after timeout; what names the awaited state in the failure. It is for states
// that other goroutines or processes reach in real time; code driven only by timers is
// tested with testing/synctest instead.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
