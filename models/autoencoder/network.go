package autoencoder

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/floats"

	"github.com/millwright-io/millwright/models"
)

// network is the layout and arithmetic of one autoencoder shape. Activation vectors are
// indexed by layer: 0 is the input, the last the (linear) output; hidden ones are
// activated.
type network interface {
	// widths returns the length of every activation vector.
	widths() []int
	// params returns the length of the parameter vector.
	params() int
	// forward computes acts[1:] from acts[0] with weights w.
	forward(w []float64, acts [][]float64)
	// backward adds to grad the gradient of the loss whose derivative with respect to the
	// output is deltas[last], using acts from forward; it overwrites the other deltas.
	backward(w []float64, acts, deltas [][]float64, grad []float64)
	// init draws starting weights into w: Glorot (tanh) or He (relu) uniform, zero hidden
	// biases, output biases that reconstruct x's mean.
	init(w []float64, rng *rand.Rand, x models.Matrix)
}

// activation applies the hidden activation in place and its derivative.
type activation string

func (a activation) apply(z []float64) {
	if a == ActReLU {
		for i, v := range z {
			if v < 0 {
				z[i] = 0
			}
		}
		return
	}
	for i, v := range z {
		z[i] = math.Tanh(v)
	}
}

// backprop multiplies delta by the derivative at the activations out.
func (a activation) backprop(delta, out []float64) {
	if a == ActReLU {
		for j, v := range out {
			if v <= 0 {
				delta[j] = 0
			}
		}
		return
	}
	for j, v := range out {
		delta[j] *= 1 - v*v
	}
}

// initLimit is the uniform initialisation bound of a layer with fanIn and fanOut, for a
// hidden layer (activated) or the linear output layer.
func (a activation) initLimit(fanIn, fanOut int, hidden bool) float64 {
	if a == ActReLU && hidden {
		return math.Sqrt(6 / float64(fanIn))
	}
	return math.Sqrt(6 / float64(fanIn+fanOut))
}

// dense is a fully connected network: sizes[l] → sizes[l+1]. Layer l's parameters are its
// weights row-major (out × in), then its biases (out).
type dense struct {
	sizes []int
	act   activation
}

func (n *dense) widths() []int { return n.sizes }

func (n *dense) params() int {
	p := 0
	for l := 0; l+1 < len(n.sizes); l++ {
		p += n.sizes[l+1]*n.sizes[l] + n.sizes[l+1]
	}
	return p
}

func (n *dense) forward(w []float64, acts [][]float64) {
	off := 0
	last := len(n.sizes) - 2
	for l := 0; l <= last; l++ {
		in, out := n.sizes[l], n.sizes[l+1]
		W, b := w[off:off+out*in], w[off+out*in:off+out*in+out]
		a, z := acts[l], acts[l+1]
		for r := range out {
			z[r] = floats.Dot(W[r*in:(r+1)*in], a) + b[r]
		}
		if l < last {
			n.act.apply(z)
		}
		off += out*in + out
	}
}

func (n *dense) backward(w []float64, acts, deltas [][]float64, grad []float64) {
	off := len(w)
	for l := len(n.sizes) - 2; l >= 0; l-- {
		in, out := n.sizes[l], n.sizes[l+1]
		off -= out*in + out
		W := w[off : off+out*in]
		gW, gb := grad[off:off+out*in], grad[off+out*in:off+out*in+out]
		delta, a := deltas[l+1], acts[l]
		floats.Add(gb, delta)
		for r, dr := range delta {
			if dr != 0 {
				floats.AddScaled(gW[r*in:(r+1)*in], dr, a)
			}
		}
		if l == 0 {
			return
		}
		prev := deltas[l]
		clear(prev)
		for r, dr := range delta {
			if dr != 0 {
				floats.AddScaled(prev, dr, W[r*in:(r+1)*in])
			}
		}
		n.act.backprop(prev, a)
	}
}

func (n *dense) init(w []float64, rng *rand.Rand, x models.Matrix) {
	off := 0
	for l := 0; l+1 < len(n.sizes); l++ {
		in, out := n.sizes[l], n.sizes[l+1]
		limit := n.act.initLimit(in, out, l+2 < len(n.sizes))
		for i := range out * in {
			w[off+i] = (2*rng.Float64() - 1) * limit
		}
		off += out*in + out
	}
	bias := w[len(w)-x.Cols:]
	for i := range x.Rows {
		floats.Add(bias, x.Row(i))
	}
	floats.Scale(1/float64(x.Rows), bias)
}
