package rul

import (
	"context"
	"math"
	"math/rand/v2"
)

// mlp is a fully connected network with ReLU hidden layers and one linear output, trained on
// squared error with mini-batch Adam.
type mlp struct {
	sizes []int       // layer widths, input first, 1 last
	w     [][]float64 // w[l] is sizes[l+1] × sizes[l], row-major
	b     [][]float64
}

func newMLP(in int, hidden []int, rng *rand.Rand) *mlp {
	m := &mlp{sizes: append(append([]int{in}, hidden...), 1)}
	for l := 0; l+1 < len(m.sizes); l++ {
		fanIn, fanOut := m.sizes[l], m.sizes[l+1]
		scale := math.Sqrt(2 / float64(fanIn)) // He initialisation for ReLU
		w := make([]float64, fanIn*fanOut)
		for i := range w {
			w[i] = rng.NormFloat64() * scale
		}
		m.w = append(m.w, w)
		m.b = append(m.b, make([]float64, fanOut))
	}
	return m
}

func (m *mlp) size() int {
	n := 0
	for l := range m.w {
		n += len(m.w[l]) + len(m.b[l])
	}
	return n
}

// forward computes every layer's activations into acts (acts[0] is the input).
func (m *mlp) forward(acts [][]float64) float64 {
	last := len(m.w) - 1
	for l := range m.w {
		in, out := acts[l], acts[l+1]
		nIn := len(in)
		for o := range out {
			s := m.b[l][o]
			row := m.w[l][o*nIn : (o+1)*nIn]
			for i, v := range in {
				s += row[i] * v
			}
			if l < last && s < 0 {
				s = 0
			}
			out[o] = s
		}
	}
	return acts[len(acts)-1][0]
}

func (m *mlp) newActs() [][]float64 {
	acts := make([][]float64, len(m.sizes))
	for l, s := range m.sizes {
		acts[l] = make([]float64, s)
	}
	return acts
}

func (m *mlp) predict(x []float64) float64 {
	acts := m.newActs()
	copy(acts[0], x)
	return m.forward(acts)
}

// clone returns a deep copy of m.
func (m *mlp) clone() *mlp {
	c := &mlp{sizes: m.sizes}
	for l := range m.w {
		c.w = append(c.w, append([]float64(nil), m.w[l]...))
		c.b = append(c.b, append([]float64(nil), m.b[l]...))
	}
	return c
}

// zeros returns a network of m's shape with every weight zero.
func (m *mlp) zeros() *mlp {
	z := &mlp{sizes: m.sizes}
	for l := range m.w {
		z.w = append(z.w, make([]float64, len(m.w[l])))
		z.b = append(z.b, make([]float64, len(m.b[l])))
	}
	return z
}

// moments is Adam's state for one network: the first and second moments, shaped like it,
// and how many steps each has averaged (for the bias correction).
type moments struct {
	m, v           *mlp
	stepsM, stepsV int
}

func newMoments(m *mlp) *moments { return &moments{m: m.zeros(), v: m.zeros()} }

func (o *moments) clone() *moments {
	return &moments{m: o.m.clone(), v: o.v.clone(), stepsM: o.stepsM, stepsV: o.stepsV}
}

// train runs cfg.Epochs of shuffled mini-batch Adam over rows x (standardized) and targets y,
// at most cfg.Steps mini-batches when that is set, under cfg.Schedule (step: the learning rate
// is quartered for the last third of the epochs). Adam continues from opt (fresh moments:
// newMoments), which it updates. With an anchor (the network training started from) and
// cfg.ProxMu > 0 it adds FedProx's proximal term μ/2·‖w − anchor‖²; with a drift (a network
// of the same shape) it adds drift to the weights, an equal share after every step.
func (m *mlp) train(ctx context.Context, x, y []float64, cfg Config, rng *rand.Rand, opt *moments, anchor, drift *mlp) error {
	width := m.sizes[0]
	n := len(y)
	acts := m.newActs()
	deltas := m.newActs()
	g := m.zeros()
	gw, gb := g.w, g.b
	mw, vw, mb, vb := opt.m.w, opt.v.w, opt.m.b, opt.v.b
	const beta1, beta2 = 0.9, 0.999
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	steps := cfg.Epochs * ((n + cfg.BatchSize - 1) / cfg.BatchSize)
	if cfg.Steps > 0 {
		steps = min(steps, cfg.Steps)
	}
	step := 0
	for epoch := 0; epoch < cfg.Epochs && step < steps; epoch++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		lr := cfg.LearningRate
		if cfg.Schedule == ScheduleStep && epoch >= 2*cfg.Epochs/3 {
			lr /= 4
		}
		rng.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
		for start := 0; start < n && step < steps; start += cfg.BatchSize {
			end := min(start+cfg.BatchSize, n)
			for l := range gw {
				clear(gw[l])
				clear(gb[l])
			}
			for _, idx := range order[start:end] {
				copy(acts[0], x[idx*width:(idx+1)*width])
				p := m.forward(acts)
				last := len(m.w)
				deltas[last][0] = p - y[idx]
				for l := last - 1; l >= 0; l-- {
					in, dOut := acts[l], deltas[l+1]
					nIn := len(in)
					dIn := deltas[l]
					clear(dIn)
					for o, d := range dOut {
						if d == 0 {
							continue
						}
						gb[l][o] += d
						row := m.w[l][o*nIn : (o+1)*nIn]
						grow := gw[l][o*nIn : (o+1)*nIn]
						for i, v := range in {
							grow[i] += d * v
							dIn[i] += d * row[i]
						}
					}
					if l > 0 {
						for i, v := range in {
							if v <= 0 {
								dIn[i] = 0
							}
						}
					}
				}
			}
			step++
			opt.stepsM++
			opt.stepsV++
			scale := 1 / float64(end-start)
			c1 := 1 - math.Pow(beta1, float64(opt.stepsM))
			c2 := 1 - math.Pow(beta2, float64(opt.stepsV))
			for l := range m.w {
				if anchor != nil && cfg.ProxMu > 0 {
					prox(gw[l], m.w[l], anchor.w[l], cfg.ProxMu/scale)
					prox(gb[l], m.b[l], anchor.b[l], cfg.ProxMu/scale)
				}
				adam(m.w[l], gw[l], mw[l], vw[l], scale, lr, cfg.Ridge, c1, c2)
				adam(m.b[l], gb[l], mb[l], vb[l], scale, lr, 0, c1, c2)
				if drift != nil {
					addScaled(m.w[l], drift.w[l], 1/float64(steps))
					addScaled(m.b[l], drift.b[l], 1/float64(steps))
				}
			}
		}
	}
	return nil
}

// addScaled adds k·d to p.
func addScaled(p, d []float64, k float64) {
	for i := range p {
		p[i] += k * d[i]
	}
}

// prox adds mu·(p − anchor) to the summed gradient g.
func prox(g, p, anchor []float64, mu float64) {
	for i := range g {
		g[i] += mu * (p[i] - anchor[i])
	}
}

// adam applies one bias-corrected Adam step with decoupled weight decay.
func adam(p, g, m, v []float64, scale, lr, decay, c1, c2 float64) {
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	for i := range p {
		gi := g[i] * scale
		m[i] = beta1*m[i] + (1-beta1)*gi
		v[i] = beta2*v[i] + (1-beta2)*gi*gi
		p[i] -= lr * ((m[i]/c1)/(math.Sqrt(v[i]/c2)+eps) + decay*p[i])
	}
}
