package autoencoder

import (
	"math/rand/v2"

	"gonum.org/v1/gonum/floats"

	"github.com/millwright-io/millwright/models"
)

// conv is a network of 1-D convolutions over the window's time axis with "same" zero
// padding and stride 1: layer l maps chans[l] channels to chans[l+1] at every one of steps
// time steps. Activations are time-major (t·channels + c), like a flattened window. Layer
// l's parameters are its weights W[o][k][i] row-major (out × kernel × in), then its biases
// (out).
type conv struct {
	steps  int
	kernel int
	chans  []int
	act    activation
	sizes  []int // steps × chans[l]
}

func newConv(steps, kernel int, chans []int, act activation) *conv {
	n := &conv{steps: steps, kernel: kernel, chans: chans, act: act}
	for _, c := range chans {
		n.sizes = append(n.sizes, steps*c)
	}
	return n
}

func (n *conv) widths() []int { return n.sizes }

func (n *conv) params() int {
	p := 0
	for l := 0; l+1 < len(n.chans); l++ {
		p += n.chans[l+1]*n.kernel*n.chans[l] + n.chans[l+1]
	}
	return p
}

// span returns the kernel taps [k0, k1) that fall inside the window at output step t.
func (n *conv) span(t int) (k0, k1 int) {
	pad := n.kernel / 2
	k0, k1 = max(0, pad-t), min(n.kernel, n.steps+pad-t)
	return k0, k1
}

func (n *conv) forward(w []float64, acts [][]float64) {
	off := 0
	pad := n.kernel / 2
	last := len(n.chans) - 2
	for l := 0; l <= last; l++ {
		ci, co := n.chans[l], n.chans[l+1]
		row := n.kernel * ci
		W, b := w[off:off+co*row], w[off+co*row:off+co*row+co]
		a, z := acts[l], acts[l+1]
		for t := range n.steps {
			k0, k1 := n.span(t)
			in := a[(t+k0-pad)*ci : (t+k1-pad)*ci]
			for o := range co {
				z[t*co+o] = floats.Dot(W[o*row+k0*ci:o*row+k1*ci], in) + b[o]
			}
		}
		if l < last {
			n.act.apply(z)
		}
		off += co*row + co
	}
}

func (n *conv) backward(w []float64, acts, deltas [][]float64, grad []float64) {
	off := len(w)
	pad := n.kernel / 2
	for l := len(n.chans) - 2; l >= 0; l-- {
		ci, co := n.chans[l], n.chans[l+1]
		row := n.kernel * ci
		off -= co*row + co
		W := w[off : off+co*row]
		gW, gb := grad[off:off+co*row], grad[off+co*row:off+co*row+co]
		delta, a := deltas[l+1], acts[l]
		var prev []float64
		if l > 0 {
			prev = deltas[l]
			clear(prev)
		}
		for t := range n.steps {
			k0, k1 := n.span(t)
			lo, hi := (t+k0-pad)*ci, (t+k1-pad)*ci
			for o := range co {
				d := delta[t*co+o]
				if d == 0 {
					continue
				}
				gb[o] += d
				floats.AddScaled(gW[o*row+k0*ci:o*row+k1*ci], d, a[lo:hi])
				if prev != nil {
					floats.AddScaled(prev[lo:hi], d, W[o*row+k0*ci:o*row+k1*ci])
				}
			}
		}
		if prev != nil {
			n.act.backprop(prev, a)
		}
	}
}

func (n *conv) init(w []float64, rng *rand.Rand, x models.Matrix) {
	off := 0
	for l := 0; l+1 < len(n.chans); l++ {
		ci, co := n.chans[l], n.chans[l+1]
		limit := n.act.initLimit(n.kernel*ci, n.kernel*co, l+2 < len(n.chans))
		for i := range co * n.kernel * ci {
			w[off+i] = (2*rng.Float64() - 1) * limit
		}
		off += co*n.kernel*ci + co
	}
	// The output bias of each channel (signal) is its mean over rows and time steps.
	s := n.chans[0]
	bias := w[len(w)-s:]
	for i := range x.Rows {
		for j, v := range x.Row(i) {
			bias[j%s] += v
		}
	}
	floats.Scale(1/float64(x.Rows*n.steps), bias)
}
