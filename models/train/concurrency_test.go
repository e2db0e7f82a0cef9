package train

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/millwright-io/millwright/models"
)

// gateQuerier holds every query until the test releases it, and records how many
// queries (that is, trainings reading their history) run at once.
type gateQuerier struct {
	release chan struct{}

	mu           sync.Mutex
	active, most int
	queries      int
}

func (q *gateQuerier) Query(ctx context.Context, _ string, _ func(map[string]any) error) error {
	q.mu.Lock()
	q.active++
	q.queries++
	q.most = max(q.most, q.active)
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.active--
		q.mu.Unlock()
	}()
	select {
	case <-q.release:
		return nil // no rows: the training then stops with too little data
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *gateQuerier) state() (active, most, queries int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.active, q.most, q.queries
}

// waited returns the sample count and sum of the wait histogram of kind.
func waited(t *testing.T, tr *Trainer, kind string) (uint64, time.Duration) {
	t.Helper()
	var m dto.Metric
	if err := tr.m.wait.WithLabelValues(kind).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), time.Duration(m.GetHistogram().GetSampleSum() * float64(time.Second))
}

// TestScheduledAndFederatedTrainingsDoNotOverlap: while the scheduled run (Run) trains a
// machine, a federated training (TrainFrom) of the same trainer waits; it starts when the
// running one ends, the wait is measured (10 s of the bubble's clock) and the two never
// read history at the same time.
func TestScheduledAndFederatedTrainingsDoNotOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("db")
		cfg.Machines = []string{"pump-1"}
		cfg.Interval, cfg.Window, cfg.Chunk = 24*time.Hour, time.Hour, time.Hour // one query per training
		q := &gateQuerier{release: make(chan struct{})}
		tr, err := New(cfg, Options{Querier: q, Factory: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error)
		go func() { runDone <- tr.Run(ctx) }()
		synctest.Wait() // the scheduled training of pump-1 reads its history
		if active, _, _ := q.state(); active != 1 {
			t.Fatalf("%d trainings reading at start, want the scheduled one", active)
		}

		fedDone := make(chan error)
		go func() {
			_, err := tr.TrainFrom(ctx, "pump-2", WarmStart{Architecture: models.Architecture{Kind: "autoencoder"}, From: "pumps@r1"}, nil)
			fedDone <- err
		}()
		synctest.Wait() // the federated training waits for the scheduled one
		if active, _, queries := q.state(); active != 1 || queries != 1 {
			t.Fatalf("federated training started during the scheduled one: %d reading, %d queries", active, queries)
		}
		if got := testutil.ToFloat64(tr.m.waiting); got != 1 {
			t.Fatalf("waiting trainings %v, want 1", got)
		}

		time.Sleep(10 * time.Second)
		q.release <- struct{}{} // the scheduled training's query returns: it ends (too little data)
		synctest.Wait()         // the federated training now reads
		if active, _, queries := q.state(); active != 1 || queries != 2 {
			t.Fatalf("after the scheduled training: %d reading, %d queries; want the federated one", active, queries)
		}
		q.release <- struct{}{}
		if err := <-fedDone; !errors.Is(err, errTooLittle) {
			t.Fatalf("federated training: %v; want too little data", err)
		}
		if _, most, _ := q.state(); most != 1 {
			t.Fatalf("%d trainings ran at once, want 1", most)
		}
		if n, d := waited(t, tr, KindFederated); n != 1 || d != 10*time.Second {
			t.Errorf("federated wait: %d samples, %s; want 1 of 10s", n, d)
		}
		if n, d := waited(t, tr, KindLocal); n != 1 || d != 0 {
			t.Errorf("scheduled wait: %d samples, %s; want 1 of 0s", n, d)
		}
		if got := testutil.ToFloat64(tr.m.waiting); got != 0 {
			t.Errorf("waiting trainings %v after both, want 0", got)
		}
		cancel()
		if err := <-runDone; err != nil {
			t.Fatal(err)
		}
	})
}

// TestTrainingWaitEndsWithContext: a training waiting for the running one returns ctx's
// error when ctx ends, without reading anything; the running one is not disturbed.
func TestTrainingWaitEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("db")
		cfg.Window, cfg.Chunk = time.Hour, time.Hour
		cfg.ChunkTimeout = time.Hour // the running training's query outlasts the waiting one's deadline
		q := &gateQuerier{release: make(chan struct{})}
		tr, err := New(cfg, Options{Querier: q, Factory: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		first := make(chan error)
		go func() { _, err := tr.Train(context.Background(), "pump-1", nil); first <- err }()
		synctest.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err = tr.Train(ctx, "pump-2", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waiting training: %v; want the deadline", err)
		}
		if _, _, queries := q.state(); queries != 1 {
			t.Fatalf("%d queries; the cancelled training must not read", queries)
		}
		if got := testutil.ToFloat64(tr.m.waiting); got != 0 {
			t.Errorf("waiting trainings %v after the cancelled wait, want 0", got)
		}
		q.release <- struct{}{}
		if err := <-first; !errors.Is(err, errTooLittle) {
			t.Fatalf("running training: %v; want too little data", err)
		}
		// The slot is free again.
		go func() { q.release <- struct{}{} }()
		if _, err := tr.Train(context.Background(), "pump-2", nil); !errors.Is(err, errTooLittle) {
			t.Fatalf("training after the cancelled wait: %v", err)
		}
	})
}
