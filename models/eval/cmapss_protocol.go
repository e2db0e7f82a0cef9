package eval

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/millwright-io/millwright/models/rul"
)

// CMAPSSResult is the outcome of the C-MAPSS protocol on one subset.
type CMAPSSResult struct {
	Subset      string
	Model       string
	Params      int // learned values of the regressor
	TrainUnits  int
	TestUnits   int
	RMSE        float64
	Score       float64 // PHM08
	TrainTime   time.Duration
	Predictions []float64
	Truth       []float64 // true RUL capped at rul's Cap
}

// ConditionsFor returns the number of operating conditions of a C-MAPSS subset: 6 for FD002 and
// FD004, 1 otherwise.
func ConditionsFor(subset string) int {
	switch strings.ToUpper(subset) {
	case "FD002", "FD004":
		return 6
	}
	return 1
}

// RunCMAPSS fits a regressor on the subset's training engines and predicts each test engine's
// RUL at its last cycle; RMSE and the PHM08 score compare them with the true RUL capped at
// RULCap, as the published protocol does.
func RunCMAPSS(ctx context.Context, d *CMAPSS, cfg rul.Config) (*CMAPSSResult, error) {
	if cfg.Conditions == 0 {
		cfg.Conditions = ConditionsFor(d.Subset)
	}
	if cfg.Cap == 0 {
		cfg.Cap = RULCap
	}
	r, err := rul.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("cmapss: %w", err)
	}
	start := time.Now()
	if err := r.Fit(ctx, d.Train); err != nil {
		return nil, fmt.Errorf("cmapss %s: fit: %w", d.Subset, err)
	}
	res := &CMAPSSResult{
		Subset: d.Subset, Model: r.Config().Model, Params: r.Params(),
		TrainUnits: len(d.Train), TestUnits: len(d.Test), TrainTime: time.Since(start),
	}
	for i, e := range d.Test {
		p, err := r.Predict(e)
		if err != nil {
			return nil, fmt.Errorf("cmapss %s: %w", d.Subset, err)
		}
		res.Predictions = append(res.Predictions, p)
		res.Truth = append(res.Truth, math.Min(d.RUL[i], RULCap))
	}
	if res.RMSE, err = RMSE(res.Truth, res.Predictions); err != nil {
		return nil, err
	}
	if res.Score, err = PHM08Score(res.Truth, res.Predictions); err != nil {
		return nil, err
	}
	return res, nil
}
