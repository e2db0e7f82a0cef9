package backoff

import (
	"context"
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
