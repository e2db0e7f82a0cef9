package dp

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/millwright-io/millwright/gateway/config"
)

// The values of Config.Noise.
const (
	// NoiseCentral: clients clip, the hub adds N(0, (σC)²) to the sum. The hub sees
	// un-noised (clipped) updates or sums; the published model is protected.
	NoiseCentral = "central"
	// NoiseDistributed: each client of a round adds N(0, (σC)²/k) before secure
	// aggregation, k the fewest clients whose sum the hub may release, so that the sum it
	// unmasks carries at least N(0, (σC)²) however many of the others drop out, unless
	// clients collude (or skip their noise).
	NoiseDistributed = "distributed"
)

// Config configures client-level differential privacy for one federation. Decode it with
// config.Decode after SetDefaults, then call Validate.
type Config struct {
	// Enabled turns DP on. Default false.
	Enabled bool `yaml:"enabled"`
	// ClipNorm is C, the L2 bound on every client's update. Default 1.
	ClipNorm float64 `yaml:"clip_norm"`
	// NoiseMultiplier is σ: the noise on the sum has standard deviation σ·C. Default 1.
	NoiseMultiplier float64 `yaml:"noise_multiplier"`
	// Noise says who adds the noise: "central" (default) or "distributed".
	Noise string `yaml:"noise"`
	// SamplingRate must be 1 (the default): every round is charged as the Gaussian
	// mechanism, without amplification by subsampling, because the hub publishes who took
	// part in each round (the round state's targets, the model header's participants, the
	// ledger). It is kept so that a configuration that sets it to anything else is told why.
	SamplingRate float64 `yaml:"sampling_rate"`
	// Delta is δ of the guarantee; it should be well below 1/(number of clients).
	// Default 1e-5.
	Delta float64 `yaml:"delta"`
	// EpsilonLimit is the budget: a round that would take the cumulative ε at Delta past it
	// is refused. Required when Enabled.
	EpsilonLimit float64 `yaml:"epsilon_limit"`
	// MetricBound is the range [0, MetricBound] each metric a gateway reports is clipped
	// into before the hub releases their noised mean (Noise.Mean: the final evaluation).
	// Default 1, the range of rates such as false_alarm_rate.
	MetricBound float64 `yaml:"metric_bound"`
}

// SetDefaults fills in every field left at its zero value.
func (c *Config) SetDefaults() {
	if c.ClipNorm == 0 {
		c.ClipNorm = 1
	}
	if c.NoiseMultiplier == 0 {
		c.NoiseMultiplier = 1
	}
	if c.Noise == "" {
		c.Noise = NoiseCentral
	}
	if c.SamplingRate == 0 {
		c.SamplingRate = 1
	}
	if c.Delta == 0 {
		c.Delta = 1e-5
	}
	if c.MetricBound == 0 {
		c.MetricBound = 1
	}
}

// Validate reports every problem of the configuration at once, with paths relative to it.
func (c Config) Validate() error {
	var p config.Problems
	finitePos := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	if !finitePos(c.ClipNorm) {
		p.Addf("clip_norm", "%v must be a positive finite number", c.ClipNorm)
	}
	if !finitePos(c.NoiseMultiplier) {
		p.Addf("noise_multiplier", "%v must be a positive finite number", c.NoiseMultiplier)
	}
	if c.Noise != NoiseCentral && c.Noise != NoiseDistributed {
		p.Addf("noise", "%q is not a mode; expected %q or %q", c.Noise, NoiseCentral, NoiseDistributed)
	}
	if c.SamplingRate != 1 {
		p.Addf("sampling_rate", "%v is not supported: the hub publishes who took part in each round (round state targets, model participants, ledger), so sampling cannot amplify privacy; expected 1, or leave it unset", c.SamplingRate)
	}
	if !(c.Delta > 0 && c.Delta < 1) {
		p.Addf("delta", "%v is out of range; expected (0, 1)", c.Delta)
	}
	if !finitePos(c.MetricBound) {
		p.Addf("metric_bound", "%v must be a positive finite number", c.MetricBound)
	}
	if c.Enabled && !finitePos(c.EpsilonLimit) {
		p.Addf("epsilon_limit", "%v must be a positive finite number when DP is enabled", c.EpsilonLimit)
	}
	return p.Err()
}

// ErrBudgetExceeded is returned (wrapped) by Budget.Spend when a round would take the
// cumulative ε past the limit.
var ErrBudgetExceeded = errors.New("privacy budget exceeded")

// Report is the privacy of one round and of the federation so far, at Delta.
type Report struct {
	Round        int     // rounds composed, this one included
	RoundEpsilon float64 // ε of this round alone
	Epsilon      float64 // cumulative ε over every round so far
	Delta        float64
	Order        int     // the Rényi order α that gives Epsilon
	Limit        float64 // the budget's ε limit
}

