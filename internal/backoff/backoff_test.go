package backoff

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	wantMax := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range wantMax {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Errorf("wait %d = %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after Reset wait = %v", d)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if !Sleep(context.Background(), time.Minute) {
			t.Error("a full wait reported as interrupted")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if Sleep(ctx, time.Hour) {
			t.Error("an interrupted wait reported as full")
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Sleep returned after %v, want when the context ended (1s)", d)
		}
	})
}

// TestRetry: Retry calls try with backoff until it succeeds, passes every failure to
// failed, logs only the 1st, 2nd, 3rd, 5th, 9th, ... and stops when the context ends,
// without counting the failure the ending caused.
func TestRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		b := Backoff{Initial: time.Second, Max: time.Minute}
		calls, failures := 0, 0
		ok := Retry(context.Background(), &b, log, "cannot connect", func(context.Context) error {
			calls++
			if calls <= 10 {
				return errors.New("refused")
			}
			return nil
		}, func(error) { failures++ })
		if !ok || calls != 11 || failures != 10 || b.Attempts() != 10 {
			t.Errorf("Retry = %v after %d calls, %d failures, %d attempts; want true, 11, 10, 10", ok, calls, failures, b.Attempts())
		}
		var logged []string
		for _, m := range regexp.MustCompile(`msg="cannot connect" err=refused attempt=(\d+)`).FindAllStringSubmatch(buf.String(), -1) {
			logged = append(logged, m[1])
		}
		if want := []string{"1", "2", "3", "5", "9"}; !slices.Equal(logged, want) {
			t.Errorf("logged attempts %q; want %q\n%s", logged, want, buf.String())
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Reset()
		failures = 0
		start := time.Now()
		ok = Retry(ctx, &b, log, "cannot connect", func(ctx context.Context) error {
			if time.Since(start) >= 5*time.Second {
				<-ctx.Done()
				return ctx.Err()
			}
			return errors.New("refused")
		}, func(error) { failures++ })
		if ok || time.Since(start) != 10*time.Second || failures == 0 || failures != b.Attempts() {
			t.Errorf("Retry = %v after %v, %d failures, %d waits; want false when the context ends (10s), the ending not counted", ok, time.Since(start), failures, b.Attempts())
		}
	})
}
