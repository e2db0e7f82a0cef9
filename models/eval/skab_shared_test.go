package eval

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/millwright-io/millwright/models"
)

// maxAbs is a detector that needs no fitting: a window's score is its largest |value|.
type maxAbs struct{}

func (maxAbs) Kind() string                             { return "max_abs" }
func (maxAbs) Fit(context.Context, models.Matrix) error { return nil }
func (maxAbs) Score(x models.Matrix, out []float64) error {
	for i := range x.Rows {
		out[i] = 0
		for _, v := range x.Row(i) {
			out[i] = math.Max(out[i], math.Abs(v))
		}
	}
	return nil
}

// spikedSeries is rows of 2 noisy signals at offset+scale·N(0,1), with rows [from, to) shifted
// by 10 standard deviations and labelled anomalous.
func spikedSeries(name string, rows, from, to int, offset, scale float64, seed uint64) *Series {
	r := rand.New(rand.NewPCG(seed, 1))
	s := &Series{Name: name, Signals: []string{"a", "b"}, X: models.NewMatrix(rows, 2),
		Anomaly: make([]bool, rows), Changepoint: make([]bool, rows)}
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		s.Times = append(s.Times, t0.Add(time.Duration(i)*time.Second))
		for j := range 2 {
			v := r.NormFloat64()
			if i >= from && i < to {
				v += 10
				s.Anomaly[i] = true
			}
			s.X.Data[i*2+j] = offset + scale*v
		}
	}
	s.Changepoint[from], s.Changepoint[to] = true, true
	return s
}

// TestRunSKABShared checks that one shared detector is calibrated per file by the file's own
// training rows: two files at very different levels and scales both have their spikes found
// and nothing else, and every test row is counted once.
func TestRunSKABShared(t *testing.T) {
	files := []*Series{
		spikedSeries("a/1.csv", 700, 500, 550, 0, 1, 1),
		spikedSeries("b/1.csv", 650, 450, 520, 1000, 50, 2),
	}
	cfg := SKABConfig{Window: 1}
	res, err := RunSKABShared(context.Background(), files, cfg, maxAbs{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Confusion
	if got, want := c.TP+c.TN+c.FP+c.FN, 300+250; got != want {
		t.Errorf("%d test rows counted, want %d", got, want)
	}
	if c.TP != 50+70 || c.FN != 0 || c.FP > 3 {
		t.Errorf("confusion %+v; want all 120 spike rows found and at most 3 false alarms", c)
	}
	if len(res.Files) != 2 || res.Files[0].Threshold > 5 || res.Files[1].Threshold > 5 {
		t.Errorf("files %d, thresholds %v, %v; want 2 files with thresholds of scaled noise (< 5)", len(res.Files), res.Files[0].Threshold, res.Files[1].Threshold)
	}

	// A 3-row window ending in a spike row sees it: same detections with windows.
	cfg.Window = 3
	if res, err = RunSKABShared(context.Background(), files, cfg, maxAbs{}); err != nil {
		t.Fatal(err)
	} else if res.Confusion.TP != 120 {
		t.Errorf("window 3: confusion %+v; want 120 true positives", res.Confusion)
	}

	for _, tc := range []struct {
		name  string
		cfg   SKABConfig
		files []*Series
	}{
		{"cross-fit", SKABConfig{CrossFit: true}, files},
		{"too short", SKABConfig{}, []*Series{spikedSeries("c.csv", 400, 100, 120, 0, 1, 3)}},
		{"window beyond training rows", SKABConfig{Window: 400}, files},
	} {
		if _, err := RunSKABShared(context.Background(), tc.files, tc.cfg, maxAbs{}); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestBenchmarkData(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "skab"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(DataEnv, dir)
	if p, err := BenchmarkData("skab"); err != nil || p != filepath.Join(dir, "skab") {
		t.Errorf("BenchmarkData(skab) = %q, %v; want %q", p, err, filepath.Join(dir, "skab"))
	}
	if _, err := BenchmarkData("cmapss"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("BenchmarkData(cmapss) error %v; want one wrapping fs.ErrNotExist", err)
	}
}
