package eval

import (
	"context"
	"fmt"
	"slices"

	"github.com/millwright-io/millwright/models"
	"github.com/millwright-io/millwright/models/features"
	"github.com/millwright-io/millwright/models/threshold"
)

// NABProfileResult is one profile's corpus score.
type NABProfileResult struct {
	Profile    NABProfile
	Raw, Null  float64
	Normalized float64
	TP, FP, FN int
}

// NABResult is the outcome of the NAB protocol over a corpus.
type NABResult struct {
	Files    int
	Windows  int
	Profiles []NABProfileResult
}

// RunNAB runs a detector over a NAB corpus: per file, a fresh scaler, detector and threshold
// learn from the probationary rows (the leading 15 %, which NAB does not score), every row is
// then predicted by the window ending at it (rows before the first full window are not
// detections); each alarm onset (a predicted row after an unpredicted one) is one detection, and the detections are scored with NAB's windows, scaled sigmoid and profiles,
// normalized over the corpus against the null and perfect detectors. NAB's per-profile threshold
// optimisation over the corpus is not done: the threshold is the detector's own, from data.
func RunNAB(ctx context.Context, files []*NABFile, setup Setup) (*NABResult, error) {
	cfg := setup.SKABConfig()
	cfg.SetDefaults()
	res := &NABResult{Files: len(files)}
	for _, p := range NABProfiles {
		res.Profiles = append(res.Profiles, NABProfileResult{Profile: p})
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		det, err := nabDetect(ctx, &f.Series, cfg, setup.New)
		if err != nil {
			return nil, fmt.Errorf("nab %s: %w", f.Name, err)
		}
		res.Windows += len(f.Windows)
		for i := range res.Profiles {
			s, err := NABScore(f.Times, det, f.Windows, res.Profiles[i].Profile)
			if err != nil {
				return nil, fmt.Errorf("nab %s: %w", f.Name, err)
			}
			pr := &res.Profiles[i]
			pr.Raw += s.Raw
			pr.Null += s.Null
			pr.TP += s.TP
			pr.FP += s.FP
			pr.FN += s.FN
		}
	}
	for i := range res.Profiles {
		pr := &res.Profiles[i]
		pr.Normalized = NABNormalize(pr.Raw, pr.Null, res.Windows, pr.Profile)
	}
	return res, nil
}

// nabDetect returns the detections of one file, learning from its probationary rows.
func nabDetect(ctx context.Context, s *Series, cfg SKABConfig, newDetector NewDetector) ([]bool, error) {
	train := NABProbation(s.X.Rows)
	if train < cfg.Window+1 {
		return nil, fmt.Errorf("%d probationary rows; expected more than the window of %d", train, cfg.Window)
	}
	sc, err := features.FitScaler(s.Signals, s.X.Slice(0, train))
	if err != nil {
		return nil, err
	}
	scaled := models.Matrix{Rows: s.X.Rows, Cols: s.X.Cols, Data: slices.Clone(s.X.Data)}
	sc.TransformMatrix(scaled)
	scores, trainScores, err := windowScores(ctx, scaled, train, cfg.Window, cfg.folds(), newDetector)
	if err != nil {
		return nil, err
	}
	th, err := threshold.Fit(cfg.Threshold, trainScores)
	if err != nil {
		return nil, err
	}
	pred, err := predictRows(scores, s.X.Rows, cfg, th.Value*cfg.ThresholdFactor)
	if err != nil {
		return nil, err
	}
	// One detection per alarm: its onset (a row predicted anomalous after one that was not).
	det := make([]bool, len(pred))
	for i, p := range pred {
		det[i] = p && (i == 0 || !pred[i-1])
	}
	return det, nil
}

// windowScores fits a fresh detector on the windows inside the first train rows of scaled and
// scores every window ending at each row; it returns all scores (window w ends at row
// w+window−1) and the scores that set the threshold. Those are the training windows' own
// scores, or with folds ≥ 2 their out-of-fold scores: the training windows are split into
// folds contiguous blocks, and each block is scored by a detector fitted on the windows that
// share no row with it. Two folds are two halves with a gap of one window between them.
func windowScores(ctx context.Context, scaled models.Matrix, train, window, folds int, newDetector NewDetector) (all, thScores []float64, err error) {
	wins, _, err := features.Windows(scaled, trueSlice(scaled.Rows), window, 1)
	if err != nil {
		return nil, nil, err
	}
	n := train - window + 1
	fitScore := func(fit, score models.Matrix) ([]float64, error) {
		det, err := newDetector()
		if err != nil {
			return nil, err
		}
		if err := det.Fit(ctx, fit); err != nil {
			return nil, fmt.Errorf("fit: %w", err)
		}
		out := make([]float64, score.Rows)
		if err := det.Score(score, out); err != nil {
			return nil, fmt.Errorf("score: %w", err)
		}
		return out, nil
	}
	if all, err = fitScore(wins.Slice(0, n), wins); err != nil {
		return nil, nil, err
	}
	if folds < 2 {
		return all, all[:n], nil
	}
	if folds == 2 {
		h := (n - window) / 2
		if h < 2 {
			return nil, nil, fmt.Errorf("%d training windows are too few to cross-fit windows of %d rows", n, window)
		}
		a, b := wins.Slice(0, h), wins.Slice(h+window, n)
		sb, err := fitScore(a, b)
		if err != nil {
			return nil, nil, err
		}
		sa, err := fitScore(b, a)
		if err != nil {
			return nil, nil, err
		}
		return all, append(sa, sb...), nil
	}
	for k := range folds {
		s, e := k*n/folds, (k+1)*n/folds
		// A window w covers rows w..w+window−1: the fit keeps those that share no row with
		// the block's windows s..e−1 (rows s..e+window−2).
		left, right := max(0, s-window+1), min(n, e+window-1)
		if e-s < 2 || left+n-right < 2 {
			return nil, nil, fmt.Errorf("%d training windows are too few to cross-fit windows of %d rows in %d folds", n, window, folds)
		}
		fit := models.NewMatrix(left+n-right, wins.Cols)
		copy(fit.Data, wins.Slice(0, left).Data)
		copy(fit.Data[left*wins.Cols:], wins.Slice(right, n).Data)
		sb, err := fitScore(fit, wins.Slice(s, e))
		if err != nil {
			return nil, nil, err
		}
		thScores = append(thScores, sb...)
	}
	return all, thScores, nil
}

// predictRows turns window scores into one prediction per row: the window ending at the row is
// above level, or, with an alarm configured, the alarm fed with the scores so far is active.
func predictRows(scores []float64, rows int, cfg SKABConfig, level float64) ([]bool, error) {
	pred := make([]bool, rows)
	var alarm *threshold.Alarm
	if cfg.Alarm != nil {
		var err error
		if alarm, err = threshold.NewAlarm(*cfg.Alarm, level); err != nil {
			return nil, err
		}
	}
	for w, s := range scores {
		p := s > level
		if alarm != nil {
			alarm.Update(s)
			p = alarm.Active()
		}
		pred[w+cfg.Window-1] = p
	}
	return pred, nil
}
