package dp

import (
	"fmt"
	"math"
	"slices"
)

// Orders are the Rényi orders α the accountant tracks. Only integer orders are used, for
// which the RDP of the sampled Gaussian mechanism has an exact closed form.
var Orders = func() []int {
	var o []int
	for a := 2; a <= 64; a++ {
		o = append(o, a)
	}
	return append(o, 72, 80, 96, 128, 160, 192, 256, 384, 512)
}()

// Step is a run of identical rounds of the sampled Gaussian mechanism: each participant
// is included with probability Q (Poisson sampling; 1 when every participant takes part),
// its update clipped to C and the sum noised with standard deviation Sigma·C.
type Step struct {
	Q     float64 `json:"q"`
	Sigma float64 `json:"sigma"`
	Count int     `json:"count"`
}

func (s Step) check() error {
	switch {
	case !(s.Q > 0 && s.Q <= 1):
		return fmt.Errorf("dp: sampling rate q=%v is out of range; expected (0, 1]", s.Q)
	case !(s.Sigma > 0) || math.IsInf(s.Sigma, 0):
		return fmt.Errorf("dp: noise multiplier σ=%v must be a positive finite number", s.Sigma)
	case s.Count < 0:
		return fmt.Errorf("dp: step count %d must be ≥ 0", s.Count)
	}
	return nil
}

// SampledGaussianRDP returns the Rényi DP ε(α) of one round of the sampled Gaussian
// mechanism with sampling rate q and noise multiplier sigma, at integer order α ≥ 2
// (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
// Mechanism", Section 3.3):
//
//	ε(α) = 1/(α−1) · log Σ_{k=0..α} C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2σ²)),
//
// evaluated in log space. For q = 1 it is the Gaussian mechanism's α/(2σ²).
func SampledGaussianRDP(q, sigma float64, alpha int) float64 {
	if q == 0 {
		return 0
	}
	if q == 1 {
		return float64(alpha) / (2 * sigma * sigma)
	}
	a := float64(alpha)
	lq, l1q := math.Log(q), math.Log1p(-q)
	lg := func(x float64) float64 { v, _ := math.Lgamma(x); return v }
	terms := make([]float64, alpha+1)
	for k := 0; k <= alpha; k++ {
		fk := float64(k)
		terms[k] = lg(a+1) - lg(fk+1) - lg(a-fk+1) + (a-fk)*l1q + fk*lq + (fk*fk-fk)/(2*sigma*sigma)
	}
	return logSumExp(terms) / (a - 1)
}

func logSumExp(x []float64) float64 {
	m := slices.Max(x)
	if math.IsInf(m, -1) {
		return m
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

// Accountant composes rounds of the sampled Gaussian mechanism in RDP and converts the
// total to (ε, δ). It is not safe for concurrent use.
type Accountant struct {
	steps []Step
	rdp   []float64 // per order in Orders
}

// NewAccountant returns an accountant that has already spent steps (a restarted hub
// passes the steps it persisted, as returned by Steps).
func NewAccountant(steps ...Step) (*Accountant, error) {
	a := &Accountant{rdp: make([]float64, len(Orders))}
	for _, s := range steps {
		if err := a.Compose(s); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Compose adds s to the privacy spent.
func (a *Accountant) Compose(s Step) error {
	if err := s.check(); err != nil {
		return err
	}
	a.rdp = addRDP(a.rdp, s)
	a.steps = append(a.steps, s)
	return nil
}

func addRDP(rdp []float64, s Step) []float64 {
	out := slices.Clone(rdp)
	for i, o := range Orders {
		out[i] += float64(s.Count) * SampledGaussianRDP(s.Q, s.Sigma, o)
	}
	return out
}

// Steps returns a copy of every step composed so far, for persistence.
func (a *Accountant) Steps() []Step { return slices.Clone(a.steps) }

// Rounds is the number of rounds composed so far.
func (a *Accountant) Rounds() int {
	n := 0
	for _, s := range a.steps {
		n += s.Count
	}
	return n
}

// Epsilon returns the ε spent so far at delta and the order α that gives it.
func (a *Accountant) Epsilon(delta float64) (eps float64, order int) {
	return epsilon(a.rdp, delta)
}

// epsilon converts RDP to (ε, δ)-DP with the conversion of Balle et al. 2020 ("Hypothesis
// testing interpretations and Rényi differential privacy", Theorem 21), which is tighter
// than the classic ε = ε(α) + log(1/δ)/(α−1):
//
//	ε = ε(α) + log((α−1)/α) − (log δ + log α)/(α−1), minimised over α.
func epsilon(rdp []float64, delta float64) (float64, int) {
	best, order := math.Inf(1), 0
	for i, o := range Orders {
		a := float64(o)
		e := rdp[i] + math.Log((a-1)/a) - (math.Log(delta)+math.Log(a))/(a-1)
		if e < best {
			best, order = e, o
		}
	}
	return max(best, 0), order
}

// epsilonClassic is the conversion of Mironov 2017, Proposition 3, used by the published
// TF-Privacy tables; the tests compare against them with it.
func epsilonClassic(rdp []float64, delta float64) (float64, int) {
	best, order := math.Inf(1), 0
	for i, o := range Orders {
		if e := rdp[i] + math.Log(1/delta)/float64(o-1); e < best {
			best, order = e, o
		}
	}
	return best, order
}
