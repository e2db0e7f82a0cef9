package eval

import (
	"context"
	"fmt"
	"slices"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/threshold"
)

// SKABFileWindows scales f with a scaler fitted on its first fitRows rows and cuts every row
// into windows of window rows (flattened, time-major; window w ends at row w+window−1). The
// first fitRows−window+1 windows are the file's training windows.
func SKABFileWindows(f *Series, fitRows, window int) (models.Matrix, error) {
	if window < 1 || fitRows < window || fitRows > f.X.Rows {
		return models.Matrix{}, fmt.Errorf("skab %s: window %d over %d fitting rows of %d; expected 1 ≤ window ≤ fitting rows ≤ rows", f.Name, window, fitRows, f.X.Rows)
	}
	sc, err := features.FitScaler(f.Signals, f.X.Slice(0, fitRows))
	if err != nil {
		return models.Matrix{}, fmt.Errorf("skab %s: %w", f.Name, err)
	}
	scaled := models.Matrix{Rows: f.X.Rows, Cols: f.X.Cols, Data: slices.Clone(f.X.Data)}
	sc.TransformMatrix(scaled)
	wins, _, err := features.Windows(scaled, trueSlice(scaled.Rows), window, 1)
	if err != nil {
		return models.Matrix{}, fmt.Errorf("skab %s: %w", f.Name, err)
	}
	return wins, nil
}

// RunSKABShared runs SKAB's protocol with one detector, already fitted, for every file instead
// of a fresh one per file: a model trained elsewhere (centrally, by one factory, or by a
// federation). Each file is scaled by its own training rows (SKABFileWindows), its threshold
// comes from the detector's scores on its training windows (so every file is calibrated on
// its own normal data, and comparing detectors compares the models), and the test rows are
// predicted and counted as RunSKAB does. Cross-fitting would refit the detector, so
// cfg.CrossFit must be off.
func RunSKABShared(ctx context.Context, files []*Series, cfg SKABConfig, det models.Detector) (*SKABResult, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("skab: %w", err)
	}
	if cfg.CrossFit {
		return nil, fmt.Errorf("skab: cross_fit is set; a shared detector is not refitted, so its threshold comes from the in-sample training scores")
	}
	res := &SKABResult{Changepoints: NewChangepointScore()}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if f.X.Rows <= cfg.TrainRows || len(f.Anomaly) != f.X.Rows || len(f.Changepoint) != f.X.Rows {
			return nil, fmt.Errorf("skab %s: %d rows with %d/%d labels; expected more than %d rows, each labelled", f.Name, f.X.Rows, len(f.Anomaly), len(f.Changepoint), cfg.TrainRows)
		}
		wins, err := SKABFileWindows(f, cfg.TrainRows, cfg.Window)
		if err != nil {
			return nil, err
		}
		scores := make([]float64, wins.Rows)
		if err := det.Score(wins, scores); err != nil {
			return nil, fmt.Errorf("skab %s: score: %w", f.Name, err)
		}
		th, err := threshold.Fit(cfg.Threshold, scores[:cfg.TrainRows-cfg.Window+1])
		if err != nil {
			return nil, fmt.Errorf("skab %s: %w", f.Name, err)
		}
		fr, err := predictSKABFile(f, scores, cfg, th.Value*cfg.ThresholdFactor)
		if err != nil {
			return nil, fmt.Errorf("skab %s: %w", f.Name, err)
		}
		if err := res.add(f, fr, cfg); err != nil {
			return nil, fmt.Errorf("skab %s: %w", f.Name, err)
		}
	}
	return res, nil
}
