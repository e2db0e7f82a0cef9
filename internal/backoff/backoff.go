// Package backoff computes the jittered, exponentially growing waits between retries that every reconnecting or retrying loop of Millwright uses.
package backoff

import (
	"context"
	"log/slog"
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

// Retry calls try until it returns nil or ctx ends, waiting b.Next() after each failure,
// and reports whether try succeeded. A failure once ctx has ended is not counted: Retry
// returns false at once. Each other failure is passed to failed (when not nil) and logged
// to log at warning level with msg, err and attempt, for the attempts Logged picks, so an
// outage of hours takes a few lines. b is not reset: b.Attempts() after a success is the
// number of failures before it.
func Retry(ctx context.Context, b *Backoff, log *slog.Logger, msg string, try func(context.Context) error, failed func(error)) bool {
	for {
		err := try(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if failed != nil {
			failed(err)
		}
		if n := b.Attempts() + 1; Logged(n) {
			log.Warn(msg, "err", err, "attempt", n)
		}
		if !Sleep(ctx, b.Next()) {
			return false
		}
	}
}

// Logged reports whether a retry loop logs its attempt-th failure (counting from 1): the
// 1st, 2nd, 3rd, 5th, 9th, 17th and so on, each gap twice the one before.
func Logged(attempt int) bool {
	n := attempt - 1
	return n&(n-1) == 0
}
