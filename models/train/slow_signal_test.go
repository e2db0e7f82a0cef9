package train_test

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/models/train"
)

type slowNoQuerier struct{}

func (slowNoQuerier) Query(context.Context, string, func(map[string]any) error) error { return nil }

// slowHistory returns 3 h of machine m1 at 1 Hz; every(sig, i) says whether signal sig has
// a sample at second i.
func slowHistory(t0 time.Time, signals []string, every func(sig string, i int) bool) *train.History {
	h := &train.History{Factory: "acme", Machine: "m1", From: t0, To: t0.Add(3 * time.Hour)}
	r := rand.New(rand.NewPCG(1, 3))
	for i := range 3 * 3600 {
		at := t0.Add(time.Duration(i) * time.Second).UnixNano()
		x := math.Sin(2*math.Pi*float64(i)/30) + 0.1*r.NormFloat64()
		for j, sig := range signals {
			if every(sig, i) {
				h.Points = append(h.Points, telemetry.Point{Factory: "acme", Machine: "m1", Signal: sig, SourceTime: at,
					Value: telemetry.Float(float64(j+1)*x + 0.1*r.NormFloat64())})
			}
		}
	}
	return h
}

func slowTrainer(t *testing.T) *train.Trainer {
	t.Helper()
	var cfg train.Config
	cfg.SetDefaults()
	cfg.Machines, cfg.Window, cfg.MinRows = []string{"m1"}, 3*time.Hour, 1000
	tr, err := train.New(cfg, train.Options{Querier: slowNoQuerier{}, Factory: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestSlowSignalIsLeftOutAndTheMachineTrains: with the default features (fill_limit 5,
// window_size 10), a signal sampled every 10 s has values in 60 % of the rows (more than
// min_coverage 0.5) but in no 10 consecutive rows, so no window can be complete with it.
// It is left out of the model as a sparse signal is, listed in the artifact's dropped
// signals, and the machine trains on its other signals (it used to find 0 complete windows
// and never get a model).
func TestSlowSignalIsLeftOutAndTheMachineTrains(t *testing.T) {
	t0 := time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)
	h := slowHistory(t0, []string{"a", "b", "c"}, func(sig string, i int) bool { return sig != "b" || i%10 == 0 })
	res, err := slowTrainer(t).TrainHistory(context.Background(), h, nil)
	if err != nil {
		t.Fatalf("3 h of 1 Hz data with one signal every 10 s: %v", err)
	}
	if !slices.Equal(res.Dropped, []string{"b"}) || !slices.Equal(res.Model.Artifact.Dropped, []string{"b"}) {
		t.Errorf("dropped %v (artifact %v); want [b]", res.Dropped, res.Model.Artifact.Dropped)
	}
	if got := res.Model.Signals(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("model signals %v; want [a c]", got)
	}
}

// TestNoCompleteWindowErrorNamesTheSignalsAndSettings: when no window can be complete, the
// error names the signals with gaps, their coverage and longest gap, and the settings that
// would fix it (fill_limit with the value that bridges the gap, step, min_coverage).
func TestNoCompleteWindowErrorNamesTheSignalsAndSettings(t *testing.T) {
	t0 := time.Date(2026, 1, 6, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		signals []string
		every   func(sig string, i int) bool
		want    []string
	}{
		{"the only signal every 10 s", []string{"b"}, func(_ string, i int) bool { return i%10 == 0 },
			[]string{`"b" has values in 60% of the rows`, "runs of at most 6 rows", "gaps of up to 4 rows of 1s", "fill_limit 9 would bridge them", "window_size 10", "min_coverage"}},
		{"two signals taking turns every 20 s", []string{"a", "c"}, func(sig string, i int) bool { return (i/20%2 == 0) == (sig == "a") },
			[]string{"0 complete windows", `"a" has values in 62% of the rows`, `"c" has values in 6`, "gaps of up to 15 rows of 1s", "fill_limit 20 would bridge them", "step (1s)", "min_coverage (0.5)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := slowTrainer(t).TrainHistory(context.Background(), slowHistory(t0, tc.signals, tc.every), nil)
			if err == nil {
				t.Fatal("trained; want an error: no window can be complete")
			}
			if !strings.Contains(err.Error(), "too little data") {
				t.Errorf("error %q does not say too little data (the training is counted as skipped and retried)", err)
			}
			t.Logf("training: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
