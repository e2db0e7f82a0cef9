package train

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/millwright-io/millwright/internal/servicetest"
)

func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

// countingQuerier answers every query with no rows and counts the queries.
type countingQuerier struct{ n atomic.Int64 }

func (q *countingQuerier) Query(context.Context, string, func(map[string]any) error) error {
	q.n.Add(1)
	return nil
}

// TestRunSchedule: Run trains at once the machines without a model, retries them hourly
// while they have none (a machine without data is skipped and counted), trains every
// machine every Interval once they have one, and returns when ctx ends.
func TestRunSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("db")
		cfg.Machines = []string{"a", "b"}
		cfg.Interval, cfg.Window, cfg.Chunk = 3*time.Hour, 2*time.Hour, time.Hour
		q := &countingQuerier{}
		var hasModel atomic.Bool // from 1h on, "a" has a model
		tr, err := New(cfg, Options{Querier: q, Factory: "acme", Current: func(m string) *Model {
			if m == "a" && hasModel.Load() {
				return &Model{Machine: "a"}
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- tr.Run(ctx) }()
		// Each training of a machine is two one-hour chunks: two queries.
		for i, step := range []struct {
			after   time.Duration
			queries int64
		}{
			{0, 4},          // at start: both machines, no model
			{time.Hour, 8},  // hourly retry: both still without a model
			{time.Hour, 10}, // 2h: a has a model now; only b is retried
			{time.Hour, 14}, // 3h: the interval: both
			{time.Hour, 16}, // 4h: b retried
		} {
			time.Sleep(step.after)
			synctest.Wait()
			if got := q.n.Load(); got != step.queries {
				t.Fatalf("%d queries, want %d", got, step.queries)
			}
			if i == 1 {
				hasModel.Store(true) // a's training at 1h succeeded
			}
		}
		if got := testutil.ToFloat64(tr.m.runs.WithLabelValues("skipped")); got != 8 {
			t.Fatalf("skipped trainings %v, want 8", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
