// Package backoff computes the jittered, exponentially growing waits between retries that every reconnecting or retrying loop of Millwright uses.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes exponentially growing waits with jitter between Initial and Max.
// It is not safe for concurrent use; each retry loop owns one.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	attempt int
}

// Next returns the wait before the next attempt: the n-th call waits a random duration in
// [d/2, d] where d = min(Max, Initial·2ⁿ), so retries of many gateways spread out.
func (b *Backoff) Next() time.Duration {
	d := b.Initial << min(b.attempt, 30)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	b.attempt++
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// Reset starts again from Initial after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts returns how many waits were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Sleep waits for d or until ctx is done, and reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
