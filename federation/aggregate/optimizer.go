package aggregate

import (
	"fmt"
	"math"
	"slices"
)

// optimizer is a server optimizer with state carried from round to round: it turns the
// round's combined update (step) into the new global model out.
type optimizer interface {
	apply(out, global, step []float32, lr float64)
	// undo takes back the state's last step, once; a no-op when there is none.
	undo()
	state() OptimizerState
	// restore replaces the state with s, checked; it keeps no reference to s.
	restore(s OptimizerState) error
}

// adaptive is the server optimizer of FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2):
// the round's mean update Δ is a pseudo-gradient (pointing downhill), m and v its first and
// second moments. Like the paper, it applies no bias correction and starts v at τ².
type adaptive struct {
	yogi bool
	cfg  AdamConfig
	m, v []float64
	prev moments // the state before the last step, for undo; its buffers are reused
}

// moments keeps a state before its step: m and v, and whether they are there to go back to.
type moments struct {
	m, v []float64
	ok   bool
}

func (o *adaptive) apply(out, global, step []float32, lr float64) {
	if len(o.m) != len(step) {
		o.m = make([]float64, len(step))
		o.v = make([]float64, len(step))
		for i := range o.v {
			o.v[i] = o.cfg.Tau * o.cfg.Tau
		}
	}
	// The step is written into the previous state's buffers and the state before it kept,
	// so that undo costs nothing and a step no copy.
	if len(o.prev.m) != len(step) {
		o.prev.m, o.prev.v = make([]float64, len(step)), make([]float64, len(step))
	}
	o.m, o.prev.m = o.prev.m, o.m
	o.v, o.prev.v = o.prev.v, o.v
	o.prev.ok = true
	forChunks(len(step), 1, func(lo, hi int) { o.applyRange(out, global, step, lr, lo, hi) })
}

// applyRange is apply on the coordinates [lo, hi): the new moments from o.prev's.
func (o *adaptive) applyRange(out, global, step []float32, lr float64, lo, hi int) {
	b1, b2, tau := o.cfg.Beta1, o.cfg.Beta2, o.cfg.Tau
	for i := lo; i < hi; i++ {
		d := float64(step[i])
		o.m[i] = b1*o.prev.m[i] + (1-b1)*d
		d2 := d * d
		if o.yogi {
			diff := o.prev.v[i] - d2
			sign := 0.0
			if diff > 0 {
				sign = 1
			} else if diff < 0 {
				sign = -1
			}
			o.v[i] = o.prev.v[i] - (1-b2)*d2*sign
		} else {
			o.v[i] = b2*o.prev.v[i] + (1-b2)*d2
		}
		out[i] = float32(float64(global[i]) + lr*o.m[i]/(math.Sqrt(o.v[i])+tau))
	}
}

func (o *adaptive) undo() {
	if o.prev.ok {
		o.m, o.prev.m = o.prev.m, o.m
		o.v, o.prev.v = o.prev.v, o.v
		o.prev.ok = false
	}
}

func (o *adaptive) state() OptimizerState {
	return OptimizerState{M: slices.Clone(o.m), V: slices.Clone(o.v)}
}

func (o *adaptive) restore(s OptimizerState) error {
	if len(s.M) != len(s.V) {
		return fmt.Errorf("aggregate: optimizer state has %d first and %d second moments; expected equal lengths", len(s.M), len(s.V))
	}
	if i := notFinite(s.M); i >= 0 {
		return fmt.Errorf("aggregate: optimizer state element %d (m=%v) is not finite", i, s.M[i])
	}
	for i, v := range s.V {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("aggregate: optimizer state element %d (v=%v) is not finite with v ≥ 0", i, v)
		}
	}
	o.m, o.v = slices.Clone(s.M), slices.Clone(s.V)
	o.prev.ok = false
	return nil
}

// momentum is server momentum (FedAvgM, Hsu et al. 2019): the velocity m accumulates the
// rounds' combined updates, m ← β·m + step, and the global model moves by lr·m.
type momentum struct {
	beta float64
	m    []float64
	prev moments // m before the last step, for undo (v unused)
}

func (o *momentum) apply(out, global, step []float32, lr float64) {
	if len(o.m) != len(step) {
		o.m = make([]float64, len(step))
	}
	if len(o.prev.m) != len(step) {
		o.prev.m = make([]float64, len(step))
	}
	o.m, o.prev.m = o.prev.m, o.m
	o.prev.ok = true
	forChunks(len(step), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o.m[i] = o.beta*o.prev.m[i] + float64(step[i])
			out[i] = float32(float64(global[i]) + lr*o.m[i])
		}
	})
}

func (o *momentum) undo() {
	if o.prev.ok {
		o.m, o.prev.m = o.prev.m, o.m
		o.prev.ok = false
	}
}

func (o *momentum) state() OptimizerState { return OptimizerState{M: slices.Clone(o.m)} }

func (o *momentum) restore(s OptimizerState) error {
	if s.V != nil {
		return fmt.Errorf("aggregate: optimizer state has %d second moments; server momentum keeps none", len(s.V))
	}
	if i := notFinite(s.M); i >= 0 {
		return fmt.Errorf("aggregate: optimizer state element %d (m=%v) is not finite", i, s.M[i])
	}
	o.m = slices.Clone(s.M)
	o.prev.ok = false
	return nil
}

// notFinite returns the index of the first NaN or infinity in v, or -1.
func notFinite(v []float64) int {
	return slices.IndexFunc(v, func(x float64) bool { return math.IsNaN(x) || math.IsInf(x, 0) })
}

// OptimizerState is the server optimizer's state between rounds (nil slices for rules
// without state), so that a restarted hub can continue a federation: FedAdam's and
// FedYogi's moments M and V, or server momentum's velocity M.
type OptimizerState struct {
	M, V []float64
}

// Undo takes back the server optimizer's step of the last Aggregate, for a round that
// its caller abandons after all (the hub's DP noise made the new model non-finite): the
// state is again what it was before that call. Only the last step can be taken back, once;
// after Restore, or for rules without server state, Undo does nothing.
func (a *Aggregator) Undo() {
	if a.opt != nil {
		a.opt.undo()
	}
}

// State returns a copy of the server optimizer's state.
func (a *Aggregator) State() OptimizerState {
	if a.opt == nil {
		return OptimizerState{}
	}
	return a.opt.state()
}

// Restore replaces the server optimizer's state with a copy of s (as returned by State).
func (a *Aggregator) Restore(s OptimizerState) error {
	if a.opt == nil {
		if s.M != nil || s.V != nil {
			return fmt.Errorf("aggregate: strategy %s has no optimizer state to restore", a.s.Name)
		}
		return nil
	}
	return a.opt.restore(s)
}
