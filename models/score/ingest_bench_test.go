package score

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/pipeline"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// replaySource hands out n batches, then reports when the last is acknowledged.
type replaySource struct {
	batches []telemetry.Batch
	n, next int
	acked   atomic.Int64
	done    chan struct{}
}

func (r *replaySource) Connect(context.Context) error { return nil }
func (r *replaySource) Close(context.Context) error   { return nil }

func (r *replaySource) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	if r.next == r.n {
		<-ctx.Done()
		return telemetry.Batch{}, nil, ctx.Err()
	}
	if r.next > 0 && r.next%len(r.batches) == 0 {
		// Another round of the same data, later: time keeps moving forward. The batches of
		// the round before are stored and tapped already (the pipeline reads one at a time).
		for _, b := range r.batches {
			for i := range b.Points {
				b.Points[i].SourceTime += int64(len(r.batches)) * int64(time.Second)
			}
		}
	}
	b := r.batches[r.next%len(r.batches)]
	r.next++
	return b, func(context.Context, error) {
		if r.acked.Add(1) == int64(r.n) {
			close(r.done)
		}
	}, nil
}

type discardSink struct{}

func (discardSink) Connect(context.Context) error                { return nil }
func (discardSink) Close(context.Context) error                  { return nil }
func (discardSink) Write(context.Context, telemetry.Batch) error { return nil }

// BenchmarkIngest measures the pipeline's ingest (source → write-ahead log, fsync off →
// acknowledgement) of batches of 100 machines × 5 signals, with live scoring of one of the
// machines off and on. With scoring on, the scorer's goroutine competes for the same cores.
func BenchmarkIngest(b *testing.B) {
	m := trainedModel(b)
	// 100 machines: pump-1 (scored) and 99 others, one second of each per batch.
	steps := pump(b)[7200 : 7200+600]
	batches := make([]telemetry.Batch, len(steps))
	for i, pts := range steps {
		for k := range 100 {
			for _, p := range pts {
				if k > 0 {
					p.Machine = "other-" + string(rune('a'+k%26)) + string(rune('a'+k/26))
				}
				batches[i].Points = append(batches[i].Points, p)
			}
		}
	}
	for _, mode := range []string{"off", "on"} {
		b.Run("scoring="+mode, func(b *testing.B) {
			var cfg buffer.Config
			cfg.SetDefaults()
			cfg.Dir, cfg.Fsync = b.TempDir(), buffer.FsyncOff
			wal, err := buffer.Open(cfg, []string{"out"})
			if err != nil {
				b.Fatal(err)
			}
			defer wal.Close()
			src := &replaySource{batches: batches, n: b.N, done: make(chan struct{})}
			opts := pipeline.Options{Registerer: prometheus.NewRegistry(), Factory: "acme"}
			var s *Scorer
			if mode == "on" {
				s, err = New(defaultConfig(), "acme", Options{Points: &fakeWriter{}})
				if err != nil {
					b.Fatal(err)
				}
				s.Install(m)
				opts.Tap = s.Offer
			}
			e, err := pipeline.New(wal, []pipeline.Source{{Name: "src", Source: src}},
				[]pipeline.Sink{{Name: "out", Sink: discardSink{}, Cursor: wal.Reader("out")}}, opts)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, 2)
			if s != nil {
				go func() { _ = s.Run(ctx); done <- struct{}{} }()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			go func() { _ = e.Run(ctx); done <- struct{}{} }()
			<-src.done
			el := time.Since(start)
			b.StopTimer()
			cancel()
			<-done
			if s != nil {
				<-done
				b.ReportMetric(testutil.ToFloat64(s.m.skippedBatches), "skipped_batches")
				b.ReportMetric(testutil.ToFloat64(s.m.windows), "windows")
			}
			b.ReportMetric(float64(b.N*len(batches[0].Points))/el.Seconds(), "points/s")
		})
	}
}

// BenchmarkOffer measures what the tap costs the ingest goroutine per batch of 100 machines
// × 5 signals, one of them scored: filtering and copying into the queue.
func BenchmarkOffer(b *testing.B) {
	m := trainedModel(b)
	s, err := New(defaultConfig(), "acme", Options{})
	if err != nil {
		b.Fatal(err)
	}
	s.Install(m)
	var batch telemetry.Batch
	for k := range 100 {
		for _, p := range pump(b)[7200] {
			if k > 0 {
				p.Machine = "other-" + string(rune('a'+k%26)) + string(rune('a'+k/26))
			}
			batch.Points = append(batch.Points, p)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // drain as Run would, without scoring
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case bp := <-s.in:
				*bp = (*bp)[:0]
				s.pool.Put(bp)
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s.Offer(batch)
	}
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch.Points)), "ns/point")
}
