package rul

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// fleet makes n synthetic run-to-failure engines of 120–220 cycles. Each cycle runs in one of
// conds operating conditions (setting 1 = 10·condition), which offsets every sensor by 50 per
// condition step; 8 sensors drift exponentially towards failure, the rest are constant.
func fleet(seed uint64, n, conds int) []Engine {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]Engine, n)
	for u := range out {
		life := 120 + rng.IntN(100)
		e := Engine{Unit: u + 1}
		for c := range life {
			var row [Settings + Sensors]float64
			cond := rng.IntN(conds)
			row[0], row[1], row[2] = 10*float64(cond)+0.01*rng.NormFloat64(), 0.001*rng.NormFloat64(), 100
			wear := math.Exp(float64(c-life) / 40)
			for s := range Sensors {
				if s >= 8 {
					row[Settings+s] = 42 // constant: dropped by the normalizer
					continue
				}
				row[Settings+s] = 500 + 50*float64(cond)*float64(s+1) + 3*wear*float64(s%3+1) + 0.3*rng.NormFloat64()
			}
			e.Cycles = append(e.Cycles, row)
		}
		out[u] = e
	}
	return out
}

// truncate cuts each engine at a random point, returning the true RUL after its last cycle.
func truncate(seed uint64, full []Engine) ([]Engine, []float64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	var test []Engine
	var truth []float64
	for _, e := range full {
		keep := 30 + rng.IntN(len(e.Cycles)-40)
		test = append(test, Engine{Unit: e.Unit, Cycles: e.Cycles[:keep]})
		truth = append(truth, math.Min(float64(len(e.Cycles)-keep), 125))
	}
	return test, truth
}

func rmse(t *testing.T, r *Regressor, test []Engine, truth []float64) float64 {
	t.Helper()
	var s float64
	for i, e := range test {
		p, err := r.Predict(e)
		if err != nil {
			t.Fatal(err)
		}
		if p < 0 || p > r.Config().Cap {
			t.Fatalf("prediction %v outside [0, cap]", p)
		}
		s += (p - truth[i]) * (p - truth[i])
	}
	return math.Sqrt(s / float64(len(test)))
}

func fit(t *testing.T, cfg Config, train []Engine) *Regressor {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Fit(context.Background(), train); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegressorLearnsDegradation(t *testing.T) {
	train := fleet(1, 40, 1)
	test, truth := truncate(2, fleet(3, 30, 1))
	// A constant guess of the mean RUL is the baseline a model must beat by far.
	var mean, base float64
	for _, v := range truth {
		mean += v / float64(len(truth))
	}
	for _, v := range truth {
		base += (v - mean) * (v - mean) / float64(len(truth))
	}
	base = math.Sqrt(base)
	for _, cfg := range []Config{
		{Model: ModelRidge},
		{Model: ModelMLP, Members: 1, Epochs: 8, Seed: 1},
	} {
		r := fit(t, cfg, train)
		got := rmse(t, r, test, truth)
		t.Logf("%s: RMSE %.2f (constant guess %.2f), %d parameters", cfg.Model, got, base, r.Params())
		if got > base/2 {
			t.Errorf("%s: RMSE %.2f, want under half the constant guess's %.2f", cfg.Model, got, base)
		}
		if len(r.norm.Keep) != 8 {
			t.Errorf("%s: kept %d sensors, want the 8 that vary", cfg.Model, len(r.norm.Keep))
		}
	}
}

func TestPerConditionNormalization(t *testing.T) {
	// Operating conditions shift the sensors far more than wear does; normalizing within the
	// condition removes the shift.
	train := fleet(4, 30, 3)
	test, truth := truncate(5, fleet(6, 30, 3))
	one := rmse(t, fit(t, Config{Model: ModelRidge, Conditions: 1}, train), test, truth)
	three := rmse(t, fit(t, Config{Model: ModelRidge, Conditions: 3}, train), test, truth)
	t.Logf("ridge RMSE: %.2f with one condition, %.2f with three", one, three)
	if three > 0.7*one {
		t.Errorf("RMSE with per-condition normalization %.2f, want well under the %.2f without", three, one)
	}
	r := fit(t, Config{Model: ModelRidge, Conditions: 3}, train)
	var got []float64
	for _, c := range r.norm.Centroids {
		got = append(got, math.Round(c[0]))
	}
	for _, want := range []float64{0, 10, 20} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("condition centroids (setting 1) %v, want 0, 10 and 20", got)
		}
	}
}

