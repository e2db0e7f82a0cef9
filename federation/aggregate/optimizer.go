package aggregate

import (
	"fmt"
	"math"
	"slices"
)

// adaptive is the server optimizer of FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2):
// the round's mean update Δ is a pseudo-gradient (pointing downhill), m and v its first and
// second moments. Like the paper, it applies no bias correction and starts v at τ².
type adaptive struct {
	yogi bool
	cfg  AdamConfig
	m, v []float64
}

func (o *adaptive) apply(out, global, step []float32, lr float64) {
	if len(o.m) != len(step) {
		o.m = make([]float64, len(step))
		o.v = make([]float64, len(step))
		for i := range o.v {
			o.v[i] = o.cfg.Tau * o.cfg.Tau
		}
	}
	b1, b2, tau := o.cfg.Beta1, o.cfg.Beta2, o.cfg.Tau
	for i, s := range step {
		d := float64(s)
		o.m[i] = b1*o.m[i] + (1-b1)*d
		d2 := d * d
		if o.yogi {
			diff := o.v[i] - d2
			sign := 0.0
			if diff > 0 {
				sign = 1
			} else if diff < 0 {
				sign = -1
			}
			o.v[i] -= (1 - b2) * d2 * sign
		} else {
			o.v[i] = b2*o.v[i] + (1-b2)*d2
		}
		out[i] = float32(float64(global[i]) + lr*o.m[i]/(math.Sqrt(o.v[i])+tau))
	}
}

// OptimizerState is the server optimizer's state between rounds (nil slices for rules
// without state), so that a restarted hub can continue a federation.
type OptimizerState struct {
	M, V []float64
}

// State returns a copy of the server optimizer's state.
func (a *Aggregator) State() OptimizerState {
	if a.opt == nil {
		return OptimizerState{}
	}
	return OptimizerState{M: slices.Clone(a.opt.m), V: slices.Clone(a.opt.v)}
}

// Restore replaces the server optimizer's state with a copy of s (as returned by State).
func (a *Aggregator) Restore(s OptimizerState) error {
	if a.opt == nil {
		if s.M != nil || s.V != nil {
			return fmt.Errorf("aggregate: strategy %s has no optimizer state to restore", a.s.Name)
		}
		return nil
	}
	if len(s.M) != len(s.V) {
		return fmt.Errorf("aggregate: optimizer state has %d first and %d second moments; expected equal lengths", len(s.M), len(s.V))
	}
	for i, v := range s.V {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || math.IsNaN(s.M[i]) || math.IsInf(s.M[i], 0) {
			return fmt.Errorf("aggregate: optimizer state element %d (m=%v, v=%v) is not finite with v ≥ 0", i, s.M[i], v)
		}
	}
	a.opt.m, a.opt.v = slices.Clone(s.M), slices.Clone(s.V)
	return nil
}
