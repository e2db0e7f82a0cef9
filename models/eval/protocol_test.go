package eval

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/threshold"
)

// zDetector is a minimal detector for the protocol plumbing: the mean squared z-score of a row
// against the training columns' mean and spread. It records what it was fitted on and scored.
type zDetector struct {
	mean, std  []float64
	fitRows    int
	scoredRows int
	fitFirst   []float64 // first training row
}

func (d *zDetector) Kind() string { return "z" }

func (d *zDetector) Fit(_ context.Context, x models.Matrix) error {
	if err := x.Check(2); err != nil {
		return err
	}
	d.fitRows, d.fitFirst = x.Rows, append([]float64(nil), x.Row(0)...)
	d.mean, d.std = make([]float64, x.Cols), make([]float64, x.Cols)
	for i := range x.Rows {
		for j, v := range x.Row(i) {
			d.mean[j] += v / float64(x.Rows)
		}
	}
	for i := range x.Rows {
		for j, v := range x.Row(i) {
			d.std[j] += (v - d.mean[j]) * (v - d.mean[j]) / float64(x.Rows)
		}
	}
	for j := range d.std {
		d.std[j] = math.Sqrt(d.std[j]) + 1e-9
	}
	return nil
}

func (d *zDetector) Score(x models.Matrix, out []float64) error {
	if x.Cols != len(d.mean) || len(out) != x.Rows {
		return errors.New("shape")
	}
	d.scoredRows += x.Rows
	for i := range x.Rows {
		var s float64
		for j, v := range x.Row(i) {
			z := (v - d.mean[j]) / d.std[j]
			s += z * z
		}
		out[i] = s / float64(x.Cols)
	}
	return nil
}

// synthSKAB is a SKAB-like file: 600 rows at 1 Hz of 2 noisy signals, rows 450–519 shifted by
// 10σ (labelled anomalous, changepoints at 450 and 520, so their 60 s windows do not overlap), plus labelled rows in the training part
// that the protocol must ignore.
func synthSKAB(seed uint64) *Series {
	rng := rand.New(rand.NewPCG(seed, 1))
	const n = 600
	s := &Series{Name: "synth.csv", Signals: []string{"a", "b"}, X: models.NewMatrix(n, 2), Anomaly: make([]bool, n), Changepoint: make([]bool, n)}
	for i := range n {
		s.Times = append(s.Times, t0.Add(time.Duration(i)*time.Second))
		shift := 0.0
		if i >= 450 && i < 520 {
			shift = 10
			s.Anomaly[i] = true
		}
		s.X.Row(i)[0] = 5 + rng.NormFloat64() + shift
		s.X.Row(i)[1] = -3 + 2*rng.NormFloat64() - 2*shift
	}
	s.Changepoint[450], s.Changepoint[520] = true, true
	s.Anomaly[100], s.Changepoint[100] = true, true // in the training rows: not scored
	return s
}

func TestRunSKABPlumbing(t *testing.T) {
	for _, tt := range []struct {
		name     string
		cfg      SKABConfig
		fits     []int // rows of each Fit, in order
		minF1    float64
		minScore float64
	}{
		{
			name: "window 1", cfg: SKABConfig{Window: 1, Threshold: threshold.Config{Method: threshold.MethodQuantile}},
			fits: []int{400}, minF1: 0.95, minScore: 90,
		},
		{
			// Windows of 5 rows: 396 training windows; test rows 400..403 reach back into the
			// training rows. The alarm ends 4 rows late, which costs changepoint score.
			name: "window 5", cfg: SKABConfig{Window: 5, Threshold: threshold.Config{Method: threshold.MethodQuantile}},
			fits: []int{396}, minF1: 0.9, minScore: 60,
		},
		{
			// Cross-fitting: the full fit, then halves of (396−5)/2 = 195 windows and 396−200 = 196.
			name: "cross-fit", cfg: SKABConfig{Window: 5, CrossFit: true, Threshold: threshold.Config{Method: threshold.MethodQuantile}},
			fits: []int{396, 195, 196}, minF1: 0.9, minScore: 60,
		},
		{
			// Four blocks of 99 windows; each is scored by a detector fitted on the windows
			// that share no row with it: 396 − 99 − 4 at the ends, 396 − 99 − 8 inside.
			name: "cross-fit 4 folds", cfg: SKABConfig{Window: 5, CrossFit: true, CrossFitFolds: 4, Threshold: threshold.Config{Method: threshold.MethodQuantile}},
			fits: []int{396, 293, 289, 289, 293}, minF1: 0.9, minScore: 60,
		},
		{
			name: "alarm", cfg: SKABConfig{Window: 1, Threshold: threshold.Config{Method: threshold.MethodQuantile}, Alarm: &threshold.AlarmConfig{K: 3, N: 5}},
			fits: []int{400}, minF1: 0.9, minScore: 80,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var dets []*zDetector
			newDet := func() (models.Detector, error) {
				d := &zDetector{}
				dets = append(dets, d)
				return d, nil
			}
			files := []*Series{synthSKAB(1), synthSKAB(2)}
			res, err := RunSKAB(context.Background(), files, tt.cfg, newDet)
			if err != nil {
				t.Fatal(err)
			}
			if len(dets) != 2*len(tt.fits) {
				t.Fatalf("%d detectors made, want %d (a fresh one per fit per file)", len(dets), 2*len(tt.fits))
			}
			for i, d := range dets {
				if want := tt.fits[i%len(tt.fits)]; d.fitRows != want {
					t.Errorf("detector %d fitted on %d rows, want %d", i, d.fitRows, want)
				}
			}
			c := res.Confusion
			if total := c.TP + c.TN + c.FP + c.FN; total != 2*200 {
				t.Fatalf("%d rows scored, want the 2×200 test rows only", total)
			}
			if c.TP+c.FN != 2*70 {
				t.Errorf("%d anomalous test rows counted, want 140 (the training part's label is not scored)", c.TP+c.FN)
			}
			if res.Changepoints.Windows != 4 {
				t.Errorf("%d changepoint windows, want 4 (2 per file, none from the training part)", res.Changepoints.Windows)
			}
			if c.F1() < tt.minF1 {
				t.Errorf("F1 %.3f (%+v), want at least %v on a 10σ shift", c.F1(), c, tt.minF1)
			}
			if s := res.Changepoints.Normalized()[0]; s < tt.minScore {
				t.Errorf("changepoint score %.2f, want at least %v", s, tt.minScore)
			}
		})
	}
}

