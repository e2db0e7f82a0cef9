package autoencoder

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/modeltest"
)

func TestDeterministic(t *testing.T) {
	x := squashed(1000, 8, 1)
	a := train(t, Config{Seed: 5, Epochs: 5}, x).Params()
	b := train(t, Config{Seed: 5, Epochs: 5}, x).Params()
	c := train(t, Config{Seed: 6, Epochs: 5}, x).Params()
	if !slices.Equal(a, b) {
		t.Error("two fits with the same seed differ")
	}
	if slices.Equal(a, c) {
		t.Error("two fits with different seeds are equal")
	}
}

func TestParametric(t *testing.T) {
	x := squashed(1000, 8, 1)
	d := train(t, Config{Seed: 1, Layers: []int{6, 3, 6}, Activation: ActReLU, Epochs: 3}, x)
	arch := d.Architecture()
	want := 8*6 + 6 + 6*3 + 3 + 3*6 + 6 + 6*8 + 8
	if arch.Params != want || arch.Inputs != 8 || !slices.Equal(arch.Layers, []int{6, 3, 6}) || arch.Activation != ActReLU || arch.Kind != Kind || arch.Version != LayoutVersion {
		t.Fatalf("architecture %+v; want %d params", arch, want)
	}
	p := d.Params()
	if len(p) != want {
		t.Fatalf("%d params", len(p))
	}
	// The layout: the first layer's weights come first, row-major; its biases follow.
	// Setting the first output's bias moves the reconstruction only through that unit.
	other, _ := New(Config{Inputs: 8, Layers: []int{6, 3, 6}, Activation: ActReLU})
	if err := other.SetParams(p); err != nil {
		t.Fatal(err)
	}
	y := squashed(10, 8, 2)
	if a, b := modeltest.Scores(t, d, y), modeltest.Scores(t, other, y); !slices.Equal(a, b) {
		t.Errorf("the same parameters score differently: %v vs %v", a, b)
	}
	// The output bias of column 0 is the last layer's first bias: raising it adds to the
	// reconstruction of column 0 only.
	p2 := slices.Clone(p)
	p2[want-8] += 10
	_ = other.SetParams(p2)
	c := make([]float64, 8)
	_ = other.Contributions(y.Row(0), c)
	if modeltest.Argmax(c) != 0 {
		t.Errorf("output bias 0 moved column %d, not 0 (layout broken): %v", modeltest.Argmax(c), c)
	}
	if err := other.SetParams(p[:5]); err == nil {
		t.Error("a short vector was accepted")
	}
	p2[3] = float32(math.NaN())
	if err := other.SetParams(p2); err == nil {
		t.Error("a NaN parameter was accepted")
	}
	fresh, _ := New(Config{})
	if err := fresh.SetParams(p); err == nil {
		t.Error("SetParams without a known input width succeeded")
	}
}

func TestWarmStartAndProx(t *testing.T) {
	x := squashed(2000, 8, 1)
	global := train(t, Config{Seed: 1, Epochs: 3}, x).Params()
	dist := func(mu float64) float64 {
		d, _ := New(Config{Inputs: 8, Seed: 2, Epochs: 5, ProxMu: mu})
		if err := d.SetParams(global); err != nil {
			t.Fatal(err)
		}
		if err := d.Fit(context.Background(), squashed(2000, 8, 3)); err != nil {
			t.Fatal(err)
		}
		if !d.Report().WarmStart {
			t.Error("report does not say warm start")
		}
		var s float64
		for i, v := range d.Params() {
			s += float64((v - global[i]) * (v - global[i]))
		}
		return math.Sqrt(s)
	}
	free, prox := dist(0), dist(10)
	if !(prox < free/2) {
		t.Errorf("with μ=10 the weights moved %v from the global model, without %v; want much less", prox, free)
	}
}

func TestCancelLeavesDetectorUnchanged(t *testing.T) {
	x := squashed(1000, 8, 1)
	d := train(t, Config{Seed: 1, Epochs: 2}, x)
	before := d.Params()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Fit(ctx, x); !errors.Is(err, context.Canceled) {
		t.Fatalf("fit with a cancelled context: %v", err)
	}
	if !slices.Equal(before, d.Params()) {
		t.Error("a cancelled fit changed the parameters")
	}
}

