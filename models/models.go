// Package models defines the contract between feature extraction, anomaly detectors,
// thresholds, evaluation, training and federation.
//
// A detector learns what normal looks like from rows of features (one row per time step or
// per window) and scores new rows: the higher the score, the more anomalous the row. A
// detector whose learned state is one flat float32 vector of fixed layout is Parametric:
// that vector is what federation averages and what an artifact's identity covers.
package models

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Matrix is a dense row-major matrix of float64: row i is Data[i*Cols : (i+1)*Cols].
type Matrix struct {
	Rows, Cols int
	Data       []float64
}

// NewMatrix returns a zeroed rows × cols matrix.
func NewMatrix(rows, cols int) Matrix {
	return Matrix{Rows: rows, Cols: cols, Data: make([]float64, rows*cols)}
}

// Row returns row i, sharing the matrix's storage.
func (m Matrix) Row(i int) []float64 { return m.Data[i*m.Cols : (i+1)*m.Cols : (i+1)*m.Cols] }

// Slice returns rows [from, to), sharing the matrix's storage.
func (m Matrix) Slice(from, to int) Matrix {
	return Matrix{Rows: to - from, Cols: m.Cols, Data: m.Data[from*m.Cols : to*m.Cols : to*m.Cols]}
}

// Check reports whether the matrix is well formed and has at least minRows rows.
func (m Matrix) Check(minRows int) error {
	switch {
	case m.Rows < 0 || m.Cols <= 0 || len(m.Data) != m.Rows*m.Cols:
		return fmt.Errorf("matrix is %d×%d with %d values; expected rows×cols values and at least one column", m.Rows, m.Cols, len(m.Data))
	case m.Rows < minRows:
		return fmt.Errorf("matrix has %d rows; expected at least %d", m.Rows, minRows)
	}
	return nil
}

// Detector scores rows of features for anomaly.
//
// Fit and Score are not safe for concurrent use with each other; Score may be called from
// one goroutine at a time after Fit (or after loading learned state). Both are deterministic
// for a given configuration (including its seed) and input.
type Detector interface {
	// Kind names the detector family ("pca", "autoencoder", ...).
	Kind() string
	// Fit learns normal behaviour from train, whose rows are assumed (mostly) normal. It
	// returns ctx's error if ctx ends first, leaving the detector unchanged.
	Fit(ctx context.Context, train Matrix) error
	// Score writes one score per row of x into out (len(out) must be x.Rows). x must have
	// the column count Fit saw. Higher is more anomalous; scores are finite.
	Score(x Matrix, out []float64) error
}

// Contributor is a detector that can attribute one row's score to its input columns, for
// an alarm's "top contributing signals".
type Contributor interface {
	// Contributions writes each column's non-negative share of row's score into out
	// (len(out) == len(row)).
	Contributions(row []float64, out []float64) error
}

// Architecture describes the fixed layout of a Parametric detector's parameter vector. Two
// detectors with equal architectures can exchange and average parameters.
type Architecture struct {
	Kind       string `json:"kind"`       // detector family, e.g. "autoencoder"
	Version    int    `json:"version"`    // layout version of the parameter vector
	Inputs     int    `json:"inputs"`     // input width
	Layers     []int  `json:"layers"`     // hidden layer widths, encoder then decoder
	Activation string `json:"activation"` // hidden activation, e.g. "tanh"
	Params     int    `json:"params"`     // length of the parameter vector
	// Channels and Kernel describe a convolutional layout: the input is a window of
	// Inputs/Channels time steps of Channels signals (time-major), Layers are channel counts,
	// and every layer convolves over time with a kernel of Kernel steps. Both are 0 for a
	// dense layout.
	Channels int `json:"channels,omitempty"`
	Kernel   int `json:"kernel,omitempty"`
}

// Equal reports whether a and b describe the same parameter layout.
func (a Architecture) Equal(b Architecture) bool {
	if a.Kind != b.Kind || a.Version != b.Version || a.Inputs != b.Inputs || a.Activation != b.Activation || a.Params != b.Params ||
		a.Channels != b.Channels || a.Kernel != b.Kernel || len(a.Layers) != len(b.Layers) {
		return false
	}
	for i := range a.Layers {
		if a.Layers[i] != b.Layers[i] {
			return false
		}
	}
	return true
}

// Parametric is a detector whose whole learned state is one flat float32 vector.
type Parametric interface {
	Detector
	// Architecture describes the vector's layout.
	Architecture() Architecture
	// Params returns a copy of the parameter vector (len == Architecture().Params).
	Params() []float32
	// SetParams replaces the parameters; it refuses a vector of the wrong length or with a
	// non-finite value, leaving the detector unchanged.
	SetParams(p []float32) error
}

// Persistent is a detector whose configuration and learned state can be saved in an
// artifact and restored, so that a loaded detector scores exactly like the one that was
// saved.
type Persistent interface {
	Detector
	// MarshalState returns the configuration and learned state as JSON. It fails on a
	// detector that has not been fitted.
	MarshalState() ([]byte, error)
	// UnmarshalState restores what MarshalState returned. It decodes strictly (unknown
	// fields are errors), validates shapes and values, and leaves the detector unchanged on
	// error.
	UnmarshalState(data []byte) error
}

// ErrNotFitted is returned, wrapped, by Score, Contributions and MarshalState of a
// detector that has neither been fitted nor had its state restored.
var ErrNotFitted = errors.New("detector is not fitted")

// DecodeJSON decodes one JSON value from data into v strictly: unknown fields and trailing
// data are errors. Detectors' UnmarshalState and the artifact store share it.
func DecodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// CheckFinite returns an error naming what and the index of the first NaN or infinite value
// of v, or nil.
func CheckFinite(what string, v []float64) error {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%s[%d] is %v; expected a finite value", what, i, x)
		}
	}
	return nil
}

// Quantile returns the q-quantile of sorted values by linear interpolation (type 7).
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	if lo < 0 {
		return sorted[0]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// CheckScoreArgs checks the arguments of a Score call on a detector fitted on inputs
// columns: x well formed with that many columns, one output per row.
func CheckScoreArgs(x Matrix, inputs int, out []float64) error {
	switch {
	case x.Cols != inputs:
		return fmt.Errorf("rows have %d columns; the model takes %d", x.Cols, inputs)
	case x.Rows < 0 || len(x.Data) != x.Rows*x.Cols:
		return fmt.Errorf("matrix is %d×%d with %d values; expected rows×cols", x.Rows, x.Cols, len(x.Data))
	case len(out) != x.Rows:
		return fmt.Errorf("%d outputs for %d rows; expected one per row", len(out), x.Rows)
	}
	return nil
}

// CheckContributionArgs checks the arguments of a Contributions call on a detector fitted
// on inputs columns.
func CheckContributionArgs(row []float64, inputs int, out []float64) error {
	switch {
	case len(row) != inputs:
		return fmt.Errorf("row has %d columns; the model takes %d", len(row), inputs)
	case len(out) != len(row):
		return fmt.Errorf("%d outputs for %d columns; expected one per column", len(out), len(row))
	}
	return nil
}