func TestDeterministic(t *testing.T) {
	train := fleet(7, 10, 1)
	test, _ := truncate(8, fleet(9, 5, 1))
	cfg := Config{Members: 2, Epochs: 2, Seed: 42}
	a, b := fit(t, cfg, train), fit(t, cfg, train)
	cfg.Seed = 43
	c := fit(t, cfg, train)
	differs := false
	for _, e := range test {
		pa, _ := a.Predict(e)
		pb, _ := b.Predict(e)
		pc, _ := c.Predict(e)
		if pa != pb {
			t.Fatalf("same seed, different predictions: %v and %v", pa, pb)
		}
		differs = differs || pa != pc
	}
	if !differs {
		t.Error("another seed gave identical predictions on every engine")
	}
}

func TestFitErrors(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Predict(Engine{Cycles: make([][Settings + Sensors]float64, 1)}); !errors.Is(err, ErrNotFitted) {
		t.Errorf("Predict before Fit: %v, want ErrNotFitted", err)
	}
	if err := r.Fit(context.Background(), nil); err == nil {
		t.Error("Fit without data did not fail")
	}
	flat := []Engine{{Unit: 1, Cycles: make([][Settings + Sensors]float64, 50)}}
	if err := r.Fit(context.Background(), flat); err == nil || !strings.Contains(err.Error(), "no sensor varies") {
		t.Errorf("Fit on constant sensors: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Fit(ctx, fleet(1, 3, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Fit with a cancelled context: %v", err)
	}
	if _, err := r.Predict(Engine{}); !errors.Is(err, ErrNotFitted) {
		t.Errorf("a failed Fit left the regressor fitted: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if d.Cap != 125 || d.Window != 30 || d.Model != ModelMLP {
		t.Errorf("defaults %+v", d)
	}
	bad := Config{Model: "forest", Window: 1, Cap: -1, Conditions: 100, Hidden: []int{0}, Members: 99, Epochs: -1, BatchSize: -1, LearningRate: 2, Schedule: "cosine", Steps: -1, Ridge: -1}
	err := bad.Validate()
	if err == nil {
		t.Fatal("a bad config validated")
	}
	for _, field := range []string{"model", "window", "cap", "conditions", "hidden[0]", "members", "epochs", "batch_size", "learning_rate", "schedule", "steps", "ridge"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	if _, err := New(bad); err == nil {
		t.Error("New accepted a bad config")
	}
}

func TestFitRidgeExact(t *testing.T) {
	// y = 2·x0 − 3·x1 + 5, with a negligible penalty.
	var x, y []float64
	for i := range 50 {
		a, b := float64(i%7)-3, float64(i%5)-2
		x = append(x, a, b)
		y = append(y, 2*a-3*b+5)
	}
	w, err := fitRidge(x, y, 2, 1e-12)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{2, -3, 5} {
		if math.Abs(w[i]-want) > 1e-6 {
			t.Errorf("w[%d] = %v, want %v", i, w[i], want)
		}
	}
}

func BenchmarkPredict(b *testing.B) {
	train := fleet(1, 20, 1)
	r, err := New(Config{Members: 3, Epochs: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Fit(context.Background(), train); err != nil {
		b.Fatal(err)
	}
	e := train[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Predict(e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(r.Params()), "params")
}
