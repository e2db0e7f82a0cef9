package features

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/millwright-io/millwright/models"
)

// iqrToSigma turns an interquartile range into a standard deviation for normal data.
const iqrToSigma = 1.349

// Scaler standardises each signal robustly: (x − median) / scale, where scale is the
// interquartile range over 1.349 (the standard deviation for normal data). A signal whose
// IQR is zero falls back to its standard deviation; a constant signal has scale 1 and is
// marked Constant, so that any change of it shows in raw units rather than dividing by zero.
// Its fields are what an artifact saves.
type Scaler struct {
	Signals  []string  `json:"signals"`
	Median   []float64 `json:"median"`
	Scale    []float64 `json:"scale"`
	Constant []bool    `json:"constant"`
}

// FitScaler computes the statistics of each column of values over its non-NaN entries.
func FitScaler(signals []string, values models.Matrix) (*Scaler, error) {
	if len(signals) != values.Cols {
		return nil, fmt.Errorf("features: scaler: %d signal names for %d columns", len(signals), values.Cols)
	}
	s := &Scaler{Signals: slices.Clone(signals), Median: make([]float64, values.Cols), Scale: make([]float64, values.Cols), Constant: make([]bool, values.Cols)}
	col := make([]float64, 0, values.Rows)
	for j := range values.Cols {
		col = col[:0]
		for i := range values.Rows {
			if v := values.Data[i*values.Cols+j]; !math.IsNaN(v) && !math.IsInf(v, 0) {
				col = append(col, v)
			}
		}
		if len(col) == 0 {
			return nil, fmt.Errorf("features: scaler: signal %q has no values", signals[j])
		}
		sort.Float64s(col)
		med := models.Quantile(col, 0.5)
		scale := (models.Quantile(col, 0.75) - models.Quantile(col, 0.25)) / iqrToSigma
		// Below this the spread is rounding noise of the values' magnitude.
		tiny := 1e-9 * max(1, math.Abs(med))
		if scale <= tiny {
			var mean, ss float64
			for _, v := range col {
				mean += v
			}
			mean /= float64(len(col))
			for _, v := range col {
				ss += (v - mean) * (v - mean)
			}
			scale = math.Sqrt(ss / float64(len(col)))
		}
		if scale <= tiny {
			scale = 1
			s.Constant[j] = true
		}
		s.Median[j], s.Scale[j] = med, scale
	}
	return s, nil
}

// Transform scales row (one value per signal) in place; NaN stays NaN.
func (s *Scaler) Transform(row []float64) {
	for j, v := range row {
		row[j] = (v - s.Median[j]) / s.Scale[j]
	}
}

// TransformMatrix scales every row of m in place.
func (s *Scaler) TransformMatrix(m models.Matrix) {
	for i := range m.Rows {
		s.Transform(m.Row(i))
	}
}

// Validate checks the shapes and values of a loaded scaler.
func (s *Scaler) Validate() error {
	n := len(s.Signals)
	switch {
	case n == 0:
		return fmt.Errorf("scaler has no signals")
	case len(s.Median) != n || len(s.Scale) != n || len(s.Constant) != n:
		return fmt.Errorf("scaler has %d signals, %d medians, %d scales and %d constant flags; expected equal counts", n, len(s.Median), len(s.Scale), len(s.Constant))
	}
	if err := models.CheckFinite("median", s.Median); err != nil {
		return err
	}
	for i, v := range s.Scale {
		if !(v > 0) || math.IsInf(v, 0) {
			return fmt.Errorf("scale[%d] (%s) is %v; expected a positive finite number", i, s.Signals[i], v)
		}
	}
	return nil
}
