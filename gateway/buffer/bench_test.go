package buffer_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// benchBatch is a 1,000-point batch shaped like a real read: ten machines, fifty signals,
// millisecond timestamps, float values.
func benchBatch() telemetry.Batch {
	b := telemetry.Batch{Points: make([]telemetry.Point, 1000)}
	base := int64(1_700_000_000_000_000_000)
	for i := range b.Points {
		b.Points[i] = telemetry.Point{
			Factory: "plant-a", Line: "line-1", Machine: fmt.Sprintf("press-%02d", i%10), Signal: fmt.Sprintf("signal-%02d", i%50),
			SourceTime: base + int64(i)*1e6, ServerTime: base + int64(i)*1e6 + 3e5, Value: telemetry.Float(float64(i) * 0.25),
		}
	}
	return b
}

// BenchmarkAppend appends 1,000-point batches from one goroutine, and under fsync=batch
// also from eight, whose appends share writes and fsyncs (group commit). The log drops its
// oldest segments to stay within 128MiB.
func BenchmarkAppend(b *testing.B) {
	cases := []struct {
		fsync     string
		appenders int
	}{{buffer.FsyncOff, 1}, {buffer.FsyncBatch, 1}, {buffer.FsyncBatch, 8}}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("fsync=%s/appenders=%d", tc.fsync, tc.appenders), func(b *testing.B) {
			cfg := testConfig(b, func(c *buffer.Config) {
				c.Fsync = tc.fsync
				c.SegmentBytes = 16 << 20
				c.MaxBytes = 128 << 20
				c.Overflow = buffer.OverflowDropOldest
			})
			w, _ := openWAL(b, cfg, "sink")
			batch := benchBatch()
			ctx := context.Background()
			b.ReportAllocs()
			if tc.appenders == 1 {
				for b.Loop() {
					if err := w.Append(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism((tc.appenders + 1) / 2) // GOMAXPROCS goroutines each
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := w.Append(ctx, batch); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N*batch.Len())/b.Elapsed().Seconds(), "points/s")
		})
	}
}

// BenchmarkReadNext reads 5,000-point batches (five records) and commits them.
func BenchmarkReadNext(b *testing.B) {
	cfg := testConfig(b, func(c *buffer.Config) { c.SegmentBytes = 16 << 20; c.MaxBytes = 1 << 30 })
	w, _ := openWAL(b, cfg, "sink")
	r := w.Reader("sink")
	batch := benchBatch()
	ctx := context.Background()
	fill := func() {
		for range 500 {
			if err := w.Append(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill()
	points := 0
	b.ReportAllocs()
	for b.Loop() {
		if rec, _ := r.Pending(); rec == 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		got, pos, err := r.Next(ctx, 5000, 0)
		if err != nil {
			b.Fatal(err)
		}
		points += got.Len()
		if err := r.Commit(pos); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(points)/b.Elapsed().Seconds(), "points/s")
}