func (r Report) String() string {
	return fmt.Sprintf("round %d: ε=%.4g (this round %.4g) at δ=%g, limit %.4g", r.Round, r.Epsilon, r.RoundEpsilon, r.Delta, r.Limit)
}

// Budget enforces an ε limit over a federation's rounds. It is not safe for concurrent
// use.
type Budget struct {
	cfg  Config
	acct *Accountant
}

// NewBudget returns the budget of cfg (which must be valid and enabled) that has already
// spent steps (as returned by Steps, persisted by the hub). A step persisted with a
// sampling rate below 1 is charged at 1: its round's participants were published too.
func NewBudget(cfg Config, steps ...Step) (*Budget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dp: config: %w", err)
	}
	if !cfg.Enabled {
		return nil, errors.New("dp: config: enabled is false; a budget needs DP enabled")
	}
	steps = slices.Clone(steps)
	for i := range steps {
		steps[i].Q = 1
	}
	a, err := NewAccountant(steps...)
	if err != nil {
		return nil, err
	}
	return &Budget{cfg: cfg, acct: a}, nil
}

// Spend accounts one round at the configured σ, as the Gaussian mechanism (q = 1). If the
// cumulative ε after it would exceed the limit, it returns an error wrapping
// ErrBudgetExceeded that names the ε the round would reach, δ and the limit, and spends
// nothing: the round must not run (or its result must not be released).
func (b *Budget) Spend() (Report, error) { return b.SpendAt(b.cfg.NoiseMultiplier) }

// SpendAt is Spend for a round whose sum carried noise of multiplier sigma rather than the
// configured σ: with distributed noise, the shares of more clients than the fewest they
// were sized for (SharedMultiplier). A round with more noise costs less; one with less
// (never, when the shares were sized right) costs more, and Preview's answer does not
// bound it. A sigma that is not positive and finite is refused, naming it.
func (b *Budget) SpendAt(sigma float64) (Report, error) {
	step := Step{Q: 1, Sigma: sigma, Count: 1}
	r, err := b.preview(step)
	if err != nil {
		return r, err
	}
	if err := b.acct.Compose(step); err != nil {
		return r, err
	}
	return r, nil
}

// Preview reports the privacy the next round would reach at the configured σ, and the
// same error Spend would return, without spending anything.
func (b *Budget) Preview() (Report, error) {
	return b.preview(Step{Q: 1, Sigma: b.cfg.NoiseMultiplier, Count: 1})
}

func (b *Budget) preview(step Step) (Report, error) {
	if err := step.check(); err != nil {
		return Report{}, err
	}
	eps, order := epsilon(addRDP(b.acct.rdp, step), b.cfg.Delta)
	one, _ := epsilon(addRDP(make([]float64, len(Orders)), step), b.cfg.Delta)
	r := Report{Round: b.acct.Rounds() + 1, RoundEpsilon: one, Epsilon: eps, Delta: b.cfg.Delta, Order: order, Limit: b.cfg.EpsilonLimit}
	if eps > b.cfg.EpsilonLimit {
		return r, fmt.Errorf("dp: round %d would bring ε to %.4g at δ=%g, past the limit ε=%.4g (spent so far ε=%.4g over %d rounds): %w",
			r.Round, eps, b.cfg.Delta, b.cfg.EpsilonLimit, b.Spent().Epsilon, b.acct.Rounds(), ErrBudgetExceeded)
	}
	return r, nil
}

// Spent reports the privacy spent so far (Round is the number of rounds, RoundEpsilon 0).
func (b *Budget) Spent() Report {
	eps, order := b.acct.Epsilon(b.cfg.Delta)
	return Report{Round: b.acct.Rounds(), Epsilon: eps, Delta: b.cfg.Delta, Order: order, Limit: b.cfg.EpsilonLimit}
}

// Steps returns the rounds spent, for persistence.
func (b *Budget) Steps() []Step { return b.acct.Steps() }

// NoiseStd returns the standard deviation of the noise one party adds: σ·C for central
// noise; with distributed noise, σ·C/√n for each client, n the fewest clients whose sum may
// be released (the sum of more carries more noise: SharedMultiplier).
func (c Config) NoiseStd(n int) float64 {
	s := c.NoiseMultiplier * c.ClipNorm
	if c.Noise == NoiseDistributed {
		s /= math.Sqrt(float64(max(n, 1)))
	}
	return s
}

// SharedMultiplier returns the noise multiplier of a sum that carries the noise shares of
// parties clients, each of standard deviation share, when one client's contribution to
// the sum has L2 sensitivity: share·√parties/sensitivity (C for updates,
// MetricSensitivity for metrics). It is what Budget.SpendAt is told for a round with
// distributed noise.
func SharedMultiplier(share float64, parties int, sensitivity float64) float64 {
	return share * math.Sqrt(float64(parties)) / sensitivity
}
