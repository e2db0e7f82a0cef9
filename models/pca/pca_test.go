package pca

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/modeltest"
)

func TestComponentsFollowExplainedVariance(t *testing.T) {
	x := modeltest.Latent(3000, 12, 1)
	if k := fit(t, Config{ExplainedVariance: 0.95}, x).State().K; k != 2 {
		t.Errorf("two latent factors with little noise: kept %d components, want 2", k)
	}
	if k := fit(t, Config{ExplainedVariance: 1}, x).State().K; k != 12 {
		t.Errorf("explained_variance 1: kept %d components, want all 12", k)
	}
	if k := fit(t, Config{ExplainedVariance: 0.95, MaxComponents: 1}, x).State().K; k != 1 {
		t.Errorf("max_components 1: kept %d", k)
	}
}

// The control limits hold their nominal false-alarm rate on fresh Gaussian data.
func TestControlLimitsCalibrated(t *testing.T) {
	// Independent Gaussian columns with distinct variances: T² and Q are then exactly the
	// statistics whose limits the theory gives.
	gen := func(n int, seed uint64) models.Matrix {
		r := rand.New(rand.NewPCG(seed, 3))
		m := models.NewMatrix(n, 8)
		for i := range m.Data {
			m.Data[i] = r.NormFloat64() * float64(8-i%8)
		}
		return m
	}
	d := fit(t, Config{ExplainedVariance: 0.7, Alpha: 0.01}, gen(20000, 1))
	test := gen(20000, 2)
	var t2Over, qOver int
	for i := range test.Rows {
		t2, q, err := d.Stats(test.Row(i))
		if err != nil {
			t.Fatal(err)
		}
		if t2 > d.State().T2Limit {
			t2Over++
		}
		if q > d.State().QLimit {
			qOver++
		}
	}
	for name, n := range map[string]int{"T²": t2Over, "Q": qOver} {
		if rate := float64(n) / float64(test.Rows); rate < 0.005 || rate > 0.02 {
			t.Errorf("%s exceeds its 1%% limit on %.2f%% of normal rows", name, 100*rate)
		}
	}
}

func TestDetectsOffPlaneAndContributions(t *testing.T) {
	x := modeltest.Latent(2000, 10, 1)
	d := fit(t, Config{ExplainedVariance: 0.99}, x)
	test := modeltest.Latent(200, 10, 2)
	base := modeltest.Scores(t, d, test)
	test.Row(5)[7] += 3 // breaks the correlation: off the model plane
	after := modeltest.Scores(t, d, test)
	if after[5] < 10*base[5] || after[5] < 2 {
		t.Errorf("a broken correlation scores %v (was %v); want far above the limits (2)", after[5], base[5])
	}
	c := make([]float64, 10)
	if err := d.Contributions(test.Row(5), c); err != nil {
		t.Fatal(err)
	}
	top := 0
	for j := range c {
		if c[j] < 0 {
			t.Errorf("contribution %d is negative: %v", j, c[j])
		}
		if c[j] > c[top] {
			top = j
		}
	}
	if top != 7 {
		t.Errorf("top contribution is column %d (%v); want the shifted column 7", top, c)
	}
}

func TestProperties(t *testing.T) {
	t.Run("constant data", func(t *testing.T) {
		x := models.NewMatrix(100, 4)
		for i := range x.Data {
			x.Data[i] = 3.5
		}
		d := fit(t, Config{}, x)
		if d.State().K != 0 {
			t.Errorf("constant data kept %d components", d.State().K)
		}
		y := models.NewMatrix(2, 4)
		copy(y.Data, x.Data[:8])
		y.Data[5] = 4
		s := modeltest.Scores(t, d, y)
		if s[0] != 0 || !(s[1] > 1) || math.IsInf(s[1], 0) {
			t.Errorf("scores %v: want 0 for the training value and a finite alarm for a change", s)
		}
	})
	t.Run("constant column", func(t *testing.T) {
		x := modeltest.Latent(500, 6, 1)
		for i := range x.Rows {
			x.Row(i)[2] = 1
		}
		d := fit(t, Config{}, x)
		s := modeltest.Scores(t, d, modeltest.Latent(50, 6, 2))
		if err := models.CheckFinite("scores", s); err != nil {
			t.Error(err)
		}
	})
	t.Run("scaled data", func(t *testing.T) {
		x, y := modeltest.Latent(1000, 6, 1), modeltest.Latent(50, 6, 2)
		const c = 1000.0
		xs, ys := scaled(x, c), scaled(y, c)
		d, ds := fit(t, Config{}, x), fit(t, Config{}, xs)
		for i := range y.Rows {
			t2, q, _ := d.Stats(y.Row(i))
			t2s, qs, _ := ds.Stats(ys.Row(i))
			if math.Abs(t2s-t2) > 1e-6*max(1, t2) || math.Abs(qs-c*c*q) > 1e-6*c*c*max(1e-3, q) {
				t.Fatalf("row %d: T² %v→%v (want equal), Q %v→%v (want ×%v)", i, t2, t2s, q, qs, c*c)
			}
		}
		if a, b := modeltest.Scores(t, d, y), modeltest.Scores(t, ds, ys); math.Abs(a[3]-b[3]) > 1e-6*max(1, a[3]) {
			t.Errorf("combined score changed with the scale: %v vs %v", a[3], b[3])
		}
	})
}

