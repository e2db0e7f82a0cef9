package features

import (
	"fmt"

	"github.com/millwright-io/millwright/models"
)

// Windower cuts a stream of grid rows into sliding windows: a window is WindowSize
// consecutive complete rows, flattened time-major (column t·signals + s is signal s at the
// window's row t), starting at every grid row index that is a multiple of WindowStride. An
// incomplete row ends every window that contains it. Its memory is one window. It is not
// safe for concurrent use.
type Windower struct {
	signals, size, stride int
	ring                  []float64 // size rows, row k at (k % size)
	k                     int64     // index of the next row
	run                   int       // complete rows in a row up to the last pushed
	win                   []float64
}

// NewWindower returns a windower for rows of signals values.
func NewWindower(signals, size, stride int) (*Windower, error) {
	if signals < 1 || size < 1 || stride < 1 {
		return nil, fmt.Errorf("features: windower of %d signals, size %d, stride %d; expected each at least 1", signals, size, stride)
	}
	return &Windower{signals: signals, size: size, stride: stride, ring: make([]float64, signals*size), win: make([]float64, signals*size)}, nil
}

// Width returns the number of values in a window.
func (w *Windower) Width() int { return w.signals * w.size }

// Push adds the next grid row. When it completes a window, Push returns the window (valid
// until the next Push) and true; the window started size-1 rows before this one.
func (w *Windower) Push(row []float64, complete bool) ([]float64, bool) {
	if len(row) != w.signals {
		panic(fmt.Sprintf("features: windower: row of %d values, expected %d", len(row), w.signals))
	}
	k := w.k
	w.k++
	if !complete {
		w.run = 0
		return nil, false
	}
	slot := int(k % int64(w.size))
	copy(w.ring[slot*w.signals:(slot+1)*w.signals], row)
	w.run = min(w.run+1, w.size)
	start := k - int64(w.size) + 1
	if w.run < w.size || start%int64(w.stride) != 0 {
		return nil, false
	}
	for t := range w.size {
		s := int((start + int64(t)) % int64(w.size))
		copy(w.win[t*w.signals:(t+1)*w.signals], w.ring[s*w.signals:(s+1)*w.signals])
	}
	return w.win, true
}

// Windows cuts the rows of values (with their completeness) into windows, returning them as
// the rows of a matrix and, per window, the index of its first row.
func Windows(values models.Matrix, complete []bool, size, stride int) (models.Matrix, []int, error) {
	if len(complete) != values.Rows {
		return models.Matrix{}, nil, fmt.Errorf("features: windows: %d completeness flags for %d rows", len(complete), values.Rows)
	}
	w, err := NewWindower(values.Cols, size, stride)
	if err != nil {
		return models.Matrix{}, nil, err
	}
	most := 0 // windows if every row is complete
	if values.Rows >= size {
		most = (values.Rows-size)/stride + 1
	}
	out := models.Matrix{Cols: w.Width(), Data: make([]float64, 0, most*w.Width())}
	starts := make([]int, 0, most)
	for i := range values.Rows {
		if win, ok := w.Push(values.Row(i), complete[i]); ok {
			out.Data = append(out.Data, win...)
			out.Rows++
			starts = append(starts, i-size+1)
		}
	}
	return out, starts, nil
}

// SignalShares folds per-column values of a window (such as a detector's Contributions)
// into one value per signal, summing over the window's rows: out[s] = Σ_t cols[t·signals+s].
func SignalShares(cols []float64, out []float64) {
	clear(out)
	n := len(out)
	for j, v := range cols {
		out[j%n] += v
	}
}
