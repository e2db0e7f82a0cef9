package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/telemetry"
)

// staleSink loses its connection after every write: the next Write returns ErrNotConnected
// until Close and Connect are called again (as a sink whose client must be rebuilt, to read
// rotated TLS files say, would). failConnects Connect calls after the first fail.
type staleSink struct {
	mu           sync.Mutex
	state        string // "closed", "fresh" (the next write succeeds) or "lost"
	failConnects int
	connects     int // successful ones
	connectErrs  int
	closes       int
	misuse       []string // calls the contract does not allow
	points       []telemetry.Point
}

func newStaleSink(failConnects int) *staleSink {
	return &staleSink{state: "closed", failConnects: failConnects}
}

func (s *staleSink) Connect(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == "lost" {
		s.misuse = append(s.misuse, "Connect on a lost connection without Close")
	}
	if s.connects > 0 && s.failConnects > 0 {
		s.failConnects--
		s.connectErrs++
		return errors.New("peer unreachable")
	}
	s.connects++
	s.state = "fresh"
	return nil
}

func (s *staleSink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes++
	s.state = "closed"
	return nil
}

func (s *staleSink) Write(_ context.Context, b telemetry.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case "closed":
		s.misuse = append(s.misuse, "Write on a closed sink")
		return fmt.Errorf("closed: %w", connectors.ErrNotConnected)
	case "lost":
		return fmt.Errorf("stale connection: %w", connectors.ErrNotConnected)
	}
	s.state = "lost" // the connection is lost after this write
	s.points = append(s.points, b.Points...)
	return nil
}

// sliceCursor hands out its batches in order, one per Next, then blocks; it records commits.
type sliceCursor struct {
	mu      sync.Mutex
	batches []telemetry.Batch
	next    int
	commits []buffer.Position
}

func (c *sliceCursor) Next(ctx context.Context, _ int, _ time.Duration) (telemetry.Batch, buffer.Position, error) {
	c.mu.Lock()
	if c.next < len(c.batches) {
		defer c.mu.Unlock()
		c.next++
		return c.batches[c.next-1], buffer.Position(c.next), nil
	}
	c.mu.Unlock()
	<-ctx.Done()
	return telemetry.Batch{}, 0, ctx.Err()
}

func (c *sliceCursor) Commit(pos buffer.Position) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits = append(c.commits, pos)
	return nil
}

// TestSinkReconnectsAfterNotConnected checks the contract of connectors.ErrNotConnected for
// sinks: the engine calls Close and Connect again (retrying a failing Connect with backoff),
// then writes the same batch, so nothing is lost or reordered.
func TestSinkReconnectsAfterNotConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newStaleSink(2)
		cur := &sliceCursor{batches: []telemetry.Batch{batch(1, 5), batch(2, 5), batch(3, 5)}}
		reg := prometheus.NewRegistry()
		e, err := New(nopLog{}, nil, []Sink{{Name: "out", Sink: sink, Cursor: cur, MaxPoints: 5, Linger: time.Millisecond}},
			Options{Registerer: reg, BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		stop := runEngine(e)
		time.Sleep(time.Minute) // far beyond the backoff; no real time passes
		synctest.Wait()

		sink.mu.Lock()
		var want []telemetry.Point
		for _, b := range cur.batches {
			want = append(want, b.Points...)
		}
		if !slices.Equal(sink.points, want) {
			t.Errorf("the sink stored %d points; want the 3 batches' 15 points, in order, each once", len(sink.points))
		}
		// One connection per batch: the first Connect, then Close and Connect after each of
		// the two ErrNotConnected, the second reconnect failing twice first.
		if sink.connects != 3 || sink.connectErrs != 2 || sink.closes != 2 {
			t.Errorf("Connect succeeded %d times and failed %d, Close called %d times; want 3, 2 and 2", sink.connects, sink.connectErrs, sink.closes)
		}
		for _, m := range sink.misuse {
			t.Errorf("the engine broke the sink contract: %s", m)
		}
		sink.mu.Unlock()
		if !slices.Equal(cur.commits, []buffer.Position{1, 2, 3}) {
			t.Errorf("commits %v; want [1 2 3]", cur.commits)
		}
		if got := testutil.ToFloat64(e.m.connectErrors.WithLabelValues("sink", "out")); got != 2 {
			t.Errorf("millwright_connect_errors_total{kind=sink} = %v; want 2", got)
		}
		if err := e.Ready(); err != nil {
			t.Errorf("Ready after reconnecting: %v", err)
		}
		stop()
	})
}

// retryAfterSink fails every write with a Retry-After, recording when each was attempted.
type retryAfterSink struct {
	after    time.Duration
	mu       sync.Mutex
	attempts []time.Time
}

type retryAfterErr struct{ d time.Duration }

func (e retryAfterErr) Error() string {
	return fmt.Sprintf("429 Too Many Requests (retry after %s)", e.d)
}
func (e retryAfterErr) RetryAfter() time.Duration { return e.d }

func (s *retryAfterSink) Connect(context.Context) error { return nil }
func (s *retryAfterSink) Close(context.Context) error   { return nil }
func (s *retryAfterSink) Write(context.Context, telemetry.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, time.Now())
	return retryAfterErr{s.after}
}

// TestRetryAfterIsHonouredBeyondBackoffMax: influxdb.WriteError promises "the pipeline waits
// at least that long before retrying" for a server's Retry-After, also when it is longer
// than BackoffMax; only a wait beyond MaxRetryAfter is cut to it.
func TestRetryAfterIsHonouredBeyondBackoffMax(t *testing.T) {
	for _, tt := range []struct {
		retryAfter, wantGap time.Duration
	}{
		{2 * time.Minute, 2 * time.Minute}, // 4 times BackoffMax
		{24 * time.Hour, MaxRetryAfter},
	} {
		t.Run(tt.retryAfter.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := &retryAfterSink{after: tt.retryAfter}
				e, err := New(nopLog{}, nil, []Sink{{Name: "out", Sink: sink, Cursor: &oneBatchCursor{}, MaxPoints: 10, Linger: time.Millisecond}},
					Options{Registerer: prometheus.NewRegistry()}) // default BackoffMax 30 s
				if err != nil {
					t.Fatal(err)
				}
				stop := runEngine(e)
				time.Sleep(5*tt.wantGap + tt.wantGap/2)
				stop()
				sink.mu.Lock()
				defer sink.mu.Unlock()
				if len(sink.attempts) != 6 {
					t.Errorf("%d writes in %s; want 6, one every %s", len(sink.attempts), 5*tt.wantGap+tt.wantGap/2, tt.wantGap)
				}
				for i := 1; i < len(sink.attempts); i++ {
					if d := sink.attempts[i].Sub(sink.attempts[i-1]); d != tt.wantGap {
						t.Errorf("retry %d came %s after the previous write, which the server answered with Retry-After %s; want %s", i, d, tt.retryAfter, tt.wantGap)
						break
					}
				}
			})
		})
	}
}

type nopLog struct{}

func (nopLog) Append(context.Context, telemetry.Batch) error { return nil }

// oneBatchCursor returns one batch, then blocks.
type oneBatchCursor struct{ given bool }

func (c *oneBatchCursor) Next(ctx context.Context, _ int, _ time.Duration) (telemetry.Batch, buffer.Position, error) {
	if !c.given {
		c.given = true
		return batch(1, 3), 1, nil
	}
	<-ctx.Done()
	return telemetry.Batch{}, 0, ctx.Err()
}
func (c *oneBatchCursor) Commit(buffer.Position) error { return nil }