func scaled(m models.Matrix, c float64) models.Matrix {
	out := models.NewMatrix(m.Rows, m.Cols)
	for i, v := range m.Data {
		out.Data[i] = v * c
	}
	return out
}

func TestErrors(t *testing.T) {
	d, _ := New(Config{})
	if err := d.Score(models.NewMatrix(1, 3), make([]float64, 1)); !errors.Is(err, models.ErrNotFitted) {
		t.Errorf("score before fit: %v", err)
	}
	if err := d.Fit(context.Background(), models.NewMatrix(1, 3)); err == nil {
		t.Error("fit on one row succeeded")
	}
	bad := models.NewMatrix(3, 2)
	bad.Data[3] = math.NaN()
	if err := d.Fit(context.Background(), bad); err == nil {
		t.Error("fit on NaN succeeded")
	}
	d = fit(t, Config{}, modeltest.Latent(100, 4, 1))
	if err := d.Score(models.NewMatrix(1, 5), make([]float64, 1)); err == nil {
		t.Error("score with 5 columns on a 4-column model succeeded")
	}
	if _, err := New(Config{Alpha: 0.7, Statistic: "x", ExplainedVariance: 2}); err == nil {
		t.Error("invalid config accepted")
	} else if n := len(errorsOf(err)); n != 3 {
		t.Errorf("invalid config: %d problems reported, want 3: %v", n, err)
	}
}

func errorsOf(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if u := errors.Unwrap(err); u != nil {
		return errorsOf(u)
	}
	return []error{err}
}

func TestStateRoundTrip(t *testing.T) {
	d := fit(t, Config{Statistic: StatQ}, modeltest.Latent(500, 6, 1))
	var r Detector
	b := modeltest.RoundTrip(t, d, &r, modeltest.Latent(20, 6, 2))
	var st map[string]any
	_ = json.Unmarshal(b, &st)
	st["k"] = 7
	bad, _ := json.Marshal(st)
	if err := r.UnmarshalState(bad); err == nil {
		t.Error("state with k inconsistent with components accepted")
	}
	if err := r.UnmarshalState(append(b[:len(b)-1:len(b)-1], []byte(`,"extra":1}`)...)); err == nil {
		t.Error("state with an unknown field accepted")
	}
}

func TestScoreAllocatesNothing(t *testing.T) {
	d := fit(t, Config{}, modeltest.Latent(500, 50, 1))
	y := modeltest.Latent(1, 50, 2)
	out := make([]float64, 1)
	if n := testing.AllocsPerRun(100, func() { _ = d.Score(y, out) }); n != 0 {
		t.Errorf("Score allocates %v times per call", n)
	}
	c := make([]float64, 50)
	if n := testing.AllocsPerRun(100, func() { _ = d.Contributions(y.Row(0), c) }); n != 0 {
		t.Errorf("Contributions allocates %v times per call", n)
	}
}

// TestGolden pins the components, limits and scores of a fixed data set; -update rewrites
// them after an intended change.
func TestGolden(t *testing.T) {
	d := fit(t, Config{}, modeltest.Latent(1000, 8, 11))
	y := modeltest.Latent(10, 8, 12)
	y.Row(9)[0] += 4
	st := d.State()
	got := append([]float64{float64(st.K), st.T2Limit, st.QLimit}, modeltest.Scores(t, d, y)...)
	modeltest.Golden(t, filepath.Join("testdata", "golden.json"), got, 1e-9)
}

// BenchmarkScore scores one window of the default feature shape (10 signals × 10 steps).
func BenchmarkScore(b *testing.B) {
	d := fit(b, Config{}, modeltest.Latent(5000, 100, 1))
	modeltest.BenchScore(b, d, modeltest.Latent(1, 100, 2))
}

// BenchmarkFit fits on one day of 1 Hz windows of 10 signals × 10 steps.
func BenchmarkFit(b *testing.B) {
	x := modeltest.Latent(86400, 100, 1)
	b.ReportAllocs()
	for b.Loop() {
		fit(b, Config{}, x)
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fit")
}

func fit(t testing.TB, cfg Config, x models.Matrix) *Detector {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return modeltest.Fit(t, d, x)
}
