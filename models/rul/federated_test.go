package rul

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
)

func sharedPreprocessing(t *testing.T, fleets [][]Engine, k, window int) Preprocessing {
	t.Helper()
	p, err := SharedPreprocessing(fleets, k, window)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func closeAll(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*(1+math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestMergedStatsEqualCentralPreprocessing(t *testing.T) {
	all := fleet(11, 24, 1)
	central, err := fit(t, Config{Model: ModelRidge}, all).Preprocessing()
	if err != nil {
		t.Fatal(err)
	}
	p := sharedPreprocessing(t, [][]Engine{all[:5], all[5:15], all[15:]}, 1, 30)
	if !slices.Equal(p.Keep, central.Keep) {
		t.Fatalf("kept sensors %v, central %v", p.Keep, central.Keep)
	}
	closeAll(t, "mean", p.Mean[0], central.Mean[0], 1e-9)
	closeAll(t, "std", p.Std[0], central.Std[0], 1e-6)
	closeAll(t, "feature mean", p.FeatureMean, central.FeatureMean, 1e-6)
	closeAll(t, "feature std", p.FeatureStd, central.FeatureStd, 1e-6)

	// Statistics for other centroids do not merge.
	a, _ := CollectSensorStats(all[:3], [][Settings]float64{{0, 0, 100}})
	b, _ := CollectSensorStats(all[3:], [][Settings]float64{{1, 0, 100}})
	if err := a.Merge(b); err == nil {
		t.Error("merged statistics of different centroids")
	}
	var f FeatureStats
	if err := f.Merge(FeatureStats{Sum: []float64{1}, SumSq: []float64{1}}); err == nil {
		t.Error("merged feature statistics of different widths")
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	train := fleet(12, 12, 1)
	test, _ := truncate(13, fleet(14, 6, 1))
	cfg := Config{Members: 2, Hidden: []int{8, 4}, Epochs: 2, Seed: 3}
	a := fit(t, cfg, train)
	arch := a.Architecture()
	w := a.Weights()
	if arch.Kind != ArchitectureKind || arch.Inputs != numFeatures(8) || len(w) != arch.Params || arch.Params != a.Params()-a.preprocessingSize() {
		t.Fatalf("architecture %+v, %d weights, %d learned values", arch, len(w), a.Params())
	}
	p, err := a.Preprocessing()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetWeights(w); err == nil {
		t.Error("SetWeights before the preprocessing is known succeeded")
	}
	if err := b.SetPreprocessing(p); err != nil {
		t.Fatal(err)
	}
	if err := b.SetWeights(w[1:]); err == nil {
		t.Error("SetWeights accepted a short vector")
	}
	bad := slices.Clone(w)
	bad[3] = float32(math.NaN())
	if err := b.SetWeights(bad); err == nil {
		t.Error("SetWeights accepted NaN")
	}
	if err := b.SetWeights(w); err != nil {
		t.Fatal(err)
	}
	for _, e := range test {
		pa, _ := a.Predict(e)
		pb, err := b.Predict(e)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(pa-pb) > 1e-3 {
			t.Errorf("engine %d: %v after SetWeights, %v before", e.Unit, pb, pa)
		}
	}
	if !slices.Equal(b.Weights(), w) {
		t.Error("Weights after SetWeights differ from the vector set")
	}
	p.Keep = nil
	if err := b.SetPreprocessing(p); err == nil {
		t.Error("SetPreprocessing accepted no kept sensors")
	}
	r, _ := New(Config{Model: ModelRidge})
	if err := r.SetWeights(w); err == nil {
		t.Error("the ridge model accepted weights")
	}
}

// distance is the Euclidean distance between two weight vectors.
func distance(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i] - b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

func TestWarmFitContinuesAndProxLimitsDrift(t *testing.T) {
	train := fleet(15, 16, 1)
	test, truth := truncate(16, fleet(17, 20, 1))
	cfg := Config{Members: 1, Epochs: 1, Seed: 5}
	start := fit(t, cfg, train)
	p, _ := start.Preprocessing()
	w0 := start.Weights()
	cont := func(mu float64, seed uint64) *Regressor {
		c := cfg
		c.Epochs, c.ProxMu, c.Seed = 6, mu, seed
		r := warmFrom(t, c, p, w0)
		if err := r.Fit(context.Background(), train); err != nil {
			t.Fatal(err)
		}
		return r
	}
	free, again, prox := cont(0, 9), cont(0, 9), cont(5, 9)
	if !slices.Equal(free.Weights(), again.Weights()) {
		t.Error("a warm Fit with the same seed is not deterministic")
	}
	before, after := rmse(t, start, test, truth), rmse(t, free, test, truth)
	t.Logf("RMSE %.2f after 1 epoch, %.2f after 6 more from its weights", before, after)
	if !(after < before) {
		t.Errorf("continuing from the weights did not improve RMSE: %.2f, then %.2f", before, after)
	}
	dFree, dProx := distance(free.Weights(), w0), distance(prox.Weights(), w0)
	t.Logf("drift from the start: %.3f without the proximal term, %.3f with μ=5", dFree, dProx)
	if !(dProx < 0.8*dFree) {
		t.Errorf("the proximal term did not limit the drift: %.3f with, %.3f without", dProx, dFree)
	}
	if got, _ := free.Preprocessing(); !slices.Equal(got.FeatureMean, p.FeatureMean) {
		t.Error("a warm Fit refitted the fixed preprocessing")
	}
}

// warmFrom returns a regressor of cfg continuing from w under p.
func warmFrom(t *testing.T, cfg Config, p Preprocessing, w []float32) *Regressor {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetPreprocessing(p); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(w); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScheduleAndSteps(t *testing.T) {
	train := fleet(21, 6, 1)
	start := fit(t, Config{Members: 1, Epochs: 1, Seed: 2}, train)
	p, _ := start.Preprocessing()
	w0 := start.Weights()
	cycles := 0
	for _, e := range train {
		cycles += len(e.Cycles)
	}
	batches := (cycles + 63) / 64
	run := func(c Config) []float32 {
		c.Members, c.Seed = 1, 7
		r := warmFrom(t, c, p, w0)
		if err := r.Fit(context.Background(), train); err != nil {
			t.Fatal(err)
		}
		return r.Weights()
	}
	// One epoch under the step schedule is all in its last third: a quarter of the rate.
	if !slices.Equal(run(Config{Epochs: 1, LearningRate: 0.008}), run(Config{Epochs: 1, LearningRate: 0.002, Schedule: ScheduleConstant})) {
		t.Error("one epoch of the step schedule at 0.008 differs from one at a constant 0.002")
	}
	if slices.Equal(run(Config{Epochs: 1}), run(Config{Epochs: 1, Schedule: ScheduleConstant})) {
		t.Error("the constant schedule changed nothing")
	}
	// Steps ends a Fit after that many mini-batches, across epochs or within one.
	oneEpoch := run(Config{Epochs: 1, Schedule: ScheduleConstant})
	if !slices.Equal(run(Config{Epochs: 3, Steps: batches, Schedule: ScheduleConstant}), oneEpoch) {
		t.Errorf("3 epochs capped at %d steps (one epoch) differ from one epoch", batches)
	}
	few := run(Config{Epochs: 1, Steps: 2, Schedule: ScheduleConstant})
	if d, full := distance(few, w0), distance(oneEpoch, w0); !(d > 0 && d < full) {
		t.Errorf("2 steps moved the weights %.4f, a whole epoch of %d steps %.4f; want less but not nothing", d, batches, full)
	}
}

func TestSetDrift(t *testing.T) {
	train := fleet(22, 6, 1)
	start := fit(t, Config{Members: 2, Hidden: []int{8, 4}, Epochs: 1, Seed: 3}, train)
	p, _ := start.Preprocessing()
	w0 := start.Weights()
	// A negligible learning rate: the Fit moves the weights by the drift alone.
	cfg := Config{Members: 2, Hidden: []int{8, 4}, Epochs: 2, Seed: 4, LearningRate: 1e-12}
	fresh, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.SetPreprocessing(p); err != nil {
		t.Fatal(err)
	}
	if err := fresh.SetDrift(w0); err == nil {
		t.Error("SetDrift before SetWeights succeeded")
	}
	r := warmFrom(t, cfg, p, w0)
	drift := make([]float32, len(w0))
	for i := range drift {
		drift[i] = 0.01 * float32(i%7-3)
	}
	bad := slices.Clone(drift)
	bad[2] = float32(math.Inf(1))
	if err := r.SetDrift(bad); err == nil {
		t.Error("SetDrift accepted +Inf")
	}
	if err := r.SetDrift(drift[1:]); err == nil {
		t.Error("SetDrift accepted a short vector")
	}
	if err := r.SetDrift(drift); err != nil {
		t.Fatal(err)
	}
	if err := r.Fit(context.Background(), train); err != nil {
		t.Fatal(err)
	}
	got := r.Weights()
	for i := range got {
		if want := w0[i] + drift[i]; math.Abs(float64(got[i]-want)) > 1e-5 {
			t.Fatalf("weight %d is %v after the Fit; want the start %v plus the drift %v", i, got[i], w0[i], drift[i])
		}
	}
	// The drift is spent: the next Fit does not add it again.
	if err := r.Fit(context.Background(), train); err != nil {
		t.Fatal(err)
	}
	if d := distance(r.Weights(), got); d > 1e-5 {
		t.Errorf("a second Fit moved the weights %v; the drift was added again", d)
	}
	// SetWeights drops a drift set before it.
	r = warmFrom(t, cfg, p, w0)
	if err := r.SetDrift(drift); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(w0); err != nil {
		t.Fatal(err)
	}
	if err := r.Fit(context.Background(), train); err != nil {
		t.Fatal(err)
	}
	if d := distance(r.Weights(), w0); d > 1e-5 {
		t.Errorf("the Fit after SetWeights moved the weights %v; SetWeights should have dropped the drift", d)
	}
}

func TestRoundLearningRate(t *testing.T) {
	for _, c := range []struct {
		round, rounds uint64
		want          float64
	}{
		{1, 96, 1}, {64, 96, 1}, {65, 96, 0.25}, {96, 96, 0.25},
		{1, 3, 1}, {2, 3, 1}, {3, 3, 0.25},
		{1, 1, 0.25}, // one round is all last third, like one epoch
		{500, 0, 1},  // open-ended
	} {
		if got := RoundLearningRate(1, c.round, c.rounds); got != c.want {
			t.Errorf("round %d of %d: %v, want %v", c.round, c.rounds, got, c.want)
		}
	}
}

// A Fit that continues from another's weights and Adam state takes the same steps as one
// Fit of both lengths (full-batch, so the shuffle does not matter): Adam's moments and
// bias correction carry over. Without the state it does not; keeping only the second
// moments is neither. Bad states are refused, and SetWeights drops a state set before it.
func TestAdamStateContinuesTheOptimizer(t *testing.T) {
	train := fleet(31, 8, 1)
	cfg := Config{Members: 2, Hidden: []int{6, 3}, Epochs: 1, Seed: 4}
	start := fit(t, cfg, train)
	p, _ := start.Preprocessing()
	w0 := start.Weights()
	cfg.BatchSize, cfg.Schedule = 1<<20, ScheduleConstant // one mini-batch per epoch
	run := func(epochs int, w []float32, s *AdamState) *Regressor {
		c := cfg
		c.Epochs = epochs
		r := warmFrom(t, c, p, w)
		if s != nil {
			if err := r.SetAdamState(*s); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Fit(context.Background(), train); err != nil {
			t.Fatal(err)
		}
		return r
	}
	whole := run(6, w0, nil)
	half := run(3, w0, nil)
	st := half.AdamState()
	if st.StepsM != 3 || st.StepsV != 3 || len(st.M) != len(w0) || len(st.V) != len(w0) {
		t.Fatalf("state after 3 steps: steps %d/%d, %d and %d moments for %d weights", st.StepsM, st.StepsV, len(st.M), len(st.V), len(w0))
	}
	carried := run(3, half.Weights(), &st)
	fresh := run(3, half.Weights(), nil)
	second := run(3, half.Weights(), &AdamState{V: st.V, StepsV: st.StepsV})
	dCarried, dFresh, dSecond := distance(carried.Weights(), whole.Weights()), distance(fresh.Weights(), whole.Weights()), distance(second.Weights(), whole.Weights())
	t.Logf("distance to one Fit of 6 steps: %.2g carrying the state, %.2g second moments only, %.2g fresh", dCarried, dSecond, dFresh)
	if dCarried > 1e-5 || !(dFresh > 1e-3) || !(dSecond > 1e-3) {
		t.Errorf("distance to one Fit of 6 steps: %.2g carrying Adam's state (want ≈ 0, float32 rounding), %.2g fresh and %.2g with the second moments only (want > 0)", dCarried, dFresh, dSecond)
	}
	if got := carried.AdamState(); got.StepsM != 6 || got.StepsV != 6 {
		t.Errorf("steps after carrying: %d/%d, want 6/6", got.StepsM, got.StepsV)
	}

	r := warmFrom(t, cfg, p, w0)
	nan := slices.Clone(st.M)
	nan[2] = math.NaN()
	neg := slices.Clone(st.V)
	neg[1] = -1
	for _, bad := range []struct {
		name string
		s    AdamState
		want string
	}{
		{"short", AdamState{M: st.M[1:], StepsM: 3}, "set adam state M"},
		{"nan", AdamState{M: nan, StepsM: 3}, "value 2 is NaN"},
		{"negative second moment", AdamState{V: neg, StepsV: 3}, "V value 1 is -1"},
		{"steps without moments", AdamState{StepsV: 2}, "V steps 2 without its moments"},
		{"negative steps", AdamState{M: st.M, StepsM: -1}, "M steps -1"},
	} {
		if err := r.SetAdamState(bad.s); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error with %q", bad.name, err, bad.want)
		}
	}
	cold, _ := New(cfg)
	if err := cold.SetAdamState(st); err == nil {
		t.Error("SetAdamState before SetWeights succeeded")
	}
	if err := r.SetAdamState(st); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(w0); err != nil { // drops the state
		t.Fatal(err)
	}
	if err := r.Fit(context.Background(), train); err != nil {
		t.Fatal(err)
	}
	if again := run(1, w0, nil); !slices.Equal(r.Weights(), again.Weights()) {
		t.Error("a state set before SetWeights was used")
	}
}
