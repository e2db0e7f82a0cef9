package buffer_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/millwright-io/millwright/gateway/buffer"
)

// TestNextBatchesBySizeAndTime runs in a synctest bubble, so the lingers are measured on a
// fake clock that advances only when every goroutine waits.
func TestNextBatchesBySizeAndTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, err := buffer.Open(testConfig(t), []string{"sink"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		r := w.Reader("sink")
		ctx := context.Background()
		next := func(ctx context.Context, maxPoints int, linger time.Duration, want []int, wantWait time.Duration) {
			t.Helper()
			start := time.Now()
			b, _, err := r.Next(ctx, maxPoints, linger)
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			assertSeqs(t, seqsOf(t, b), want)
			if waited := time.Since(start); waited != wantWait {
				t.Fatalf("Next returned after %v, want %v", waited, wantWait)
			}
		}

		appendSeqs(t, w, 0, 5, 10)
		// Full by size: no linger.
		next(ctx, 30, time.Hour, []int{0, 1, 2}, 0)
		// The record that would overflow stays for the next call; then the linger runs out.
		next(ctx, 25, time.Hour, []int{3, 4}, time.Hour)

		// Records arriving within the linger after the first join the batch.
		go func() {
			time.Sleep(300 * time.Millisecond)
			appendSeqs(t, w, 5, 6, 10)
			time.Sleep(300 * time.Millisecond)
			appendSeqs(t, w, 6, 7, 10)
			time.Sleep(time.Second)
			appendSeqs(t, w, 7, 8, 10)
		}()
		next(ctx, 1000, time.Second, []int{5, 6}, 1300*time.Millisecond)
		// No linger: the first record alone, as soon as it arrives.
		next(ctx, 1000, 0, []int{7}, 300*time.Millisecond)

		// A record larger than maxPoints is returned whole, alone.
		appendSeqs(t, w, 8, 9, 50)
		appendSeqs(t, w, 9, 10, 5)
		next(ctx, 10, time.Hour, []int{8}, 0)

		// A context ending during the linger returns what was read.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		next(short, 1000, time.Hour, []int{9}, 100*time.Millisecond)

		// A context ending before any record is an error.
		if _, _, err := r.Next(short, 1000, 0); err != context.DeadlineExceeded {
			t.Fatalf("Next with an expired context = %v", err)
		}
	})
}