func TestRunSKABRejects(t *testing.T) {
	newDet := func() (models.Detector, error) { return &zDetector{}, nil }
	short := synthSKAB(1)
	short.X = short.X.Slice(0, 300)
	short.Times, short.Anomaly, short.Changepoint = short.Times[:300], short.Anomaly[:300], short.Changepoint[:300]
	if _, err := RunSKAB(context.Background(), []*Series{short}, SKABConfig{}, newDet); err == nil {
		t.Error("a file shorter than the training rows was accepted")
	}
	if _, err := RunSKAB(context.Background(), []*Series{synthSKAB(1)}, SKABConfig{Window: 400}, newDet); err == nil {
		t.Error("a window as long as the training part was accepted")
	}
	if _, err := RunSKAB(context.Background(), []*Series{synthSKAB(1)}, SKABConfig{CrossFit: true, CrossFitFolds: 1}, newDet); err == nil {
		t.Error("one cross-fitting fold was accepted")
	}
	if _, err := RunSKAB(context.Background(), []*Series{synthSKAB(1)}, SKABConfig{Window: 150, CrossFit: true, CrossFitFolds: 3}, newDet); err == nil {
		t.Error("folds too small for the window were accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RunSKAB(ctx, []*Series{synthSKAB(1)}, SKABConfig{}, newDet); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: %v, want context.Canceled", err)
	}
}

func TestRunNABPlumbing(t *testing.T) {
	files, err := ReadNABDir("testdata/nab")
	if err != nil {
		t.Fatal(err)
	}
	setup := Setup{
		Name: "z", New: func() (models.Detector, error) { return &zDetector{}, nil }, Window: 1,
		Threshold: threshold.Config{Method: threshold.MethodQuantile, Quantile: 0.99, Margin: 1}, ThresholdFactor: 2,
	}
	res, err := RunNAB(context.Background(), files, setup)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 1 || res.Windows != 1 || len(res.Profiles) != 3 {
		t.Fatalf("result %+v", res)
	}
	for _, p := range res.Profiles {
		// The +40 spike at rows 152–155 is inside the window 150–160: one TP, detected at row
		// 152 (position −(160−152+1)/11), so the score is close to perfect.
		if p.TP != 1 || p.FN != 0 {
			t.Errorf("%s: TP %d FN %d, want the window detected", p.Profile.Name, p.TP, p.FN)
		}
		if p.Normalized < 80 || p.Normalized > 100 {
			t.Errorf("%s: score %.2f, want 80..100", p.Profile.Name, p.Normalized)
		}
	}
}

func TestSetups(t *testing.T) {
	for _, name := range Setups() {
		s, err := LookupSetup(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.SKABConfig()
		cfg.SetDefaults()
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		d, err := s.New()
		if err != nil || d == nil {
			t.Errorf("%s: New() = %v, %v", name, d, err)
		}
	}
	if _, err := LookupSetup("oracle"); err == nil {
		t.Error("an unknown detector was found")
	}
}