func TestProperties(t *testing.T) {
	t.Run("constant data", func(t *testing.T) {
		x := models.NewMatrix(200, 5)
		for i := range x.Data {
			x.Data[i] = 2
		}
		d := train(t, Config{Seed: 1, Epochs: 20}, x)
		s := modeltest.Scores(t, d, x.Slice(0, 3))
		if err := models.CheckFinite("scores", s); err != nil || s[0] > 0.01 {
			t.Errorf("constant data scores %v (%v); want finite and small", s, err)
		}
	})
	t.Run("constant column", func(t *testing.T) {
		x := squashed(500, 6, 1)
		for i := range x.Rows {
			x.Row(i)[4] = 0
		}
		d := train(t, Config{Seed: 1, Epochs: 5}, x)
		if err := models.CheckFinite("scores", modeltest.Scores(t, d, squashed(20, 6, 2))); err != nil {
			t.Error(err)
		}
	})
	t.Run("scaled data", func(t *testing.T) {
		// Inputs are expected robust-scaled; huge raw values must still train to finite
		// weights and rank the anomaly first.
		x := squashed(1000, 6, 1)
		for i := range x.Data {
			x.Data[i] *= 1000
		}
		d := train(t, Config{Seed: 1, Epochs: 5}, x)
		y := squashed(20, 6, 2)
		for i := range y.Data {
			y.Data[i] *= 1000
		}
		y.Row(4)[1] += 5000
		s := modeltest.Scores(t, d, y)
		if err := models.CheckFinite("scores", s); err != nil || modeltest.Argmax(s) != 4 {
			t.Errorf("scores %v (%v); want finite, row 4 the highest", s, err)
		}
	})
}

