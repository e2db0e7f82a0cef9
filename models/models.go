// Package models defines the contract between feature extraction, anomaly detectors,
// thresholds, evaluation, training and federation.
//
// A detector learns what normal looks like from rows of features (one row per time step or
// per window) and scores new rows: the higher the score, the more anomalous the row. A
// detector whose learned state is one flat float32 vector of fixed layout is Parametric:
// that vector is what federation averages and what an artifact's identity covers.
package models

import (
	"context"
	"fmt"
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
}

// Equal reports whether a and b describe the same parameter layout.
func (a Architecture) Equal(b Architecture) bool {
	if a.Kind != b.Kind || a.Version != b.Version || a.Inputs != b.Inputs || a.Activation != b.Activation || a.Params != b.Params || len(a.Layers) != len(b.Layers) {
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
