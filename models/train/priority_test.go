package train

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// lockThread locks the test's goroutine to its thread until the test ends and returns
// the thread's nice value; it skips the test where thread priorities are not set.
func lockThread(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("thread priorities are set on Linux only")
	}
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	n, err := threadNice()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLowerPriorityOnlyThisThread: the training goroutine's thread gets the nice value;
// another thread keeps its own.
func TestLowerPriorityOnlyThisThread(t *testing.T) {
	before := lockThread(t)
	type result struct {
		nice int
		err  error
	}
	got := make(chan result, 1)
	go func() {
		release, err := lowerPriority(before + 5)
		defer release()
		if err != nil {
			got <- result{err: err}
			return
		}
		n, err := threadNice()
		got <- result{n, err}
	}()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.nice != before+5 {
		t.Errorf("training thread nice %d, want %d", r.nice, before+5)
	}
	if after, _ := threadNice(); after != before {
		t.Errorf("this thread's nice changed from %d to %d", before, after)
	}
}

// niceQuerier records the nice value of the thread each query runs on, and answers no rows.
type niceQuerier struct{ nice chan int }

func (q niceQuerier) Query(context.Context, string, func(map[string]any) error) error {
	n, err := threadNice()
	if err != nil {
		return err
	}
	q.nice <- n
	return nil
}

// TestTrainFromRunsAtTrainingPriority: a federated training reads and fits on a thread
// with the configured nice value, as the scheduled ones do; the caller's thread keeps its
// own.
func TestTrainFromRunsAtTrainingPriority(t *testing.T) {
	before := lockThread(t)
	if before+4 > 19 {
		t.Skipf("the test runs at nice %d already", before)
	}
	cfg := testConfig("db")
	cfg.Window, cfg.Chunk, cfg.Nice = time.Hour, time.Hour, before+4
	q := niceQuerier{nice: make(chan int, 1)}
	tr, err := New(cfg, Options{Querier: q, Factory: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.TrainFrom(context.Background(), "pump-1", WarmStart{From: "pumps@r1"}, nil); !errors.Is(err, errTooLittle) {
		t.Fatalf("TrainFrom: %v; want too little data", err)
	}
	if got := <-q.nice; got != before+4 {
		t.Errorf("federated training read at nice %d, want %d", got, before+4)
	}
	if after, _ := threadNice(); after != before {
		t.Errorf("the caller's thread nice changed from %d to %d", before, after)
	}
}