// TestValidationSplit checks which rows early stopping holds out: 0 is the default tenth, a
// negative fraction none (training stops on the training loss), and out-of-range values are
// rejected.
func TestValidationSplit(t *testing.T) {
	x := squashed(200, 6, 1)
	for _, tc := range []struct {
		fraction  float64
		want      int
		wantError bool
	}{
		{fraction: 0, want: 20},
		{fraction: 0.25, want: 50},
		{fraction: -1, want: 0},
		{fraction: 0.6, wantError: true},
		{fraction: math.Inf(-1), wantError: true},
		{fraction: math.NaN(), wantError: true},
	} {
		d, err := New(Config{Seed: 1, Epochs: 2, ValidationFraction: tc.fraction})
		if tc.wantError {
			if err == nil {
				t.Errorf("fraction %v: no error; want one", tc.fraction)
			}
			continue
		}
		if err != nil {
			t.Fatalf("fraction %v: %v", tc.fraction, err)
		}
		if err := d.Fit(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		if r := d.Report(); r.ValidationRows != tc.want || r.TrainRows != x.Rows-tc.want {
			t.Errorf("fraction %v: %d validation and %d training rows; want %d and %d", tc.fraction, r.ValidationRows, r.TrainRows, tc.want, x.Rows-tc.want)
		}
	}
}

// TestLossConfig checks the loss settings: huber takes δ = 1 by default, and unknown losses,
// a non-positive or infinite δ, or a δ without the huber loss are rejected.
func TestLossConfig(t *testing.T) {
	for _, tc := range []struct {
		loss      string
		delta     float64
		wantDelta float64
		wantError bool
	}{
		{loss: ""},
		{loss: LossMSE},
		{loss: LossHuber, wantDelta: 1},
		{loss: LossHuber, delta: 2.5, wantDelta: 2.5},
		{loss: "mae", wantError: true},
		{loss: LossHuber, delta: -1, wantError: true},
		{loss: LossHuber, delta: math.Inf(1), wantError: true},
		{loss: LossHuber, delta: math.NaN(), wantError: true},
		{loss: LossMSE, delta: 1, wantError: true},
	} {
		d, err := New(Config{Loss: tc.loss, HuberDelta: tc.delta})
		switch {
		case tc.wantError && err == nil:
			t.Errorf("loss %q, δ %v: no error; want one", tc.loss, tc.delta)
		case !tc.wantError && err != nil:
			t.Errorf("loss %q, δ %v: %v", tc.loss, tc.delta, err)
		case err == nil && d.Config().HuberDelta != tc.wantDelta:
			t.Errorf("loss %q, δ %v: δ %v after defaults; want %v", tc.loss, tc.delta, d.Config().HuberDelta, tc.wantDelta)
		}
	}
}

// TestHuberResistsSpikes trains on rows where one column carries rare huge spikes (what a
// near-constant signal becomes after robust scaling): with the squared error the spikes
// dominate the gradient and the normal rows are learnt slowly; with the huber loss the
// same epochs reconstruct held-out normal rows about 3 times better (1.8 to 3.7 times over
// seeds 1 to 6), and a spiked row is still ranked first.
func TestHuberResistsSpikes(t *testing.T) {
	x := squashed(1200, 8, 1)
	for i := 0; i < x.Rows; i += 40 {
		x.Row(i)[7] = float64(1000 - 2000*(i/40%2)) // ±1000, so the column's mean stays small
	}
	held := squashed(300, 8, 2)
	errOn := func(loss string) (float64, *Detector) {
		d := train(t, Config{Seed: 3, Epochs: 40, Layers: []int{6, 3, 6}, Loss: loss}, x)
		return meanOf(modeltest.Scores(t, d, held)), d
	}
	mse, _ := errOn(LossMSE)
	huber, d := errOn(LossHuber)
	t.Logf("mean reconstruction error on held-out normal rows: mse %.4f, huber %.4f", mse, huber)
	if !(huber < 0.6*mse) {
		t.Errorf("huber-trained error %.4f is not below 0.6 × the mse-trained %.4f", huber, mse)
	}
	y := squashed(10, 8, 3)
	y.Row(6)[7] = 1000
	if s := modeltest.Scores(t, d, y); modeltest.Argmax(s) != 6 {
		t.Errorf("huber-trained scores %v; want row 6 the highest", s)
	}
}

func meanOf(s []float64) float64 {
	m := 0.0
	for _, v := range s {
		m += v
	}
	return m / float64(len(s))
}

func TestStateRoundTrip(t *testing.T) {
	d := train(t, Config{Seed: 1, Epochs: 3}, squashed(500, 6, 1))
	var r Detector
	b := modeltest.RoundTrip(t, d, &r, squashed(20, 6, 2))
	if !r.Architecture().Equal(d.Architecture()) || r.Report() != d.Report() {
		t.Error("architecture or report lost")
	}
	var st map[string]any
	_ = json.Unmarshal(b, &st)
	st["params"] = st["params"].([]any)[1:]
	bad, _ := json.Marshal(st)
	if err := r.UnmarshalState(bad); err == nil {
		t.Error("state with a short parameter vector accepted")
	}
	var notFitted Detector
	if _, err := notFitted.MarshalState(); !errors.Is(err, models.ErrNotFitted) {
		t.Errorf("marshal before fit: %v", err)
	}
}

func TestScoreAllocatesNothing(t *testing.T) {
	d := train(t, Config{Seed: 1, Epochs: 1}, squashed(300, 20, 1))
	y := squashed(1, 20, 2)
	out := make([]float64, 1)
	if n := testing.AllocsPerRun(100, func() { _ = d.Score(y, out) }); n != 0 {
		t.Errorf("Score allocates %v times per call", n)
	}
}

func TestGolden(t *testing.T) {
	d := train(t, Config{Seed: 42, Epochs: 8}, squashed(800, 8, 11))
	y := squashed(6, 8, 12)
	y.Row(5)[0] += 3
	modeltest.Golden(t, filepath.Join("testdata", "golden.json"), modeltest.Scores(t, d, y), 1e-6)
}

// BenchmarkScore scores one window of the default feature shape (10 signals × 10 steps)
// with the default layers.
func BenchmarkScore(b *testing.B) {
	d := train(b, Config{Seed: 1, Epochs: 1}, squashed(500, 100, 1))
	modeltest.BenchScore(b, d, squashed(1, 100, 2))
	b.ReportMetric(float64(d.Architecture().Params), "params")
}

// BenchmarkFit trains on one day of 1 Hz windows of 10 signals × 10 steps with the defaults
// (30,000 rows per epoch, early stopping).
func BenchmarkFit(b *testing.B) {
	x := squashed(86400, 100, 1)
	b.ReportAllocs()
	var d *Detector
	for b.Loop() {
		d = train(b, Config{Seed: 1}, x)
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fit")
	b.ReportMetric(float64(d.Report().Epochs), "epochs")
}

// squashed is nonlinear two-factor data: what an autoencoder learns better than PCA.
func squashed(n, p int, seed uint64) models.Matrix {
	return modeltest.Squash(modeltest.Latent(n, p, seed))
}

func train(t testing.TB, cfg Config, x models.Matrix) *Detector {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return modeltest.Fit(t, d, x)
}

func TestLearnsAndDetects(t *testing.T) {
	d := train(t, Config{Seed: 1}, squashed(4000, 16, 1))
	rep := d.Report()
	if rep.BestEpoch == 0 || rep.ValidationLoss > 0.05 || rep.ValidationRows != 400 {
		t.Fatalf("report %+v: want a best epoch, validation loss near the noise and 400 validation rows", rep)
	}
	test := squashed(200, 16, 2)
	base := modeltest.Scores(t, d, test)
	test.Row(5)[3] += 2
	s := modeltest.Scores(t, d, test)
	if s[5] < 5*base[5] {
		t.Errorf("a shifted column scores %v (normal %v)", s[5], base[5])
	}
	c := make([]float64, 16)
	if err := d.Contributions(test.Row(5), c); err != nil {
		t.Fatal(err)
	}
	if top := modeltest.Argmax(c); top != 3 {
		t.Errorf("top contribution is column %d; want 3: %v", top, c)
	}
}
