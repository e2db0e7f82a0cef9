package eval

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/threshold"
)

// SKABConfig configures the SKAB protocol run. The published protocol fixes TrainRows (400) and
// CPWindow (60 s); the rest is the detector set-up under test.
type SKABConfig struct {
	// TrainRows is how many leading rows of each file train the detector and its threshold
	// (default 400, as published).
	TrainRows int
	// CPWindow is the width of the scoring window to the right of each changepoint (default
	// 60 s, as published).
	CPWindow time.Duration
	// Window is the number of rows per detector input (flattened, time-major); the score of a
	// row is that of the window ending at it. Test rows whose window reaches back into the
	// training rows use them as past context, which is data a live detector has too.
	Window int
	// Threshold derives the alarm level from the detector's scores on the training windows.
	Threshold threshold.Config
	// CrossFit sets the threshold from out-of-fold scores of the training rows (two halves,
	// each scored by a detector fitted on the other) instead of the in-sample scores, which
	// understate how a detector scores normal data it has not seen.
	CrossFit bool
	// CrossFitFolds is the number of contiguous blocks of training windows cross-fitting
	// uses (default 2: two halves). With more, each block is scored by a detector fitted on
	// the windows before and after it, so slow drift over the training rows weighs less
	// than when one half has to predict the other.
	CrossFitFolds int
	// ThresholdFactor multiplies the fitted threshold (default 1; SKAB's Conv-AE uses 4/3 of
	// its training quantile).
	ThresholdFactor float64
	// Alarm, when set, debounces the point predictions with the alarm the gateway raises live
	// (K of N windows above the threshold raise it, ClearCount windows below ClearRatio of it
	// clear it): a row is predicted anomalous while the alarm is active. Nil predicts each row
	// by its own window's score.
	Alarm *threshold.AlarmConfig
}

// SetDefaults fills zero values with the defaults.
func (c *SKABConfig) SetDefaults() {
	if c.TrainRows == 0 {
		c.TrainRows = 400
	}
	if c.CPWindow == 0 {
		c.CPWindow = 60 * time.Second
	}
	if c.Window == 0 {
		c.Window = 1
	}
	c.Threshold.SetDefaults()
	if c.ThresholdFactor == 0 {
		c.ThresholdFactor = 1
	}
	if c.Alarm != nil {
		c.Alarm.SetDefaults()
	}
}

// Validate reports every problem of c.
func (c SKABConfig) Validate() error {
	var p config.Problems
	if c.TrainRows < 2 {
		p.Addf("train_rows", "train_rows %d; expected at least 2", c.TrainRows)
	}
	if c.CPWindow <= 0 {
		p.Addf("cp_window", "cp_window %v; expected a positive duration", c.CPWindow)
	}
	if c.Window < 1 || c.Window >= c.TrainRows {
		p.Addf("window", "window %d is out of range; expected 1 to train_rows-1 (%d)", c.Window, c.TrainRows-1)
	}
	p.Nest("threshold", c.Threshold.Validate())
	if !(c.ThresholdFactor > 0) || math.IsInf(c.ThresholdFactor, 0) {
		p.Addf("threshold_factor", "threshold_factor %v; expected a positive number", c.ThresholdFactor)
	}
	if c.Alarm != nil {
		p.Nest("alarm", c.Alarm.Validate())
	}
	if c.CrossFitFolds < 0 || c.CrossFitFolds == 1 || c.CrossFitFolds > 64 {
		p.Addf("cross_fit_folds", "cross_fit_folds %d is out of range; expected 0 (two halves) or 2 to 64", c.CrossFitFolds)
	}
	return p.Err()
}

// folds is the cross-fitting folds windowScores uses (0: none).
func (c SKABConfig) folds() int {
	switch {
	case !c.CrossFit:
		return 0
	case c.CrossFitFolds == 0:
		return 2
	}
	return c.CrossFitFolds
}

// NewDetector returns a fresh, untrained detector; the protocols call it once per file.
type NewDetector func() (models.Detector, error)

// SKABFileResult is the outcome on one file's test part.
type SKABFileResult struct {
	Name      string
	Confusion Confusion
	Threshold float64
	Pred      []bool // per test row
}

// SKABResult is the outcome of the SKAB protocol over a directory.
type SKABResult struct {
	Files        []SKABFileResult
	Confusion    Confusion // over all test rows of all files
	Changepoints *ChangepointScore
}

// RunSKAB runs SKAB's published protocol: per file, a fresh detector and scaler learn from the
// first TrainRows rows, the threshold comes from the detector's scores on those rows, and the
// rest of the file is predicted. Point-wise F1/FAR/MAR are counted over the test rows of all
// files together; the changepoint score compares |Δ prediction| with the labelled changepoints
// of the test rows, 60 s windows to their right.
func RunSKAB(ctx context.Context, files []*Series, cfg SKABConfig, newDetector NewDetector) (*SKABResult, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("skab: %w", err)
	}
	res := &SKABResult{Changepoints: NewChangepointScore()}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fr, err := runSKABFile(ctx, f, cfg, newDetector)
		if err != nil {
			return nil, fmt.Errorf("skab %s: %w", f.Name, err)
		}
		if err := res.add(f, fr, cfg); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// add counts one file's predictions into r: its confusion over the test rows and its
// changepoints against the labelled ones of the test rows.
func (r *SKABResult) add(f *Series, fr *SKABFileResult, cfg SKABConfig) error {
	test := f.Anomaly[cfg.TrainRows:]
	if err := fr.Confusion.Add(test, fr.Pred); err != nil {
		return err
	}
	r.Confusion.TP += fr.Confusion.TP
	r.Confusion.TN += fr.Confusion.TN
	r.Confusion.FP += fr.Confusion.FP
	r.Confusion.FN += fr.Confusion.FN
	times := f.Times[cfg.TrainRows:]
	var cps []time.Time
	for i, c := range f.Changepoint[cfg.TrainRows:] {
		if c {
			cps = append(cps, times[i])
		}
	}
	if err := r.Changepoints.Add(times, PredictedChangepoints(fr.Pred), RightWindows(cps, cfg.CPWindow)); err != nil {
		return err
	}
	r.Files = append(r.Files, *fr)
	return nil
}

func runSKABFile(ctx context.Context, f *Series, cfg SKABConfig, newDetector NewDetector) (*SKABFileResult, error) {
	scores, base, err := scoreSKABFile(ctx, f, cfg, newDetector)
	if err != nil {
		return nil, err
	}
	return predictSKABFile(f, scores, cfg, base*cfg.ThresholdFactor)
}

// scoreSKABFile fits the scaler, the detector and the threshold on the file's training rows
// and scores every window of the file (window w ends at row w+Window−1). base is the fitted
// threshold before ThresholdFactor.
func scoreSKABFile(ctx context.Context, f *Series, cfg SKABConfig, newDetector NewDetector) (scores []float64, base float64, err error) {
	if f.X.Rows <= cfg.TrainRows {
		return nil, 0, fmt.Errorf("%d rows; expected more than the %d training rows", f.X.Rows, cfg.TrainRows)
	}
	if len(f.Anomaly) != f.X.Rows || len(f.Changepoint) != f.X.Rows {
		return nil, 0, fmt.Errorf("labels cover %d/%d of %d rows; expected anomaly and changepoint labels on every row", len(f.Anomaly), len(f.Changepoint), f.X.Rows)
	}
	sc, err := features.FitScaler(f.Signals, f.X.Slice(0, cfg.TrainRows))
	if err != nil {
		return nil, 0, err
	}
	scaled := models.Matrix{Rows: f.X.Rows, Cols: f.X.Cols, Data: slices.Clone(f.X.Data)}
	sc.TransformMatrix(scaled)
	scores, trainScores, err := windowScores(ctx, scaled, cfg.TrainRows, cfg.Window, cfg.folds(), newDetector)
	if err != nil {
		return nil, 0, err
	}
	th, err := threshold.Fit(cfg.Threshold, trainScores)
	if err != nil {
		return nil, 0, err
	}
	return scores, th.Value, nil
}

// predictSKABFile predicts the file's test rows from its window scores at threshold level.
func predictSKABFile(f *Series, scores []float64, cfg SKABConfig, level float64) (*SKABFileResult, error) {
	rowPred, err := predictRows(scores, f.X.Rows, cfg, level)
	if err != nil {
		return nil, err
	}
	return &SKABFileResult{Name: f.Name, Threshold: level, Pred: rowPred[cfg.TrainRows:]}, nil
}

func trueSlice(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}
